"""What each dataset is (its size, image shape, classes and folder), without torch: the config's resolvers
and the checks of a run's settings read it before torch is imported. :mod:`devnets.data` loads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    torchvision_name: str  # its class in torchvision.datasets
    train_size: int
    shape: tuple[int, int, int]  # (channels, height, width)
    num_classes: int
    folder: str  # the folder torchvision expects under the root
    debian_folder: str | None = None  # a Debian package's flat folder of gz IDX files

    @property
    def input_dim(self) -> int:
        """The length of a flattened image."""
        channels, height, width = self.shape
        return channels * height * width


DATASETS = {
    "mnist": DatasetInfo("MNIST", 60_000, (1, 28, 28), 10, "MNIST"),
    "fashion_mnist": DatasetInfo("FashionMNIST", 60_000, (1, 28, 28), 10, "FashionMNIST",
                                 debian_folder="fashion-mnist"),
    "cifar10": DatasetInfo("CIFAR10", 50_000, (3, 32, 32), 10, "cifar-10-batches-py"),
}
