"""Owns where each epoch's training batches come from, and the memory layout they come in.

Claims:
- `make_batches` picks the source named by `TrainConfig.data_path`: `auto` means `device`, the
  batched path, on any device (on CPU several times cheaper than per-image transforms, see
  benchmarks/RESULTS.md); `loader` keeps the per-image DataLoader path (the reference's).
- `device` (`DeviceBatches`): the train split held as uint8 where the model is and augmented
  there in chunks of about `DEVICE_CHUNK` images with per-image draws; memory stays at two chunks
  of float images whatever the split's size, with one host sync per chunk, none per batch.
- Each source yields every training image once per epoch, and the epoch's shuffle order and
  augmentation draws follow from the seed given to `epoch(seed)` (plus, on the loader path, the
  torch seed the trainer sets for the epoch), so a resumed run sees the same batches.
- Batches arrive on the device in `memory_format(config, device)`, the layout training and
  evaluation use: NHWC on CUDA, contiguous on the CPU, unless `TrainConfig.channels_last` says.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from nas.augment import BatchAugmenter, train_transform
from nas.data import Splits, TensorData, make_train_loader

if TYPE_CHECKING:
    from nas.train import TrainConfig

DATA_PATHS = ("auto", "device", "loader")
DEVICE_CHUNK = 8192  # images augmented at once on the device path: large enough to fill a GPU


def memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    """The layout training and evaluation use: see `TrainConfig.channels_last`."""
    nhwc = config.channels_last if config.channels_last is not None else device.type == "cuda"
    return torch.channels_last if nhwc else torch.contiguous_format


class DeviceBatches:
    """The train split lives on the device as uint8; each epoch is shuffled and augmented there
    in large chunks, and batches are slices of a chunk: no loader processes, no per-batch copies.

    Chunks hold a whole number of batches and are augmented one ahead of the batches being
    trained on, so memory stays at two chunks of float images whatever the split's size, and
    the augmentation's one host sync per chunk finds the device queue nearly drained."""

    def __init__(self, data: TensorData, config: TrainConfig, splits: Splits, device):
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.augmenter = BatchAugmenter(config.augment, splits.mean, splits.std)
        self.batch_size = config.batch_size
        self.chunk = config.batch_size * max(1, DEVICE_CHUNK // config.batch_size)
        self.layout = memory_format(config, device)
        self.device = device

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def _augment(self, indices: torch.Tensor, generator: torch.Generator):
        images = self.augmenter(self.images[indices], generator)
        return images.contiguous(memory_format=self.layout), self.labels[indices]

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        order = torch.randperm(len(self.labels), generator=generator, device=self.device)
        pieces = order.split(self.chunk)
        ahead = self._augment(pieces[0], generator) if pieces else None
        for index in range(len(pieces)):
            images, labels = ahead
            # the generator draws chunk after chunk in order, so the draws depend only on seed
            ahead = self._augment(pieces[index + 1], generator) if index + 1 < len(pieces) else None
            for start in range(0, len(labels), self.batch_size):
                yield (
                    images[start : start + self.batch_size],
                    labels[start : start + self.batch_size],
                )


class LoaderBatches:
    """Per-image torchvision transforms in a DataLoader (the CPU path, and the reference's)."""

    def __init__(self, data: TensorData, config: TrainConfig, splits: Splits, device):
        transform = train_transform(config.augment, splits.mean, splits.std)
        self.loader = make_train_loader(
            data,
            transform,
            config.batch_size,
            device=device,
            workers=config.workers,
            seed=config.seed,
        )
        self.layout = memory_format(config, device)
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.loader.generator.manual_seed(seed)  # the shuffle order follows from (seed, epoch)
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield (
                images.contiguous(memory_format=self.layout),
                labels.to(self.device, non_blocking=True),
            )


def resolve_data_path(config: TrainConfig) -> str:
    """`auto` -> `device`: the batched path is the faster one on CUDA and on CPU alike (see
    benchmarks/RESULTS.md); `loader` keeps the per-image DataLoader path selectable."""
    return "device" if config.data_path == "auto" else config.data_path


def make_batches(data: TensorData, config: TrainConfig, splits: Splits, device: torch.device):
    source = DeviceBatches if resolve_data_path(config) == "device" else LoaderBatches
    return source(data, config, splits, device)
