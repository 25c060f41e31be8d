"""Shared fixtures: tiny datasets in torchvision's real on-disk formats, and the real config, shrunk.

The files are written the way the originals are (IDX for MNIST and Fashion-MNIST, pickled batches
for CIFAR-10), so every test runs the same torchvision loading code a real run does. Each class gets
a bright block at its own position over noise, so a few epochs learn it well above chance.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback
from omegaconf import DictConfig, open_dict
from torchvision import datasets

import devnets.train
from devnets.train import CONF_DIR, train

N_TRAIN, N_TEST = 300, 100

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch.cuda.is_available() is False")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, NO_CUDA])])
def device(request) -> torch.device:
    """Each device a test runs on: the CPU, and a CUDA GPU where there is one (those cases are marked
    ``cuda``: ``pytest -m cuda`` runs them, as scripts/gpu_check.sh does). The methods have CPU-only fast
    paths (``device.type == "cpu"``): on the GPU the other branches run. Lightning takes ``device.type``
    as its accelerator."""
    return torch.device(request.param)


def synthetic_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, *shape), dtype=np.uint8)
    for index, label in enumerate(labels):
        row = 2 + 2 * label
        images[index, row : row + 3, 4:20, ...] = 250
    return images, labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    magic = 0x0800 + array.ndim  # unsigned byte data, then the number of dimensions
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def write_mnist_like(raw: Path, seed: int, compress: bool = False) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, offset in (("train", N_TRAIN, 0), ("t10k", N_TEST, 1)):
        images, labels = synthetic_images(n, (28, 28), seed + offset)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress)


def write_cifar10(folder: Path, seed: int) -> dict[str, str]:
    """CIFAR-10's python pickles; returns each file's md5 for torchvision's integrity check."""
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = N_TRAIN // 5
    batches = {f"data_batch_{k}": (per_batch, seed + k) for k in range(1, 6)} | {"test_batch": (N_TEST, seed)}
    for name, (n, batch_seed) in batches.items():
        images, labels = synthetic_images(n, (32, 32, 3), batch_seed)
        data = images.transpose(0, 3, 1, 2).reshape(n, -1)  # CIFAR stores rows channel-major
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels.tolist()}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, handle)
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in folder.iterdir()}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    write_mnist_like(root / "MNIST" / "raw", seed=0)
    write_mnist_like(root / "FashionMNIST" / "raw", seed=100)
    cifar_md5 = write_cifar10(root / datasets.CIFAR10.base_folder, seed=200)
    root.joinpath("cifar_md5.json").write_text(json.dumps(cifar_md5))
    return root


@pytest.fixture(autouse=True)
def _cifar_md5(data_root, monkeypatch):
    """torchvision checks CIFAR-10's files against the real md5 sums: swap in the fixture's."""
    md5 = json.loads(data_root.joinpath("cifar_md5.json").read_text())
    cls = datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[name, md5[name]] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5[name]] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEVNETS_DATA", raising=False)


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture
def make_config(data_root, tmp_path):
    """The real config, shrunk to the fixture data: 200 samples, batch 50, 2 epochs, no progress bar or tree."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        cfg = compose_config(
            f"data.root={data_root}",
            "data.n_train=200",
            "data.batch_size=50",
            "model.hidden=16",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu",
            "print_config=false",
            *overrides,
        )
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir or tmp_path / "run")
        return cfg

    return make


@pytest.fixture
def run(make_config):
    """Train the shrunk config with ``overrides``; returns metrics.json's content."""

    def run_training(*overrides: str, run_dir: Path | None = None) -> dict:
        return train(make_config(*overrides, run_dir=run_dir))

    return run_training


class Crash(Exception):
    pass


class StopAtEpoch(Callback):
    """Raises ``error`` when epoch ``epoch`` (0-based) is about to start, as a kill would."""

    def __init__(self, epoch: int, error: type[BaseException]):
        self.epoch, self.error = epoch, error

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise self.error()


@pytest.fixture
def stop_at(monkeypatch):
    """Make the next runs stop when ``epoch`` starts; returns a function that lifts it."""
    build = devnets.train.make_trainer

    def arm(epoch: int, error: type[BaseException] = Crash):
        def make_trainer(cfg, run_dir, callbacks):
            return build(cfg, run_dir, [*callbacks, StopAtEpoch(epoch, error)])

        monkeypatch.setattr(devnets.train, "make_trainer", make_trainer)
        return lambda: monkeypatch.setattr(devnets.train, "make_trainer", build)

    return arm
