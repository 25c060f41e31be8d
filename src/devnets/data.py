"""MNIST, Fashion-MNIST and CIFAR-10 as in-memory tensors, prepared as both papers do.

torchvision reads the files; this module only finds them (offline first), scales pixels to [0, 1],
keeps each image shaped (channels, height, width: 1×28×28, 3×32×32 for CIFAR-10 in RGB; a model that
wants a vector flattens it, channel-major) and serves batches sliced
from a per-epoch permutation. Everything stays on the training device: a per-sample ``DataLoader``
would spend most of an epoch collating 600-sample batches.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from devnets import PROJECT_ROOT
from devnets.dataset_info import DATASETS, DatasetInfo
from devnets.errors import is_whole, require


def torchvision_class(info: DatasetInfo) -> type:
    """The torchvision.datasets class that reads ``info``'s files."""
    return getattr(datasets, info.torchvision_name)


SUBSETS = ("random", "balanced")


class DataNotFound(FileNotFoundError):
    pass


class DataCorrupt(RuntimeError):
    pass


def search_roots(root: str | os.PathLike | None) -> list[Path]:
    """Where a dataset is looked for: the given root only, or the offline defaults in order."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = [Path(os.environ["DEVNETS_DATA"])] if os.environ.get("DEVNETS_DATA") else []
    return roots + [PROJECT_ROOT / "data", PROJECT_ROOT.parent / "shared" / "datasets", Path("/usr/share/datasets")]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "devnets"


def _unpack_flat_idx(info: DatasetInfo, root: Path) -> Path | None:
    """A flat folder of (gz) IDX files, as Debian ships Fashion-MNIST, unpacked into torchvision's layout.

    Returns the root to hand to torchvision, or None when ``root`` holds no such folder. The unpacked
    copy is keyed by the source folder and each source file's size and mtime, so a changed or other
    source is unpacked afresh, never served from a stale copy.
    """
    if not issubclass(torchvision_class(info), datasets.MNIST):
        return None
    names = _idx_names(info)
    for flat in ([root / info.debian_folder] if info.debian_folder else []) + [root]:
        sources = [flat / name if (flat / name).exists() else flat / f"{name}.gz" for name in names]
        if all(source.exists() for source in sources):
            stamp = [str(flat.resolve())] + [f"{s.name}:{s.stat().st_size}:{s.stat().st_mtime_ns}" for s in sources]
            key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
            target_root = cache_dir() / "debian" / key
            raw = target_root / info.folder / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            for name, source in zip(names, sources, strict=True):
                if not (raw / name).exists():
                    opened = gzip.open(source) if source.suffix == ".gz" else open(source, "rb")
                    partial = raw / f"{name}.{os.getpid()}.partial"
                    with opened as reader, open(partial, "wb") as target:
                        shutil.copyfileobj(reader, target)
                    os.replace(partial, raw / name)
            return target_root
    return None


def _idx_names(info: DatasetInfo) -> list[str]:
    """The uncompressed IDX file names torchvision's MNIST-style classes read."""
    return [os.path.splitext(os.path.basename(url))[0] for url, _ in torchvision_class(info).resources]


def _files_of(info: DatasetInfo, root: Path) -> list[Path]:
    """Every file torchvision reads for ``info`` under ``root``."""
    folder = root / info.folder
    cls = torchvision_class(info)
    if cls is datasets.CIFAR10:
        return [folder / name for name, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]
    return [folder / "raw" / name for name in _idx_names(info)]


