"""devnets: BDNN-dsd and BSP on small MLPs, as a Hydra + PyTorch Lightning pipeline."""

from pathlib import Path

__version__ = "0.1.0"

# The repository: conf/ holds the Hydra config, data/ a local copy of the datasets.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
