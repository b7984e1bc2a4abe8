"""Owns the data: datasets, the fixed validation split, normalisation statistics and loaders.

What this module claims:

- `load_splits(config)` returns train / val / test as in-memory uint8 tensors (N, 3, S, S) at
  `config.image_size`, class names, and the per-channel mean/std used for normalisation.
- CIFAR-10/100 come from torchvision's archive (`cifar-10-python.tar.gz`, `cifar-100-python.tar.gz`)
  in `data_dir`, downloaded on first use when allowed, or from the folder it extracts to
  (`cifar-10-batches-py/`, `cifar-100-python/`). We use torchvision's URLs, file lists and MD5s,
  and read the batch pickles ourselves (the same format and keys torchvision reads), so that one
  reading path serves both modes: `verify=True` first checks every file's MD5 as torchvision does;
  `verify=False` reads whatever files are there (for trusted copies, or the tiny folders tests
  write). Like torchvision, this unpickles the files: only point it at data you trust.
- CIFAR-10 is normalised with the recipe's constants; every other dataset with statistics computed
  from its training portion (after the validation split, before `subset`, so trimming the data
  for a quick search does not change the normalisation).
- `imagefolder` reads `data_dir/train/<class>/*` and `data_dir/test/<class>/*` with PIL; any
  mode becomes RGB and any size is plainly resized (bilinear, aspect ratio not kept) to a square.
- `synthetic` generates a small learnable dataset, deterministic from `split_seed`.
- The validation split is a permutation seeded by `split_seed`: the same for every trial and the
  retrain; the test split is a separate set and never part of it.
- Every mistake a user can make (missing or corrupt files, bad settings) is a `DataError` whose
  message is one sentence saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tarfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from nas.errors import UserError

DATASETS = ("cifar10", "cifar100", "imagefolder", "synthetic")
# The recipe's CIFAR-10 normalisation (pixel values scaled to [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(UserError):
    """A dataset is missing, corrupt or misconfigured; the message says how to fix it."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | cifar100 | imagefolder | synthetic
    data_dir: str = "data"  # folder datasets are downloaded to / read from
    image_size: int = 32  # images are held at this many pixels square (CIFAR's native size)
    val_fraction: float = 0.1  # share of the training split held out for validation (recipe)
    split_seed: int = 0  # seed of the validation split: same split for every trial and retrain
    subset: int | None = None  # keep only this many training images (after the split); None all
    synthetic_size: int = 1000  # synthetic: images in the train split (test gets a fifth)
    synthetic_classes: int = 10  # synthetic: number of classes
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


@dataclass(frozen=True)
class TensorData:
    images: torch.Tensor  # uint8, (N, 3, H, W), CPU, contiguous
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Splits:
    train: TensorData
    val: TensorData
    test: TensorData
    classes: tuple[str, ...]
    mean: tuple[float, float, float]  # per channel, of pixel values scaled to [0, 1]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def load_splits(config: DataConfig) -> Splits:
    """Load `config.dataset` into memory and split it; raises DataError for user mistakes."""
    fixed_stats = None
    if config.dataset in ("cifar10", "cifar100"):
        train, test, classes = _load_cifar(config)
        if config.dataset == "cifar10" and config.image_size == 32:
            fixed_stats = (CIFAR10_MEAN, CIFAR10_STD)
    elif config.dataset == "imagefolder":
        train, test, classes = _load_image_folder(config)
    else:
        train, test, classes = _make_synthetic(config)
    return _split(config, train, test, classes, fixed_stats)


def _split(
    config: DataConfig,
    train_all: TensorData,
    test: TensorData,
    classes: tuple[str, ...],
    fixed_stats: tuple | None,
) -> Splits:
    count = len(train_all)
    val_count = round(count * config.val_fraction)
    if val_count < 1 or val_count >= count:
        raise DataError(
            f"A validation fraction of {config.val_fraction} of {count} training images leaves "
            "an empty train or validation split: use more images or a different val_fraction."
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(config.split_seed))
    val_indices, train_indices = order[:val_count], order[val_count:]
    train = _take(train_all, train_indices)
    mean, std = fixed_stats or _channel_mean_std(train.images)
    if config.subset is not None and config.subset < len(train):
        train = _take(train, torch.arange(config.subset))  # first N of the permuted train indices
    return Splits(
        train=train,
        val=_take(train_all, val_indices),
        test=test,
        classes=classes,
        mean=mean,
        std=std,
    )


def _take(data: TensorData, indices: torch.Tensor) -> TensorData:
    return TensorData(images=data.images[indices].contiguous(), labels=data.labels[indices])


def _channel_mean_std(images: torch.Tensor) -> tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], in chunks to bound memory."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(4096):
        values = chunk.to(torch.float64).div_(255.0)
        total += values.sum(dim=(0, 2, 3))
        total_sq += values.square().sum(dim=(0, 2, 3))
    pixels = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / pixels
    # A constant channel would make normalisation divide by zero; one grey level is the floor.
    std = (total_sq / pixels - mean.square()).clamp_min(0).sqrt().clamp_min(1 / 255)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = [
        F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in images.split(1024)
    ]
    return torch.cat(resized).contiguous()


