"""Owns the data settings: `DataConfig` with its documented defaults and the datasets it may
name. No torch, no optuna.

Claims: every value a `DataConfig` accepts means something; an impossible one (an unknown
dataset, a validation share of 0 or 1, a size of 0) is a `DataError` of one sentence.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from nas.config.fields import kept
from nas.errors import DataError

DATASETS = ("cifar10", "cifar100", "imagefolder", "synthetic")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = kept("cifar10")  # cifar10 | cifar100 | imagefolder | synthetic
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
        if self.dataset not in DATASETS:
            raise DataError(
                f"Unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}."
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
