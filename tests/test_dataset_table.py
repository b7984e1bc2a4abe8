"""The table of datasets (nas.config.data.DATASET_TABLE): every row is read by its reader into the
row's classes and image size from data written here in its real on-disk format, the run plan's
counts (nas.data.counting, never loading an image) are what the loading gives, and a new row in a
known format works end to end. Expected values are counted by hand from what the tests write."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image
from test_data import write_cifar10, write_cifar100

from nas.cli.main import main
from nas.config.data import DATASET_TABLE, DATASETS, DataConfig, Dataset, register_dataset
from nas.costs.run_plan import DataShape, data_shape
from nas.data.counting import (
    COUNTERS,
    class_count,
    folder_image_sizes,
    list_image_folder,
    split_sizes,
)
from nas.data.loading import choose_image_size, load_splits
from nas.data.readers import READERS, read_dataset
from nas.errors import DataError
from nas.report.page import _data_label

from helpers import run_in_process


def write_folder(root, train=3, test=1, side=12, classes=("cat", "dog")):
    """`train` and `test` PNGs of `side` px per class, plus what a reader must skip: a text file,
    a hidden file and a hidden folder of images."""
    for split, count in (("train", train), ("test", test)):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                colour = (40 * index, 100, 200) if name == classes[0] else (10, 20, 30)
                Image.new("RGB", (side, side), colour).save(folder / f"{index}.png")
            Image.new("RGB", (side, side)).save(folder / ".hidden.png")
            (folder / "notes.txt").write_text("not an image")
        hidden = root / split / ".cache"
        hidden.mkdir()
        Image.new("RGB", (side, side)).save(hidden / "0.png")


def cifar10_data(root):
    write_cifar10(root)  # 5 batches of 30, a test batch of 30, 10 names
    return DataConfig(dataset="cifar10", data_dir=str(root), verify=False, download=False)


def cifar100_data(root):
    write_cifar100(root, count=40)  # 40 train, 20 test, 100 fine names
    return DataConfig(dataset="cifar100", data_dir=str(root), verify=False, download=False)


def folder_data(root):
    write_folder(root)  # 2 classes x (3 train, 1 test), 12 px
    return DataConfig(dataset="imagefolder", data_dir=str(root))


def synthetic_data(root):
    return DataConfig(dataset="synthetic", synthetic_size=20, synthetic_classes=3)


# per row: its data written in its format, and by hand: (train, test) images before the
# validation split, classes, the image size it trains at when none is given
WRITTEN = {
    "cifar10": (cifar10_data, (150, 30), 10, 32),
    "cifar100": (cifar100_data, (40, 20), 100, 32),
    "imagefolder": (folder_data, (6, 2), 2, 12),
    "synthetic": (synthetic_data, (20, 4), 3, 32),  # a fifth of 20 for the test
}
PUBLISHED = {"cifar10": (50_000, 10_000, 10), "cifar100": (50_000, 10_000, 100)}


def test_every_row_has_its_data_written_here_and_a_reader():
    assert DATASETS == tuple(DATASET_TABLE) == ("cifar10", "cifar100", "imagefolder", "synthetic")
    assert set(WRITTEN) == set(DATASETS)
    for row in DATASET_TABLE.values():
        assert row.reader in READERS
        # what the row leaves to the data, its format's counter finds
        if row.known_sizes(DataConfig(dataset=row.name)) is None or row.image_size is None:
            assert row.reader in COUNTERS


@pytest.mark.parametrize("name", DATASETS)
def test_each_reader_reads_its_format_into_the_rows_classes_and_size(tmp_path, name):
    write, (train, test), classes, size = WRITTEN[name]
    config, _ = choose_image_size(write(tmp_path))
    assert config.image_size == size
    (train_images, train_labels), (test_images, test_labels), names = read_dataset(config)
    assert len(names) == classes
    assert DATASET_TABLE[name].classes in (classes, None)
    assert class_count(config) == classes
    assert train_images.shape == (train, 3, size, size) and train_images.dtype == torch.uint8
    assert test_images.shape == (test, 3, size, size)
    assert 0 <= int(train_labels.min()) and int(train_labels.max()) < classes
    assert int(test_labels.max()) < classes


@pytest.mark.parametrize("name", DATASETS)
def test_the_run_plans_counts_are_what_the_loading_gives(tmp_path, name):
    write, _, _, _ = WRITTEN[name]
    config = write(tmp_path)
    if name in PUBLISHED:  # fixed in the row: the published sizes, 10 % held out
        train, test, classes = PUBLISHED[name]
        assert data_shape(config) == DataShape(45_000, 5_000, test, 32, classes)
        return
    splits = load_splits(config)
    assert data_shape(config) == DataShape(
        len(splits.train), len(splits.val), len(splits.test), splits.image_shape[-1],
        splits.num_classes,
    )  # fmt: skip


def test_a_tiny_synthetic_sets_test_part_is_counted_as_generated():
    # 4 // 5 = 0, but the generator makes at least one test image
    config = DataConfig(dataset="synthetic", synthetic_size=4, val_fraction=0.5)
    splits = load_splits(config)
    assert len(splits.test) == 1
    assert data_shape(config) == DataShape(2, 2, 1, 32, 10)


# writes and reads CIFAR-10's full 60,000 images (180 MB; about a second)
def test_cifar10s_published_sizes_are_what_the_loading_gives_for_files_of_that_size(tmp_path):
    write_cifar10(tmp_path, per_batch=10_000)  # the real files' 5 x 10,000 + a test batch
    config = DataConfig(dataset="cifar10", data_dir=str(tmp_path), verify=False, download=False)
    splits = load_splits(config)
    shape = data_shape(config)
    assert (shape.train_images, shape.val_images) == (len(splits.train), len(splits.val))
    assert shape.num_classes == splits.num_classes == 10
    # the test batch the tests write holds per_batch images too
    assert shape.test_images == len(splits.test) == 10_000


def test_an_image_folder_is_counted_without_opening_an_image(tmp_path):
    write_folder(tmp_path)
    config = DataConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=12)
    for path in tmp_path.rglob("*.png"):
        path.write_bytes(b"not an image")
    assert split_sizes(config).train == 6 and split_sizes(config).test == 2
    assert data_shape(config) == DataShape(5, 1, 2, 12, 2)  # round(6 * 0.1) = 1 held out
    with pytest.raises(DataError, match="could not be read as an image"):
        load_splits(config)


def test_class_count_lists_only_the_class_folders(tmp_path):
    for name in ("a", "b", "c", ".hidden"):
        (tmp_path / "train" / name).mkdir(parents=True)  # empty, no test/: not yet a dataset
    config = DataConfig(dataset="imagefolder", data_dir=str(tmp_path))
    assert class_count(config) == 3
    assert split_sizes(config) is None and data_shape(config) is None
    assert class_count(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "no"))) is None
    assert class_count(DataConfig(dataset="synthetic", synthetic_classes=7)) == 7
    assert class_count(DataConfig(dataset="cifar100", data_dir=str(tmp_path / "no"))) == 100


def test_an_image_folders_classes_and_images_are_the_visible_ones(tmp_path):
    write_folder(tmp_path, train=2, classes=("b", "a"))
    (tmp_path / "train" / "a" / "UPPER.PNG").write_bytes(b"")  # suffixes in any case
    folder = list_image_folder(tmp_path)
    assert folder.classes == ("a", "b")  # sorted; .cache and the hidden files left out
    assert [[p.name for p in files] for files in folder.train] == [
        ["0.png", "1.png", "UPPER.PNG"], ["0.png", "1.png"]
    ]  # fmt: skip
    assert [len(files) for files in folder.test] == [1, 1]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda root: None, "train does not exist"),
        (lambda root: (root / "train" / "a").mkdir(parents=True), "test does not exist"),
        (lambda root: [(root / s).mkdir(parents=True) for s in ("train", "test")], "no class"),
        (
            lambda root: [
                (root / s / c).mkdir(parents=True) for s, c in (("train", "a"), ("test", "b"))
            ],
            "only in train: ['a'], only in test: ['b']",
        ),  # fmt: skip
        (
            lambda root: [(root / s / "a").mkdir(parents=True) for s in ("train", "test")],
            "holds no images",
        ),
    ],
    ids=["no-train", "no-test", "no-classes", "other-classes", "no-images"],
)
def test_a_folder_that_is_not_an_image_folder_is_refused_in_one_sentence(tmp_path, make, words):
    make(tmp_path)
    with pytest.raises(DataError) as caught:
        list_image_folder(tmp_path)
    message = str(caught.value)
    assert words in message and message.endswith(".") and str(tmp_path) in message
    assert ". " not in message and "\n" not in message  # one sentence
    assert split_sizes(DataConfig(dataset="imagefolder", data_dir=str(tmp_path))) is None


def test_folder_image_sizes_reads_headers_only(tmp_path):
    write_folder(tmp_path, side=20)
    damaged = tmp_path / "train" / "cat" / "0.png"
    damaged.write_bytes(damaged.read_bytes()[:60])  # the header alone: no pixel can be decoded
    sizes, files = folder_image_sizes(tmp_path)
    assert sizes == [(20, 20)] * 6 and files == 6


DOTS = Dataset(  # a row of the image-folder format with its own classes, size and statistics
    name="dots",
    title="Dots",
    reader="image-folder",
    classes=2,
    image_size=8,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
)


@pytest.fixture
def dots():
    register_dataset(DOTS)
    try:
        yield DOTS
    finally:
        del DATASET_TABLE[DOTS.name]


def test_a_new_row_in_a_known_format_works_end_to_end(tmp_path, dots):
    write_folder(tmp_path, train=5, test=2, side=8, classes=("x", "y"))
    config = DataConfig(dataset="dots", data_dir=str(tmp_path))
    assert class_count(config) == 2
    splits = load_splits(config)  # no size given: the row's 8 px, not a folder's median
    assert splits.classes == ("x", "y") and splits.image_shape == (3, 8, 8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 1, 4)
    assert (splits.mean, splits.std) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # the row's
    assert data_shape(config) == DataShape(9, 1, 4, 8, 2)
    assert choose_image_size(config)[1] is None
    # at another size: said, and normalised with statistics computed from the training images
    # (constant per image: red 40 * index for x, 10 for y, so never the row's 0.5)
    resized = dataclasses.replace(config, image_size=16)
    assert choose_image_size(resized)[1] == "images: Dots's 8x8 px resized to 16 px"
    other = load_splits(resized)
    assert other.image_shape == (3, 16, 16) and other.mean != (0.5, 0.5, 0.5)
    expected = other.train.images.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(other.mean, dtype=torch.float64), expected, atol=1e-5)


def test_a_row_of_fixed_classes_refuses_files_with_another_number(tmp_path, dots):
    write_folder(tmp_path, side=8, classes=("x", "y", "z"))
    with pytest.raises(DataError, match="Dots in .* has 3 classes, not its 2"):
        load_splits(DataConfig(dataset="dots", data_dir=str(tmp_path)))


def test_a_registered_row_is_accepted_once_and_only_while_there(dots):
    assert DataConfig(dataset="dots").dataset == "dots"
    with pytest.raises(ValueError, match="dots"):
        register_dataset(DOTS)
    del DATASET_TABLE["dots"]
    with pytest.raises(DataError, match="choose one of cifar10, cifar100, imagefolder, synth"):
        DataConfig(dataset="dots")
    register_dataset(DOTS)  # for the fixture to remove


def test_the_dataset_choices_are_the_tables_rows():
    status, out, _ = run_in_process(main, ["search", "--help"])
    assert status == 0 and "{cifar10,cifar100,imagefolder,synthetic}" in out
    status, _, err = run_in_process(main, ["search", "--dataset", "mnist"])
    assert status == 2 and "invalid choice: 'mnist'" in err


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_a_downloaded_rows_archive_and_checksum_are_torchvisions(tmp_path, name):
    import torchvision.datasets

    row = DATASET_TABLE[name]
    spec = getattr(torchvision.datasets, row.download)
    archive = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[name]
    assert row.archive == spec.filename == archive
    assert f"{row.download}.tgz_md5" in row.checksum and len(spec.tgz_md5) == 32
    config = DataConfig(dataset=name, data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError, match=f"{row.title} was not found in .*{archive}"):
        read_dataset(dataclasses.replace(config, image_size=32))


def test_only_the_rows_that_download_name_a_download():
    assert [n for n, row in DATASET_TABLE.items() if row.download] == ["cifar10", "cifar100"]


def test_the_report_says_generated_data_is_generated():
    data = {"dataset": "synthetic", "synthetic_size": 200, "image_size": 32, "split_seed": 0}
    assert _data_label(data) == (
        "synthetic at 32x32 px, all training images of 200 generated (split seed 0)"
    )
    assert _data_label({**data, "dataset": "cifar10"}) == (
        "cifar10 at 32x32 px, all training images (split seed 0)"
    )
    assert "generated" not in _data_label({**data, "dataset": "gone"})  # a row no longer here
