"""Aggregate sweeps into the papers' tables: ``python scripts/aggregate.py SWEEP_DIR... [--out DIR]``."""

import sys

from devnets.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
