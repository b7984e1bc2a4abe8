"""Owns where each epoch's training batches come from, and the memory layout they come in.

Claims:
- `make_batches` picks the source named by `Machine.data_path`: `auto` means `device`, the
  batched path, on any device (on CPU several times cheaper than per-image transforms, see
  benchmarks/RESULTS.md); `loader` keeps the per-image DataLoader path (the reference's).
- `device` (`DeviceBatches`): the split is augmented on the device in chunks with per-image
  draws; memory stays at two chunks of float images whatever the split's size, with one host
  sync per chunk, none per batch. Where the split lives and the chunk's size are
  `nas.data.device_memory.plan_data`'s decision from the device's free bytes: held as uint8 on the
  device when it fits, else kept in host memory and uploaded per chunk (through pinned memory
  on CUDA), with the same batches for the same seed either way. `describe()` is the one line
  saying which path it took (`data_path_line` without building it); `fit` prints it when it
  shows progress, and a search in one process announces it once.
- Evaluation batches are `eval_batch_size`: the configured size at most, fewer where the
  device's free bytes say so (`nas.data.device_memory.eval_batch_images`).
- Each source yields every training image once per epoch, and the epoch's shuffle order and
  augmentation draws follow from the seed given to `epoch(seed)` alone, so a resumed run sees
  the same batches. On the loader path each batch carries its own seed, drawn from the epoch's
  seed with the shuffle, and its images are transformed under it (in whichever worker process
  gets the batch, persistent or not); so the batches do not depend on the number of workers,
  on which worker takes which batch, or on what the workers did in earlier epochs.
- Both paths apply `Recipe.augment` with its AutoAugment `policy` and `flip` setting.
- Batches arrive on the device in `memory_format(machine, device)`, the layout training and
  evaluation use: NHWC on CUDA, contiguous on the CPU, unless `Machine.channels_last` says.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nas.arch.architecture import Architecture
from nas.config.machine import Machine, channels_last_on
from nas.config.recipe import Recipe
from nas.data.augment import BatchAugmenter, train_transform
from nas.data.device_memory import (
    FLOAT_BYTES,
    DataPlan,
    eval_batch_images,
    free_bytes,
    pin,
    plan_data,
    widest_activation_floats,
)
from nas.data.loading import Splits, TensorData, default_workers
from nas.errors import DataError

# float copies of an image the batched augmentation holds at its peak: the sampling grid
# (about 2.3 for 3 channels), the float input, the sampled output, the normalised result and its
# copy in the training layout
AUGMENT_FLOAT_COPIES = 6


def memory_format(machine: Machine, device: torch.device) -> torch.memory_format:
    """The layout training and evaluation use: see `Machine.channels_last`."""
    nhwc = machine.channels_last
    if nhwc is None:  # fp32 below compute 8.0 stays NCHW (`channels_last_on`)
        fp32_cuda = machine.precision == "fp32" and device.type == "cuda"
        capability = torch.cuda.get_device_capability(device) if fp32_cuda else None
        nhwc = channels_last_on(device.type, machine.precision, capability)
    return torch.channels_last if nhwc else torch.contiguous_format


def data_plan(data: TensorData, recipe: Recipe, machine: Machine, device: torch.device) -> DataPlan:
    """Where the train split lives on `device` and its chunk size, from the free bytes there."""
    image_bytes = math.prod(data.images.shape[1:])
    augment_bytes = image_bytes * FLOAT_BYTES * AUGMENT_FLOAT_COPIES
    return plan_data(
        free_bytes(device), len(data), image_bytes, augment_bytes, recipe.batch_size,
        machine.chunk_size,
    )  # fmt: skip


def eval_batch_size(
    machine: Machine, data: TensorData, device: torch.device, arch: Architecture | None = None
) -> int:
    """Images per evaluation batch on `device`: `machine.eval_batch_size` where memory allows
    (sized from `arch`'s widest activation; without it, from the image alone)."""
    floats = math.prod(data.images.shape[1:])
    widest = None if arch is None else widest_activation_floats(arch, data.images.shape[-1])
    return eval_batch_images(free_bytes(device), floats, machine.eval_batch_size, widest)


class DeviceBatches:
    """Each epoch is shuffled and augmented on the device in large chunks, and batches are
    slices of a chunk: no loader processes, no per-batch copies. The split lives on the device
    as uint8 when `plan` says it fits (default: `data_plan`), else in host memory, each chunk's
    images gathered there and uploaded; labels always live on the device (8 bytes an image).

    Chunks hold a whole number of batches and are augmented one ahead of the batches being
    trained on, so memory stays at two chunks of float images whatever the split's size, and
    the augmentation's one host sync per chunk finds the device queue nearly drained."""

    def __init__(
        self,
        data: TensorData,
        recipe: Recipe,
        machine: Machine,
        splits: Splits,
        device,
        plan: DataPlan | None = None,
    ):
        plan = plan or data_plan(data, recipe, machine, device)
        self.resident = plan.resident
        self.pinned = not plan.resident and device.type == "cuda"  # page-locked: async uploads
        self.images = data.images.to(device) if plan.resident else data.images
        self.labels = data.labels.to(device)
        self.augmenter = BatchAugmenter(
            recipe.augment, splits.mean, splits.std, policy=recipe.policy, flip=recipe.flip
        )
        self.batch_size = recipe.batch_size
        self.chunk = plan.chunk
        self.layout = memory_format(machine, device)
        self.device = device
        self.description = _device_line(data, plan, device)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def describe(self) -> str:
        """`data: 45,000 images (138 MB) on cuda:0, augmented in chunks of 8,192`, or where the
        split stayed on the host and why."""
        return self.description

    def _augment(self, indices: torch.Tensor, on_host: torch.Tensor | None, generator):
        """One chunk: `indices` on the device; `on_host`, the same on the host (host path)."""
        if on_host is None:
            images = self.images[indices]
        else:  # gather on the host, upload the chunk (the shuffle and draws stay the device's)
            images = self.images[on_host]
            if self.pinned:
                images = pin(images)  # torch's pinned cache: reused, safe across copies
            images = images.to(self.device, non_blocking=True)
        images = self.augmenter(images, generator)
        return images.contiguous(memory_format=self.layout), self.labels[indices]

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        order = torch.randperm(len(self.labels), generator=generator, device=self.device)
        pieces = order.split(self.chunk)
        # the host path gathers on the host: its copy of the order comes over once per epoch
        # (when the last epoch's evaluation has drained the queue), not once per chunk
        host = [None] * len(pieces) if self.resident else order.cpu().split(self.chunk)
        ahead = self._augment(pieces[0], host[0], generator) if pieces else None
        for index in range(len(pieces)):
            images, labels = ahead
            # the generator draws chunk after chunk in order, so the draws depend only on seed
            ahead = None
            if index + 1 < len(pieces):
                ahead = self._augment(pieces[index + 1], host[index + 1], generator)
            for start in range(0, len(labels), self.batch_size):
                yield (
                    images[start : start + self.batch_size],
                    labels[start : start + self.batch_size],
                )


SeededBatch = tuple[int, list[int]]  # (the batch's seed, its images' indices)


class SeededBatchSampler(Sampler[SeededBatch]):
    """The batches of one epoch: a shuffle of the split cut into batches, each with a seed, all
    drawn from one generator seeded with the epoch's seed (`set_seed`, before iterating)."""

    def __init__(self, count: int, batch_size: int) -> None:
        self.count = count
        self.batch_size = batch_size
        self.seed = 0

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def __iter__(self) -> Iterator[SeededBatch]:
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(self.count, generator=generator).tolist()
        seeds = torch.randint(0, 2**62, (len(self),), generator=generator).tolist()
        for number, start in enumerate(range(0, self.count, self.batch_size)):
            yield seeds[number], order[start : start + self.batch_size]


class SeededTransformedBatches(Dataset):
    """Maps a `SeededBatch` to (images, labels): each image goes through `transform` (uint8
    CHW -> float CHW, drawing from torch's global generator), which is seeded with the batch's
    seed for the batch and given back its previous state afterwards."""

    def __init__(self, data: TensorData, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, batch: SeededBatch) -> tuple[torch.Tensor, torch.Tensor]:
        seed, indices = batch
        with torch.random.fork_rng(devices=[]):  # the caller's CPU generator state comes back
            torch.default_generator.manual_seed(seed)  # the CPU generator only, not CUDA's
            images = torch.stack([self.transform(self.data.images[i]) for i in indices])
        return images, self.data.labels[indices]


class LoaderBatches:
    """Per-image torchvision transforms in a DataLoader (the CPU path, and the reference's).

    Workers persist between epochs (no process start per epoch); what they produce follows from
    the epoch's seed alone through each batch's seed (`SeededBatchSampler`)."""

    def __init__(self, data: TensorData, recipe: Recipe, machine: Machine, splits: Splits, device):
        if machine.workers is not None and machine.workers < 0:
            raise DataError(
                f"The number of loader workers must be 0 or more, got {machine.workers}."
            )
        transform = train_transform(
            recipe.augment, splits.mean, splits.std, policy=recipe.policy, flip=recipe.flip
        )
        workers = default_workers(device) if machine.workers is None else machine.workers
        self.sampler = SeededBatchSampler(len(data), recipe.batch_size)
        self.loader = DataLoader(
            SeededTransformedBatches(data, transform),
            batch_size=None,  # the sampler hands over whole batches; the dataset stacks them
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
            persistent_workers=workers > 0,  # keep workers between epochs: no restart per epoch
            generator=torch.Generator(),  # the workers' base seed: not torch's global generator
        )
        self.layout = memory_format(machine, device)
        self.device = device
        self.description = _loader_line(len(data), workers, device)

    def __len__(self) -> int:
        return len(self.sampler)

    def describe(self) -> str:
        return self.description

    def epoch(self, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.set_seed(seed)  # read when the loader starts the epoch's iteration
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            yield (
                images.contiguous(memory_format=self.layout),
                labels.to(self.device, non_blocking=True),
            )


def resolve_data_path(machine: Machine) -> str:
    """`auto` -> `device`: the batched path is the faster one on CUDA and on CPU alike (see
    benchmarks/RESULTS.md); `loader` keeps the per-image DataLoader path selectable."""
    return "device" if machine.data_path == "auto" else machine.data_path


def data_path_line(data: TensorData, recipe: Recipe, machine: Machine, device: torch.device) -> str:
    """The line `make_batches(data, recipe, machine, ...).describe()` would give, without
    building the source (a search announces it once; each trial's plan reads the free bytes
    of its own moment)."""
    if resolve_data_path(machine) == "device":
        return _device_line(data, data_plan(data, recipe, machine, device), device)
    workers = default_workers(device) if machine.workers is None else machine.workers
    return _loader_line(len(data), workers, device)


def _device_line(data: TensorData, plan: DataPlan, device: torch.device) -> str:
    image_bytes = math.prod(data.images.shape[1:])
    pinned = not plan.resident and device.type == "cuda"
    return plan.describe(len(data), image_bytes, str(device), pinned)


def _loader_line(count: int, workers: int, device: torch.device) -> str:
    processes = f"{workers} loader process{'es' if workers != 1 else ''}"
    return (
        f"data: {count:,} images in host memory, transformed per image by {processes}, "
        f"each batch uploaded to {device}"
    )


def make_batches(
    data: TensorData, recipe: Recipe, machine: Machine, splits: Splits, device: torch.device
):
    source = DeviceBatches if resolve_data_path(machine) == "device" else LoaderBatches
    return source(data, recipe, machine, splits, device)
