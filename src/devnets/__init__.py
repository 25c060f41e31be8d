"""devnets: BDNN-dsd and BSP on small MLPs, as a Hydra + PyTorch Lightning pipeline."""

__version__ = "0.1.0"