def _load_cifar(config: DataConfig) -> tuple[TensorData, TensorData, tuple[str, ...]]:
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import (
        check_integrity,
        download_and_extract_archive,
        extract_archive,
    )

    spec = CIFAR10 if config.dataset == "cifar10" else CIFAR100
    name = "CIFAR-10" if config.dataset == "cifar10" else "CIFAR-100"
    root = Path(config.data_dir)
    folder = root / spec.base_folder
    archive = root / spec.filename
    where = f"put an intact {spec.filename} in {root} (or extracted, as {spec.base_folder}/)"
    files = [*spec.train_list, *spec.test_list, [spec.meta["filename"], spec.meta["md5"]]]

    if not all((folder / file_name).is_file() for file_name, _ in files):
        if archive.is_file():
            if config.verify and not check_integrity(str(archive), spec.tgz_md5):
                raise DataError(f"{archive} fails torchvision's MD5 check: {where}.")
            try:
                extract_archive(str(archive), str(root))
            except (OSError, tarfile.TarError, EOFError) as error:
                raise DataError(f"{archive} could not be extracted ({error}): {where}.") from error
        elif config.download:
            try:
                download_and_extract_archive(
                    spec.url, str(root), filename=spec.filename, md5=spec.tgz_md5
                )
            except (OSError, RuntimeError, tarfile.TarError, EOFError) as error:
                raise DataError(
                    f"{name} could not be downloaded into {root} ({error}): {where}."
                ) from error
        else:
            raise DataError(f"{name} was not found in {root}: {where}, or allow the download.")
        missing = [file_name for file_name, _ in files if not (folder / file_name).is_file()]
        if missing:
            raise DataError(f"{folder} lacks {', '.join(missing)}: {where}.")

    if config.verify:
        failing = [n for n, md5 in files if not check_integrity(str(folder / n), md5)]
        if failing:
            raise DataError(
                f"{name} file(s) {', '.join(failing)} in {folder} fail torchvision's MD5 check: "
                f"{where}, or turn off verification to use the files as they are."
            )

    meta_path = folder / spec.meta["filename"]
    classes = tuple(str(c) for c in _read_pickle(meta_path, where).get(spec.meta["key"], ()))
    if not classes:
        raise DataError(f"{meta_path} has no {spec.meta['key']!r}: {where}.")
    train = _read_cifar_batches([folder / n for n, _ in spec.train_list], len(classes), where)
    test = _read_cifar_batches([folder / n for n, _ in spec.test_list], len(classes), where)
    resized = (
        TensorData(_resize_uint8(part.images, config.image_size), part.labels)
        for part in (train, test)
    )
    return (*resized, classes)


def _read_pickle(path: Path, where: str) -> dict:
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError) as error:
        raise DataError(f"{path} could not be read ({error}): {where}.") from error
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR pickle (not a dict): {where}.")
    return entry


def _read_cifar_batches(paths: list[Path], num_classes: int, where: str) -> TensorData:
    images, labels = [], []
    for path in paths:
        entry = _read_pickle(path, where)
        data = np.asarray(entry.get("data"))
        batch_labels = entry.get("labels", entry.get("fine_labels"))
        shape_ok = data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
        if not shape_ok or batch_labels is None or len(batch_labels) != data.shape[0]:
            raise DataError(f"{path} does not hold CIFAR images and labels: {where}.")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        labels.append(torch.as_tensor(batch_labels, dtype=torch.int64))
    all_labels = torch.cat(labels)
    if all_labels.numel() and not 0 <= int(all_labels.min()) <= int(all_labels.max()) < num_classes:
        raise DataError(f"Labels in {paths[0].parent} exceed the {num_classes} classes: {where}.")
    return TensorData(images=torch.cat(images).contiguous(), labels=all_labels)


def _load_image_folder(config: DataConfig) -> tuple[TensorData, TensorData, tuple[str, ...]]:
    root = Path(config.data_dir)
    layout = "train/<class>/<image> and test/<class>/<image>"
    folders = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"Image folder {folder} does not exist: {root} must hold {layout}.")
        folders[split] = {
            path.name: path
            for path in sorted(folder.iterdir())
            if path.is_dir() and not path.name.startswith(".")
        }
    classes = tuple(folders["train"])
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders: {root} must hold {layout}.")
    if set(folders["test"]) != set(classes):
        only_train = sorted(set(classes) - set(folders["test"]))
        only_test = sorted(set(folders["test"]) - set(classes))
        raise DataError(
            f"The class folders of {root / 'test'} differ from those of {root / 'train'} "
            f"(only in train: {only_train}, only in test: {only_test}): give both the same classes."
        )
    train = _read_image_split(folders["train"], classes, config.image_size)
    test = _read_image_split(folders["test"], classes, config.image_size)
    return train, test, classes


