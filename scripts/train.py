"""Train one run, or a sweep with -m: python scripts/train.py [-m] [overrides]. See README.md."""

from devnets.overrides import main

if __name__ == "__main__":
    main()
