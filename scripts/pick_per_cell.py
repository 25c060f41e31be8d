"""Pick per-cell coefficients from a tuning sweep: python scripts/pick_per_cell.py outputs/tune_l2."""

from devnets.tuning import main

if __name__ == "__main__":
    main()
