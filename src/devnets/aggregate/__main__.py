"""``python -m devnets.aggregate``: devnets-aggregate."""

import sys

from devnets.aggregate.cli import main

sys.exit(main())
