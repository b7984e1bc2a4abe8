"""Owns the data settings and the table of datasets: `DataConfig` with its documented defaults,
and `DATASET_TABLE`, one `Dataset` row per dataset a `DataConfig` may name (its classes, image
size, reader, normalisation, download and split sizes). No torch, no optuna: the command line's
`--dataset` choices are built from it.

Every module that needs to know something of a dataset (the readers, the loading and its image
size, the run plan's counts, the report) reads it from its row here, so a dataset is added in one
row, plus one reader in `nas.data.readers.READERS` if its on-disk format is new.

Claims: every value a `DataConfig` accepts means something; an impossible one (an unknown
dataset, a validation share of 0 or 1, a size of 0) is a `DataError` of one sentence.
`DATASETS`, the `--dataset` choices and the names `DataConfig` accepts are the table's rows, in
its order; a row added with `register_dataset` is accepted by `DataConfig` and refused twice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nas.config.fields import kept
from nas.errors import DataError


@dataclass(frozen=True)
class SplitSizes:
    """How many images a dataset's two parts hold, and its classes."""

    train: int  # the training part, before the validation split and `subset`
    test: int
    classes: int


def _synthetic_sizes(data: DataConfig) -> SplitSizes:
    # a fifth as many test images as training ones, at least one
    return SplitSizes(data.synthetic_size, max(1, data.synthetic_size // 5), data.synthetic_classes)


@dataclass(frozen=True)
class Dataset:
    """One dataset `--dataset` may name. A count or size left None is decided by its settings
    (`sized_by`) or by its files, counted without decoding an image by
    `nas.data.counting.COUNTERS[reader]`."""

    name: str  # the `--dataset` value, `DataConfig.dataset` and the study's recorded dataset
    title: str  # in a sentence: CIFAR-10
    reader: str  # the on-disk format: a key of `nas.data.readers.READERS` (cifar-pickle, ...)
    classes: int | None  # fixed number of classes; None: the data or the settings decide
    image_size: int | None  # its own pixels square, trained at when none is given; None: decided
    # from the data (an image folder's median side, up to nas.data.loading.MAX_CHOSEN_SIZE)
    train_images: int | None = None  # images in the published training part (before our split)
    test_images: int | None = None  # images in the published test part
    # sizes and classes that follow from the settings alone (the synthetic set's)
    sized_by: Callable[[DataConfig], SplitSizes] | None = None
    generated: bool = False  # made at any size from the settings, never read from disk: a size
    # other than its own resizes nothing, so it is not said
    # fixed per-channel normalisation (pixels scaled to [0, 1]) at `image_size`; None: computed
    # from the training split (after the validation split, before `subset`), as at other sizes
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    download: str | None = None  # the torchvision.datasets class whose URL and MD5s it downloads
    archive: str | None = None  # the file it downloads into and reads from `data_dir`
    checksum: str | None = None  # where its files' MD5 is, and when it is checked; None: never

    def known_sizes(self, data: DataConfig) -> SplitSizes | None:
        """Its sizes from the row or the settings alone; None where its files decide them."""
        if self.sized_by is not None:
            return self.sized_by(data)
        fixed = (self.train_images, self.test_images, self.classes)
        return SplitSizes(*fixed) if None not in fixed else None


def _cifar_checksum(spec: str) -> str:
    return (
        f"torchvision's {spec}.tgz_md5 for the archive and the MD5 of each batch file in its "
        "train_list, test_list and meta; checked by the cifar-pickle reader unless verify=False"
    )


DATASET_TABLE: dict[str, Dataset] = {
    row.name: row
    for row in (
        Dataset(
            name="cifar10",
            title="CIFAR-10",
            reader="cifar-pickle",
            classes=10,
            image_size=32,
            train_images=50_000,
            test_images=10_000,
            # the recipe's normalisation (the values CIFAR-10 training code commonly uses)
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2023, 0.1994, 0.2010),
            download="CIFAR10",
            archive="cifar-10-python.tar.gz",
            checksum=_cifar_checksum("CIFAR10"),
        ),
        Dataset(
            name="cifar100",
            title="CIFAR-100",
            reader="cifar-pickle",
            classes=100,
            image_size=32,
            train_images=50_000,
            test_images=10_000,
            download="CIFAR100",
            archive="cifar-100-python.tar.gz",
            checksum=_cifar_checksum("CIFAR100"),
        ),
        Dataset(
            name="imagefolder",
            title="the image folder",
            reader="image-folder",
            classes=None,  # its train/<class>/ folders
            image_size=None,  # its median side, up to 224
        ),
        Dataset(
            name="synthetic",
            title="the synthetic set",
            reader="synthetic",
            classes=None,  # DataConfig.synthetic_classes
            image_size=32,
            sized_by=_synthetic_sizes,
            generated=True,
        ),
    )
}
DATASETS = tuple(DATASET_TABLE)  # the names, in the table's order: the `--dataset` choices


def register_dataset(row: Dataset) -> None:
    """Adds `row` to the table, for code that builds its own `DataConfig` (the command line's
    choices are the rows written above); ValueError if its name is taken."""
    if not isinstance(row, Dataset) or not row.name or row.name in DATASET_TABLE:
        raise ValueError(f"{row!r} is not a new dataset row.")
    DATASET_TABLE[row.name] = row


@dataclass(frozen=True)
class DataConfig:
    dataset: str = kept("cifar10")  # a row of DATASET_TABLE: cifar10 | cifar100 | imagefolder | ...
    data_dir: str = "data"  # folder datasets are downloaded to / read from
    # pixels square the images are held and trained at; None: the dataset's own, decided and said
    # by nas.data.loading.choose_image_size (CIFAR's 32, an image folder's median side up to 224)
    image_size: int | None = kept(None)
    val_fraction: float = kept(0.1)  # share of the training split held out for validation (recipe)
    split_seed: int = kept(0)  # seed of the validation split: one split for all trials and retrains
    subset: int | None = kept(None)  # only this many training images (after the split); None: all
    synthetic_size: int = kept(1000)  # synthetic: images in the train split (test gets a fifth)
    synthetic_classes: int = kept(10)  # synthetic: number of classes
    download: bool = True  # download CIFAR into data_dir on first use
    verify: bool = True  # False accepts CIFAR files in data_dir without torchvision's MD5 check

    def __post_init__(self) -> None:
        if isinstance(self.data_dir, os.PathLike):
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        if self.dataset not in DATASET_TABLE:
            raise DataError(
                f"Unknown dataset {self.dataset!r}: choose one of {', '.join(DATASET_TABLE)}."
            )
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise DataError(f"data_dir must be a folder path, got {self.data_dir!r}.")
        if self.image_size is not None:
            _require_int("image_size", self.image_size, minimum=1)
        _require_int("split_seed", self.split_seed, minimum=0)
        _require_int("synthetic_size", self.synthetic_size, minimum=2)
        _require_int("synthetic_classes", self.synthetic_classes, minimum=2)
        if self.subset is not None:
            _require_int("subset", self.subset, minimum=1)
        fraction = self.val_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise DataError(f"val_fraction must be a number between 0 and 1, got {fraction!r}.")
        if not 0.0 < fraction < 1.0:
            raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {fraction}.")
        for name in ("download", "verify"):
            if not isinstance(getattr(self, name), bool):
                raise DataError(f"{name} must be true or false, got {getattr(self, name)!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> DataConfig:
        if not isinstance(d, Mapping):
            raise DataError(f"Data settings must be a mapping of names to values, got {d!r}.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(
                f"Unknown data setting(s) {', '.join(map(repr, unknown))}: "
                f"use only {', '.join(sorted(known))}."
            )
        return cls(**d)


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{name} must be a whole number of at least {minimum}, got {value!r}.")
