"""Owns what a dataset's files decide, found without decoding an image and without torch: an image
folder's layout (`list_image_folder`, the one listing its reader reads and the run plan counts),
and, per on-disk format whose sizes are not in its row, how its classes, image counts and image
sides are found (`COUNTERS`). `class_count` and `split_sizes` answer for every row of
`nas.config.data.DATASET_TABLE`: from the row, its settings, or its files.

Claims:
- `split_sizes(config)` is what `nas.data.loading.load_splits` reads: the training part's images
  (before the validation split), the test part's and the classes; None where the files are not
  a usable dataset. An image folder's files are listed, none opened.
- `class_count(config)` lists no more than an image folder's class folders.
- An image folder's classes are the sorted non-hidden folders of `train/`; its images the
  non-hidden files with an `IMAGE_EXTENSIONS` suffix in them. `list_image_folder` refuses, in one
  sentence each, a missing `train/` or `test/`, no class folders, different classes in `train/`
  and `test/`, and a class folder without images.
- `folder_image_sizes(root)` reads only the headers of a folder's training images (an evenly
  spread sample of `SIZE_SAMPLE` files in a large folder), leaving out those it cannot read.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nas.config.data import DATASET_TABLE, DataConfig, SplitSizes
from nas.config.machine import usable_cpus
from nas.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT = "train/<class>/<image> and test/<class>/<image>"
SIZE_SAMPLE = 2000  # image headers read to find a folder's typical size (evenly spread)


def class_folders(split: Path) -> dict[str, Path]:
    """The class folders of one split (`root/train`), by name, sorted; hidden ones left out."""
    return {
        path.name: path
        for path in sorted(split.iterdir())
        if path.is_dir() and not path.name.startswith(".")
    }


def image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted; hidden files and other suffixes left out."""
    return [
        path
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    ]


@dataclass(frozen=True)
class ImageFolder:
    """An image folder as listed: its classes and each split's files, class by class."""

    classes: tuple[str, ...]
    train: tuple[tuple[Path, ...], ...]  # the files of each class, in the order of `classes`
    test: tuple[tuple[Path, ...], ...]

    def sizes(self) -> SplitSizes:
        return SplitSizes(sum(map(len, self.train)), sum(map(len, self.test)), len(self.classes))


def list_image_folder(root: str | Path) -> ImageFolder:
    """`root/train/<class>/*` and `root/test/<class>/*`, listed; DataError if it is not that."""
    root = Path(root)
    folders = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"Image folder {folder} does not exist: {root} must hold {LAYOUT}.")
        folders[split] = class_folders(folder)
    classes = tuple(folders["train"])
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders: {root} must hold {LAYOUT}.")
    if set(folders["test"]) != set(classes):
        only_train = sorted(set(classes) - set(folders["test"]))
        only_test = sorted(set(folders["test"]) - set(classes))
        raise DataError(
            f"The class folders of {root / 'test'} differ from those of {root / 'train'} "
            f"(only in train: {only_train}, only in test: {only_test}): give both the same classes."
        )
    files = {}
    for split in ("train", "test"):
        files[split] = []
        for name in classes:
            found = image_files(folders[split][name])
            if not found:
                raise DataError(
                    f"Class folder {folders[split][name]} holds no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}): add some or remove the folder."
                )
            files[split].append(tuple(found))
    return ImageFolder(classes, tuple(files["train"]), tuple(files["test"]))


def _folder_classes(root: Path) -> int | None:
    train = root / "train"
    return len(class_folders(train)) if train.is_dir() else None


def _folder_sizes(root: Path) -> SplitSizes | None:
    try:
        sizes = list_image_folder(root).sizes()
    except DataError:
        return None
    return sizes if sizes.train > 1 else None  # one image cannot be split for validation


def folder_image_sizes(root: str | Path) -> tuple[list[tuple[int, int]], int]:
    """(width, height) of up to `SIZE_SAMPLE` of `root/train`'s images, evenly spread over its
    sorted files, and how many image files it holds; headers only, nothing decoded; a file
    that cannot be read (a decompression bomb included) left out. DataError where the folder,
    or every sampled image, cannot be read."""
    train = Path(root) / "train"
    if not train.is_dir():
        raise DataError(f"Image folder {train} does not exist: {root} must hold {LAYOUT}.")
    files = [path for folder in class_folders(train).values() for path in image_files(folder)]
    if not files:
        raise DataError(f"{train} holds no images in class folders: add some.")
    step = max(1, len(files) / SIZE_SAMPLE)
    chosen = [files[int(index * step)] for index in range(min(len(files), SIZE_SAMPLE))]
    with ThreadPoolExecutor(max_workers=min(8, usable_cpus())) as pool:
        sizes = [size for size in pool.map(_image_header_size, chosen) if size is not None]
    if not sizes:
        raise DataError(
            f"All {len(chosen)} image files sampled under {train} could not be read as an "
            "image: fix or remove them."
        )
    return sizes, len(files)


def _image_header_size(path: Path) -> tuple[int, int] | None:
    """The size `path` claims, or None where it cannot be read (the reader names it)."""
    from nas.data.images import header_size  # here: the run plan's counts need no PIL

    try:
        return header_size(path)
    except DataError:
        return None


@dataclass(frozen=True)
class Counter:
    """How the files of one on-disk format decide what its row leaves None; `root` is the
    dataset's `data_dir`."""

    classes: Callable[[Path], int | None]  # the fewest entries listed; None: not there
    sizes: Callable[[Path], SplitSizes | None]  # files listed; None: not a usable dataset
    image_sizes: Callable[[Path], tuple[list[tuple[int, int]], int]]  # a sample's (w, h), files


COUNTERS: dict[str, Counter] = {  # by reader key (`nas.data.readers.READERS`)
    "image-folder": Counter(_folder_classes, _folder_sizes, folder_image_sizes),
}


def class_count(config: DataConfig) -> int | None:
    """The dataset's number of classes from its row, its settings or (an image folder's class
    folders, listed, not read) its files; None where the files are not there."""
    row = DATASET_TABLE[config.dataset]
    if row.classes is not None:
        return row.classes
    known = row.known_sizes(config)
    if known is not None:
        return known.classes
    return COUNTERS[row.reader].classes(Path(config.data_dir))


def split_sizes(config: DataConfig) -> SplitSizes | None:
    """The images of the dataset's training and test parts and its classes, as the reader will
    give them, or None where its files are not a usable dataset; nothing decoded."""
    row = DATASET_TABLE[config.dataset]
    known = row.known_sizes(config)
    if known is not None:
        return known
    return COUNTERS[row.reader].sizes(Path(config.data_dir))
