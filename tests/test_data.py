"""Tests of nas.data.loading on tiny datasets the tests write themselves (no network, CPU only)."""

import dataclasses
import math
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from nas.config.data import DataConfig
from nas.data.loading import TensorData, load_splits
from nas.errors import DataError, UserError

PER_BATCH = 30  # images per CIFAR batch file the tests write
# the recipe's CIFAR-10 normalisation, written out here
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def _dump(path, obj):
    with open(path, "wb") as file:
        pickle.dump(obj, file)


def _images(rng, count):
    return rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)


def write_cifar10(root, per_batch=PER_BATCH):
    """A CIFAR-10-format folder: 5 train batches and a test batch; labels = index % 10."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"name{i}" for i in range(10)]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch})
    for batch in range(1, 6):
        labels = [(batch * per_batch + i) % 10 for i in range(per_batch)]
        _dump(folder / f"data_batch_{batch}", {"data": _images(rng, per_batch), "labels": labels})
    test_labels = [i % 10 for i in range(per_batch)]
    _dump(folder / "test_batch", {"data": _images(rng, per_batch), "labels": test_labels})
    return folder, names


def write_cifar100(root, count=40):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"fine{i}" for i in range(100)]
    _dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["c"] * 20})
    for split, size in (("train", count), ("test", count // 2)):
        labels = [(i * 7) % 100 for i in range(size)]
        _dump(
            folder / split,
            {"data": _images(rng, size), "fine_labels": labels, "coarse_labels": [0] * size},
        )
    return names


def cifar_config(root, **overrides):
    return DataConfig(**{"dataset": "cifar10", "data_dir": str(root), "verify": False,
                         "download": False, **overrides})  # fmt: skip


def test_cifar10_folder_loads_without_verification(tmp_path):
    folder, names = write_cifar10(tmp_path)
    splits = load_splits(cifar_config(tmp_path))
    total = 5 * PER_BATCH
    assert len(splits.train) == total - round(total * 0.1)
    assert len(splits.val) == round(total * 0.1)
    assert len(splits.test) == PER_BATCH
    for part in (splits.train, splits.val, splits.test):
        assert part.images.dtype == torch.uint8 and part.images.shape[1:] == (3, 32, 32)
        assert part.images.is_contiguous() and part.labels.dtype == torch.int64
    assert splits.classes == tuple(names) and splits.num_classes == 10
    assert splits.image_shape == (3, 32, 32)
    assert (splits.mean, splits.std) == (CIFAR10_MEAN, CIFAR10_STD)

    # Every image keeps its own label: look each one up in the files that were written.
    with open(folder / "data_batch_3", "rb") as file:
        batch = pickle.load(file)
    written = {bytes(row): label for row, label in zip(batch["data"], batch["labels"], strict=True)}
    found = 0
    for part in (splits.train, splits.val):
        for image, label in zip(part.images, part.labels, strict=True):
            key = bytes(image.flatten().numpy())
            if key in written:
                assert written[key] == int(label)
                found += 1
    assert found == PER_BATCH
    with open(folder / "test_batch", "rb") as file:
        test_batch = pickle.load(file)
    assert torch.equal(splits.test.images.flatten(1), torch.from_numpy(test_batch["data"]))
    assert splits.test.labels.tolist() == test_batch["labels"]


def test_cifar10_verification_rejects_unofficial_files(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DataError) as caught:
        load_splits(cifar_config(tmp_path, verify=True))
    message = str(caught.value)
    assert str(tmp_path) in message and "cifar-10-python.tar.gz" in message
    assert "MD5" in message
    assert isinstance(caught.value, UserError)


@pytest.mark.parametrize("verify", [True, False])
def test_missing_cifar_without_download_names_the_archive(tmp_path, verify):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as caught:
        load_splits(cifar_config(missing, verify=verify))
    assert "cifar-10-python.tar.gz" in str(caught.value) and str(missing) in str(caught.value)
    assert "cifar-10-batches-py" in str(caught.value)
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        load_splits(cifar_config(missing, dataset="cifar100", verify=verify))


def test_corrupt_cifar_file_is_a_data_error(tmp_path):
    folder, _ = write_cifar10(tmp_path)
    (folder / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_2"):
        load_splits(cifar_config(tmp_path))


def test_cifar10_archive_is_extracted_without_download(tmp_path):
    source = tmp_path / "source"
    write_cifar10(source)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tarfile.open(data_dir / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    splits = load_splits(cifar_config(data_dir))
    assert len(splits.train) + len(splits.val) == 5 * PER_BATCH


def test_cifar100_folder_loads_with_computed_statistics(tmp_path):
    names = write_cifar100(tmp_path)
    splits = load_splits(cifar_config(tmp_path, dataset="cifar100"))
    assert splits.classes == tuple(names) and splits.num_classes == 100
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 4, 20)
    assert sorted(splits.test.labels.tolist()) == sorted((i * 7) % 100 for i in range(20))
    expected_mean = splits.train.images.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(splits.mean, dtype=torch.float64), expected_mean, atol=1e-5)
    assert splits.mean != CIFAR10_MEAN
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        load_splits(cifar_config(tmp_path, dataset="cifar100", verify=True))
    small = load_splits(cifar_config(tmp_path, dataset="cifar100", image_size=16))
    assert small.image_shape == (3, 16, 16) and small.test.images.dtype == torch.uint8


def _keys(data: TensorData) -> set:
    return {bytes(image.flatten().numpy()) for image in data.images}


def test_split_is_fixed_by_seed_disjoint_and_separate_from_test(tmp_path):
    write_cifar10(tmp_path)  # random images: each is unique, so bytes identify them
    first = load_splits(cifar_config(tmp_path, split_seed=3))
    again = load_splits(cifar_config(tmp_path, split_seed=3))
    other = load_splits(cifar_config(tmp_path, split_seed=4))
    assert torch.equal(first.val.images, again.val.images)
    assert torch.equal(first.train.labels, again.train.labels)
    assert _keys(first.val) != _keys(other.val)
    assert not _keys(first.train) & _keys(first.val)
    assert not (_keys(first.train) | _keys(first.val)) & _keys(first.test)
    assert len(_keys(first.train) | _keys(first.val)) == 5 * PER_BATCH


def test_subset_trims_train_only_and_deterministically(tmp_path):
    write_cifar10(tmp_path)
    full = load_splits(cifar_config(tmp_path))
    small = load_splits(cifar_config(tmp_path, subset=20))
    assert len(small.train) == 20 and torch.equal(small.train.images, full.train.images[:20])
    assert torch.equal(small.val.images, full.val.images) and len(small.test) == len(full.test)
    assert len(load_splits(cifar_config(tmp_path, subset=10_000)).train) == len(full.train)
    with pytest.raises(DataError, match="subset"):
        cifar_config(tmp_path, subset=0)


def _save(path, mode, size, color, fmt):
    image = Image.new("RGB", size, color)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)


def write_image_folder(root, test_classes=("cat", "dog")):
    specs = [  # mode, size, colour, format
        ("L", (20, 30), (200, 200, 200), "PNG"),
        ("RGBA", (64, 64), (255, 0, 0), "PNG"),
        ("P", (17, 17), (0, 255, 0), "PNG"),
        ("RGB", (40, 25), (0, 0, 255), "JPEG"),
    ]
    for split, classes in (("train", ("cat", "dog")), ("test", test_classes)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            repeats = 3 if split == "train" else 1
            for index, (mode, size, color, fmt) in enumerate(specs * repeats):
                suffix = "png" if fmt == "PNG" else "jpg"
                _save(folder / f"{index}.{suffix}", mode, size, color, fmt)
    (root / "train" / "cat" / "notes.txt").write_text("not an image, skipped")


def test_channel_statistics_are_exact_for_images_of_a_known_construction(tmp_path):
    # every image: red black on the left half and white on the right, green a constant 51,
    # blue white in the top quarter of rows; so any choice of training images has, per channel,
    # mean (1/2, 51/255, 1/4) and population std (1/2, 0 -> floored at one grey level,
    # sqrt(1/4 * 3/4))
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[:, 4:, 0] = 255
    pixels[:, :, 1] = 51
    pixels[:2, :, 2] = 255
    for split, count in (("train", 5), ("test", 1)):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for index in range(count):
                Image.fromarray(pixels).save(tmp_path / split / name / f"{index}.png")
    config = DataConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=8)
    splits = load_splits(config)
    assert len(splits.train) == 9
    assert splits.mean == (0.5, 0.2, 0.25)
    assert splits.std == (0.5, round(1 / 255, 6), round(math.sqrt(3 / 16), 6))
    assert splits.std == (0.5, 0.003922, 0.433013)


def test_image_folder_mixed_modes_and_sizes(tmp_path):
    write_image_folder(tmp_path)
    config = DataConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=24)
    splits = load_splits(config)
    assert splits.classes == ("cat", "dog")
    assert len(splits.train) + len(splits.val) == 24 and len(splits.test) == 8
    for part in (splits.train, splits.val, splits.test):
        assert part.images.dtype == torch.uint8 and part.images.shape[1:] == (3, 24, 24)
    assert sorted(splits.test.labels.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    colours = {tuple(image[:, 12, 12].tolist()) for image in splits.test.images}
    assert (200, 200, 200) in colours and (255, 0, 0) in colours and (0, 255, 0) in colours
    assert any(abs(b - 255) < 8 and r < 8 for r, _, b in colours)  # the JPEG's blue, lossy
    assert splits.mean != CIFAR10_MEAN
    expected_mean = splits.train.images.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(splits.mean, dtype=torch.float64), expected_mean, atol=1e-5)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="train"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "missing")))
    write_image_folder(tmp_path, test_classes=("cat", "bird"))
    with pytest.raises(DataError, match="bird"):
        load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path)))


def test_synthetic_is_deterministic_balanced_and_learnable():
    config = DataConfig(dataset="synthetic", synthetic_size=500, synthetic_classes=5)
    splits = load_splits(config)
    again = load_splits(config)
    assert torch.equal(splits.train.images, again.train.images)
    assert torch.equal(splits.test.labels, again.test.labels)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (450, 50, 100)
    assert splits.image_shape == (3, 32, 32) and splits.num_classes == 5
    assert torch.bincount(splits.test.labels, minlength=5).tolist() == [20] * 5
    assert torch.bincount(splits.train.labels, minlength=5).min() >= 80
    other = load_splits(dataclasses.replace(config, split_seed=1))
    assert not torch.equal(splits.train.images, other.train.images)

    # Class structure is there: nearest class centroid beats chance (20 %) by far.
    train = splits.train.images.float().flatten(1)
    centroids = torch.stack([train[splits.train.labels == c].mean(0) for c in range(5)])
    predicted = torch.cdist(splits.test.images.float().flatten(1), centroids).argmin(1)
    assert (predicted == splits.test.labels).float().mean() > 0.6


def test_config_round_trip_and_validation():
    config = DataConfig(dataset="synthetic", subset=100, split_seed=7)
    assert DataConfig.from_dict(config.to_dict()) == config
    assert DataConfig.from_dict({}) == DataConfig()
    with pytest.raises(DataError, match="colour"):
        DataConfig.from_dict({"dataset": "synthetic", "colour": 1})
    with pytest.raises(DataError, match="mnist"):
        DataConfig(dataset="mnist")
    with pytest.raises(DataError, match="val_fraction"):
        DataConfig(val_fraction=1.0)
