"""Owns the data: the fixed validation split, normalisation, the image size a run trains at when
none is given, and how many loader workers a device gets (the loaders are `nas.data.batches`);
each dataset's facts are its row in `nas.config.data.DATASET_TABLE`, its reading
`nas.data.readers`, its counts `nas.data.counting`.

What this module claims:

- `load_splits(config)` returns train / val / test as in-memory uint8 tensors (N, 3, S, S) at
  `config.image_size`, class names, and the per-channel mean/std used for normalisation. Each
  dataset is read from disk (or generated) by its row's reader in `nas.data.readers`, which says
  what it claims there.
- Owns the image size a run trains at when none is given (`choose_image_size`): the row's own
  size (32 px for CIFAR and the synthetic set); where the row leaves it to the data (an image
  folder), the smaller of its median width and height (the lower middle of an even count, so a
  size its images have), at most `MAX_CHOSEN_SIZE`; the line it returns names a folder's median
  size and the size chosen, and a dataset read from disk at another size than its own says it
  is resized, so no command resizes images without a word.
- A row with fixed statistics (CIFAR-10: the recipe's constants) is normalised with them at its
  own image size; every other dataset, and any at another size, with statistics computed from
  its training portion (after the validation split, before `subset`, so trimming the data for a
  quick search does not change the normalisation).
- The validation split is a permutation seeded by `split_seed`: the same for every trial and the
  retrain; the test split is a separate set and never part of it.
- Every mistake a user can make (missing or corrupt files, bad settings) is a
  `nas.errors.DataError` whose message is one sentence saying how to fix it.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from nas.config.data import DATASET_TABLE, DataConfig, SplitSizes
from nas.config.machine import available_memory, usable_cpus
from nas.data.counting import COUNTERS, split_sizes
from nas.data.counting import class_count as class_count  # the search's check before loading
from nas.data.readers import read_dataset
from nas.errors import DataError


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


MAX_CHOSEN_SIZE = 224  # a folder of larger photos trains at 224 px unless --image-size says more


def choose_image_size(config: DataConfig) -> tuple[DataConfig, str | None]:
    """`config` with the image size it trains at, and the one line that says it where the
    images are resized (None where they are not): `image_size` None means the dataset's own
    size, CIFAR's and the synthetic set's 32 px, an image folder's median side (the smaller of
    the median width and height, the lower middle of an even count: a size its images have)
    up to `MAX_CHOSEN_SIZE`. An image folder is always named with its median size, so no
    image is resized without a word."""
    size, row = config.image_size, DATASET_TABLE[config.dataset]
    if row.image_size is None:  # the data decides: an image folder's median side
        sizes, files = COUNTERS[row.reader].image_sizes(Path(config.data_dir))
        width = statistics.median_low(w for w, _ in sizes)
        height = statistics.median_low(h for _, h in sizes)
        found = f"{files:,} files" if files == len(sizes) else f"{len(sizes):,} of {files:,} files"
        line = f"images: median {width}x{height} px in {found}; "
        if size is None:
            size = min(width, height, MAX_CHOSEN_SIZE)
            capped = "the most it picks by itself; " if size < min(width, height) else ""
            line += f"training at {size} px ({capped}use --image-size to change)"
        else:  # given by --image-size, or by the study a retrain takes its data from
            line += f"training at {size} px"
        return dataclasses.replace(config, image_size=size), line
    if size is None:
        return dataclasses.replace(config, image_size=row.image_size), None
    if not row.generated and size != row.image_size:
        native = row.image_size
        return config, f"images: {row.title}'s {native}x{native} px resized to {size} px"
    return config, None


def load_splits(config: DataConfig) -> Splits:
    """Load `config.dataset` into memory and split it; raises DataError for user mistakes.
    An `image_size` of None is chosen as `choose_image_size` does."""
    if config.image_size is None:
        config, _ = choose_image_size(config)
    check_memory(config, available_memory())
    train, test, classes = read_dataset(config)
    row = DATASET_TABLE[config.dataset]
    fixed_stats = None
    if row.mean is not None and config.image_size == row.image_size:
        fixed_stats = (row.mean, row.std)
    return _split(config, TensorData(*train), TensorData(*test), classes, fixed_stats)


def loading_peak_bytes(sizes: SplitSizes, image_size: int) -> int:
    """Host bytes `load_splits` holds at its peak: every image at `image_size` (uint8, 3
    channels) twice over for the training part (read, then its train and validation copies;
    a resize likewise holds its chunks and their concatenation) and once for the test part."""
    return (2 * sizes.train + sizes.test) * 3 * image_size * image_size


def check_memory(config: DataConfig, available: int | None) -> None:
    """Refuse, before a pixel is read, an image size whose images the memory cannot hold: one
    sentence with the figures; nothing where the platform does not say what is available."""
    sizes = split_sizes(config)
    if available is None or sizes is None or config.image_size is None:
        return
    needed = loading_peak_bytes(sizes, config.image_size)
    if needed > available:
        side = config.image_size
        raise DataError(
            f"at --image-size {side} the {sizes.train + sizes.test:,} images need about "
            f"{_size(needed)} of memory to load ({side}x{side} px, 3 bytes each, and the "
            f"splits' copies), more than the {_size(available)} available: use a smaller "
            "--image-size"
        )


def _size(count: int) -> str:
    """`840 MB`, `15.1 GB`: memory as the sentence above says it."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


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


def default_workers(device: torch.device) -> int:
    """Loader worker processes when the caller does not say."""
    cpus = usable_cpus()
    if device.type == "cuda":
        # The GPU waits on per-image augmentation: use the cores, up to where returns flatten.
        return min(8, cpus)
    # On CPU the model's own threads need the cores; workers only pay off once two cores are left
    # for it, and with 32x32 images process start-up and batch pickling often cost more than they
    # save. So a 2-core machine loads in the main process.
    return min(2, max(0, cpus - 2))
