"""Time the pipeline against a plain PyTorch loop: python scripts/benchmark.py [--quick] [--json PATH]."""

from devnets.benchmark import main

if __name__ == "__main__":
    main()