def _read_image_split(
    class_folders: dict[str, Path], classes: tuple[str, ...], size: int
) -> TensorData:
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = [
            path
            for path in sorted(class_folders[name].iterdir())
            if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
        ]
        if not files:
            raise DataError(
                f"Class folder {class_folders[name]} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}): add some or remove the folder."
            )
        paths += files
        labels += [label] * len(files)
    # Decoding releases the GIL, so a few threads speed it up without worker processes.
    with ThreadPoolExecutor(max_workers=min(8, _cpu_count())) as pool:
        arrays = list(pool.map(lambda path: _read_image(path, size), paths))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return TensorData(images=images, labels=torch.tensor(labels, dtype=torch.int64))


def _read_image(path: Path, size: int) -> np.ndarray:
    """One image as an RGB uint8 (size, size, 3) array: plain bilinear resize to a square."""
    try:
        with Image.open(path) as image:
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # PIL asks for this route for palette transparency
            rgb = image.convert("RGB")  # drops alpha, like torchvision's ImageFolder loader
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(
            f"{path} could not be read as an image ({error}): fix or remove it."
        ) from error


def _make_synthetic(config: DataConfig) -> tuple[TensorData, TensorData, tuple[str, ...]]:
    """Each class is a fixed random low-frequency colour pattern; each image is its class's
    pattern, circularly shifted by a few pixels, with a random brightness offset and pixel noise.
    Mean colour and layout both carry the class, so a tiny CNN learns it in a few epochs."""
    generator = torch.Generator().manual_seed(config.split_seed)
    size, num_classes = config.image_size, config.synthetic_classes
    coarse = torch.randn(num_classes, 3, 4, 4, generator=generator)
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    train = _synthetic_images(patterns, config.synthetic_size, generator)
    test = _synthetic_images(patterns, max(1, config.synthetic_size // 5), generator)
    return train, test, tuple(f"class_{index}" for index in range(num_classes))


def _synthetic_images(patterns: torch.Tensor, count: int, generator: torch.Generator) -> TensorData:
    num_classes, _, size, _ = patterns.shape
    # Balanced labels: every class count // classes or one more times, in random order.
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
    max_shift = max(1, size // 8)
    shift_y = torch.randint(-max_shift, max_shift + 1, (count,), generator=generator)
    shift_x = torch.randint(-max_shift, max_shift + 1, (count,), generator=generator)
    positions = torch.arange(size)
    rows = (positions[None, :] - shift_y[:, None]) % size  # (count, size)
    cols = (positions[None, :] - shift_x[:, None]) % size
    chunks = []
    for start in range(0, count, 4096):  # bounds the float memory for large synthetic_size
        end = min(count, start + 4096)
        images = patterns[labels[start:end]]
        index_rows = rows[start:end, None, :, None].expand(-1, 3, size, size)
        images = images.gather(2, index_rows)
        index_cols = cols[start:end, None, None, :].expand(-1, 3, size, size)
        images = images.gather(3, index_cols)
        brightness = 0.3 * torch.randn(end - start, 1, 1, 1, generator=generator)
        noise = 0.5 * torch.randn(images.shape, generator=generator)
        pixels = 128 + 45 * (images + brightness + noise)
        chunks.append(pixels.round_().clamp_(0, 255).to(torch.uint8))
    return TensorData(images=torch.cat(chunks).contiguous(), labels=labels)


class _TensorImageDataset(Dataset):
    """Images from a TensorData, each passed through `transform` (uint8 CHW -> float CHW)."""

    def __init__(self, data: TensorData, transform: Callable | None) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.data.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.data.labels[index]


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):  # respects container and taskset CPU limits
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers(device: torch.device) -> int:
    """Loader worker processes when the caller does not say."""
    cpus = _cpu_count()
    if device.type == "cuda":
        # The GPU waits on per-image augmentation: use the cores, up to where returns flatten.
        return min(8, cpus)
    # On CPU the model's own threads need the cores; workers only pay off once two cores are left
    # for it, and with 32x32 images process start-up and batch pickling often cost more than they
    # save. So a 2-core machine loads in the main process.
    return min(2, max(0, cpus - 2))


def make_train_loader(
    data: TensorData,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
    batch_size: int,
    *,
    device: torch.device,
    workers: int | None,
    seed: int,
) -> DataLoader:
    """A shuffling loader over `data`; the epoch order (and worker seeds) follow from `seed`.

    `transform` maps one uint8 CHW image to a float CHW tensor; None yields the uint8 image.
    """
    if batch_size < 1:
        raise DataError(f"The batch size must be at least 1, got {batch_size}.")
    if workers is not None and workers < 0:
        raise DataError(f"The number of loader workers must be 0 or more, got {workers}.")
    device = torch.device(device)
    num_workers = default_workers(device) if workers is None else workers
    return DataLoader(
        _TensorImageDataset(data, transform),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
        persistent_workers=num_workers > 0,  # keep workers between epochs: no restart per epoch
    )
