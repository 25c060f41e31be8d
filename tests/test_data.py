"""Loading the fixture files through torchvision, finding data offline, subsets and batches."""

import shutil

import pytest
import torch

from conftest import N_TEST, N_TRAIN, synthetic_images, write_mnist_like
from devnets.data import DataCorrupt, DataNotFound, ImageClassificationData, ShuffledBatches, draw_subset, locate
from devnets.errors import InvalidSetting


def loaded(**kwargs) -> ImageClassificationData:
    data = ImageClassificationData(**kwargs)
    data.setup()
    return data


@pytest.mark.parametrize(
    "name, shape", [("mnist", (1, 28, 28)), ("fashion_mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))]
)
def test_pixels_are_scaled_and_kept_image_shaped(data_root, name, shape):
    data = loaded(name=name, root=str(data_root), n_train=N_TRAIN)
    assert data.train_x.shape == (N_TRAIN, *shape) and data.test_x.shape == (N_TEST, *shape)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert 0.0 <= data.train_x.min() and data.train_x.max() <= 1.0


def test_mnist_pixels_match_the_file_exactly(data_root):
    images, labels = synthetic_images(N_TEST, (28, 28), seed=1)  # the fixture's MNIST test split
    data = loaded(name="mnist", root=str(data_root), n_train=10)
    assert torch.equal(data.test_x, torch.from_numpy(images).reshape(N_TEST, 1, 28, 28).float() / 255)
    assert torch.equal(data.test_y, torch.from_numpy(labels).long())


def test_cifar_is_channel_major(data_root):
    images, _ = synthetic_images(N_TEST, (32, 32, 3), seed=200)  # the fixture's CIFAR test batch
    data = loaded(name="cifar10", root=str(data_root), n_train=10)
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(data.test_x, expected)


def test_subset_is_drawn_from_the_seed(data_root):
    first = loaded(name="mnist", root=str(data_root), n_train=50, seed=3)
    again = loaded(name="mnist", root=str(data_root), n_train=50, seed=3)
    other = loaded(name="mnist", root=str(data_root), n_train=50, seed=4)
    assert torch.equal(first.train_x, again.train_x)
    assert not torch.equal(first.train_x, other.train_x)


def test_balanced_subset_has_equal_classes():
    targets = torch.arange(1000) % 10
    chosen = draw_subset(targets, 120, seed=0, subset="balanced")
    assert len(chosen) == len(set(chosen.tolist())) == 120
    assert torch.bincount(targets[chosen]).tolist() == [12] * 10


def test_validation_split_is_disjoint_from_training(data_root):
    data = loaded(name="mnist", root=str(data_root), n_train=100, val_size=50)
    train_rows = {tuple(row.tolist()) for row in data.train_x.flatten(1)}
    assert len(data.val_x) == 50
    assert not any(tuple(row.tolist()) in train_rows for row in data.val_x.flatten(1))


def test_batches_cover_each_epoch_once_in_an_order_set_by_seed_and_epoch():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    epoch = [0]
    batches = ShuffledBatches(x, y, batch_size=4, seed=1, epoch=lambda: epoch[0])
    first = [b for b, _ in batches]
    assert [len(b) for b in first] == [4, 4, 2] and len(batches) == 3
    assert sorted(torch.cat(first).squeeze(1).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(first, [b for b, _ in batches], strict=True))
    epoch[0] = 1
    assert not torch.equal(torch.cat(first), torch.cat([b for b, _ in batches]))


def test_flat_gz_folder_like_debians_is_unpacked(tmp_path):
    write_mnist_like(tmp_path / "share" / "fashion-mnist", seed=100, compress=True)
    root = locate("fashion_mnist", tmp_path / "share")
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()
    data = loaded(name="fashion_mnist", root=str(tmp_path / "share"), n_train=N_TRAIN)
    assert data.train_x.shape == (N_TRAIN, 1, 28, 28)


def test_missing_data_names_the_searched_paths(tmp_path):
    with pytest.raises(DataNotFound) as error:
        locate("mnist", tmp_path / "nowhere")
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere") in message and "data.download=true" in message


def test_corrupt_file_is_named(data_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    damaged = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(DataCorrupt, match="t10k-images-idx3-ubyte"):
        loaded(name="mnist", root=str(root), n_train=10)


def test_n_train_larger_than_the_files_is_refused(data_root):
    with pytest.raises(InvalidSetting, match=f"n_train={N_TRAIN + 1} is not allowed"):
        loaded(name="mnist", root=str(data_root), n_train=N_TRAIN + 1)


def test_damaged_cifar_batch_is_named(data_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data_root / "cifar-10-batches-py", root / "cifar-10-batches-py")
    damaged = root / "cifar-10-batches-py" / "data_batch_3"
    damaged.write_bytes(damaged.read_bytes()[:500])
    with pytest.raises(DataCorrupt, match="data_batch_3 is damaged"):
        loaded(name="cifar10", root=str(root), n_train=10)


def test_incomplete_dataset_is_not_found(data_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFound, match="MNIST not found in"):
        locate("mnist", root)