def _read(info: DatasetInfo, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as (float32 pixels in [0, 1], shaped (N, channels, height, width); int64 labels)."""
    try:
        dataset = torchvision_class(info)(str(root), train=train, download=False)
    except Exception as error:  # every file exists (locate), so torchvision failed on a damaged one
        raise DataCorrupt(_describe_corruption(info, root, error)) from error
    pixels = torch.as_tensor(dataset.data)
    if pixels.ndim == 4:  # CIFAR-10: (N, 32, 32, 3) -> channel-major like ToTensor
        pixels = pixels.permute(0, 3, 1, 2)
    x = pixels.reshape(len(pixels), *info.shape).to(torch.float32).div_(255.0)
    y = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return x, y


def _describe_corruption(info: DatasetInfo, root: Path, error: Exception) -> str:
    culprit = root / info.folder
    if issubclass(torchvision_class(info), datasets.MNIST):
        for path in _files_of(info, root):
            try:
                datasets.mnist.read_sn3_pascalvincent_tensor(str(path))
            except Exception:  # the first file torchvision cannot parse is the one to name
                culprit = path
                break
    else:
        cls = torchvision_class(info)
        expected = {name: md5 for name, md5 in cls.train_list + cls.test_list} | {cls.meta["filename"]: cls.meta["md5"]}
        culprit = next((p for p in _files_of(info, root) if not check_integrity(str(p), expected[p.name])), culprit)
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"data.root: {culprit} is damaged or not a {info.folder} file ({detail}); replace it or delete it"


def locate(name: str, root: str | os.PathLike | None, download: bool = False) -> Path:
    """The root under which torchvision finds ``name``, searching offline roots first."""
    info = DATASETS[name]
    candidates = search_roots(root)
    for candidate in candidates:
        if all(path.exists() for path in _files_of(info, candidate)):
            return candidate
        unpacked = _unpack_flat_idx(info, candidate)
        if unpacked is not None:
            return unpacked
    if download:
        target = candidates[0] if root is not None else PROJECT_ROOT / "data"
        torchvision_class(info)(str(target), train=True, download=True)
        torchvision_class(info)(str(target), train=False, download=True)
        return target
    searched = ", ".join(str(c) for c in candidates)
    raise DataNotFound(
        f"data.root: {info.folder} not found in {searched}; pass data.root=DIR holding {info.folder}/ "
        f"in torchvision's layout, or data.download=true to fetch it"
    )


def draw_subset(targets: torch.Tensor, n: int, seed: int, subset: str, exclude: torch.Tensor | None = None):
    """Indices of ``n`` samples drawn without replacement from ``seed``.

    ``random`` draws uniformly; ``balanced`` draws ``n // classes`` per class (the remainder from
    the classes in label order), as far as each class allows.
    """
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randperm(len(targets), generator=generator)
    if exclude is not None:
        pool = pool[~torch.isin(pool, exclude)]
    if subset == "random":
        return pool[:n]
    classes = targets.unique()
    per_class, extra = divmod(n, len(classes))
    chosen = []
    for rank, label in enumerate(classes):
        of_class = pool[targets[pool] == label]
        chosen.append(of_class[: per_class + (rank < extra)])
    return torch.cat(chosen)


class ShuffledBatches:
    """Batches of in-memory tensors sliced from a permutation that depends only on (seed, epoch).

    Seeding each epoch's permutation from the epoch number (not from a running generator) makes a run
    resumed from a checkpoint see exactly the batches an uninterrupted run sees.
    """

    def __init__(self, x, y, batch_size: int, seed: int | None = None, epoch=lambda: 0):
        self.x, self.y, self.batch_size, self.seed, self.epoch = x, y, batch_size, seed, epoch

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.seed is None:
            for start in range(0, len(self.x), self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
        order = torch.randperm(len(self.x), generator=generator).to(self.x.device)
        for start in range(0, len(self.x), self.batch_size):
            index = order[start : start + self.batch_size]
            # index_select gathers rows about 1.5x faster than x[index] on the CPU
            yield self.x.index_select(0, index), self.y.index_select(0, index)


class ImageClassificationData(L.LightningDataModule):
    """A training subset and the full test set of one dataset, held as tensors on the training device.

    The test set is evaluated after every epoch (the papers report that curve). With ``val_size`` > 0
    a validation set, disjoint from the training subset, is evaluated too, for tuning.
    """

    def __init__(
        self,
        name: str = "mnist",
        root: str | None = None,
        n_train: int | None = None,
        subset: str = "random",
        batch_size: int = 600,
        eval_batch_size: int = 10_000,
        val_size: int = 0,
        download: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        require(name in DATASETS, "name", name, f"one of {sorted(DATASETS)}")
        info = DATASETS[name]
        n_train = info.train_size if n_train is None else n_train
        require(
            is_whole(n_train, minimum=1) and n_train <= info.train_size,
            "n_train", n_train, f"an integer from 1 to {info.train_size} (the {name} training set)",
        )
        require(subset in SUBSETS, "subset", subset, f"one of {list(SUBSETS)}")
        require(is_whole(batch_size, minimum=1), "batch_size", batch_size, "an integer ≥ 1")
        require(is_whole(eval_batch_size, minimum=1), "eval_batch_size", eval_batch_size, "an integer ≥ 1")
        require(
            is_whole(val_size) and val_size <= info.train_size - n_train,
            "val_size", val_size, f"an integer from 0 to {info.train_size - n_train} (training samples left over)",
        )
        self.name, self.info, self.root, self.n_train, self.subset = name, info, root, n_train, subset
        self.batch_size, self.eval_batch_size, self.val_size = batch_size, eval_batch_size, val_size
        require(isinstance(download, bool), "download", download, "true or false")
        require(is_whole(seed), "seed", seed, "an integer ≥ 0")
        self.download, self.seed = download, seed
        self.train_x = self.train_y = self.test_x = self.test_y = self.val_x = self.val_y = None

    def load(self) -> None:
        """Read the files and draw the subsets (on the CPU). Bad files or sizes fail here, before training."""
        root = locate(self.name, self.root, self.download)
        full_x, full_y = _read(self.info, root, train=True)
        require(
            self.n_train + self.val_size <= len(full_y),
            "n_train", self.n_train, f"at most {len(full_y) - self.val_size} (the training files under {root})",
        )
        chosen = draw_subset(full_y, self.n_train, self.seed, self.subset)
        self.train_x, self.train_y = full_x[chosen], full_y[chosen]
        if self.val_size:
            held_out = draw_subset(full_y, self.val_size, self.seed + 1, "random", exclude=chosen)
            self.val_x, self.val_y = full_x[held_out], full_y[held_out]
        self.test_x, self.test_y = _read(self.info, root, train=False)

    def setup(self, stage: str | None = None) -> None:
        if self.train_x is None:
            self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        for attribute in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            if getattr(self, attribute) is not None:
                setattr(self, attribute, getattr(self, attribute).to(device))

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> ShuffledBatches:
        return ShuffledBatches(self.train_x, self.train_y, self.batch_size, self.seed, self._epoch)

    def val_dataloader(self) -> list[ShuffledBatches]:
        """The test set first (logged as ``test/*``), then the validation set if any (``val/*``)."""
        loaders = [ShuffledBatches(self.test_x, self.test_y, self.eval_batch_size)]
        if self.val_size:
            loaders.append(ShuffledBatches(self.val_x, self.val_y, self.eval_batch_size))
        return loaders
