"""Throughput of the recipe's augmentation: per-image DataLoader path vs BatchAugmenter.

(a) `train_transform("recipe")` applied per image by a torch DataLoader (batch 64, like the
reference training) over N random CIFAR-sized uint8 images; (b) `BatchAugmenter("recipe")` on
the same images in large chunks on `--device`. Prints images/s of each and their ratio.
Not a test; run it by hand: python benchmarks/bench_augment.py --device cpu --images 20000
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader, Dataset

from nas.config.machine import usable_cpus
from nas.data.augment import BatchAugmenter, train_transform

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class TransformedImages(Dataset):
    """uint8 images with the per-image transform applied on access (what a DataLoader sees)."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.images[index])


def per_image_rate(images: torch.Tensor, workers: int, batch_size: int, device: str) -> float:
    dataset = TransformedImages(images, train_transform("recipe", CIFAR10_MEAN, CIFAR10_STD))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    for batch in loader:
        batch.to(device)  # the batch has to reach the device for training either way
    if device == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def batched_rate(images: torch.Tensor, chunk: int, device: str) -> float:
    augmenter = BatchAugmenter("recipe", CIFAR10_MEAN, CIFAR10_STD)
    on_device = images.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    augmenter(on_device[:chunk], generator)  # warm-up: allocator, kernels, table
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for first in range(0, len(on_device), chunk):
        augmenter(on_device[first : first + chunk], generator)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--images", type=int, default=20_000, help="number of 32x32 images")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (reference: 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="per-image path batch size")
    parser.add_argument("--chunk", type=int, default=10_000, help="images per batched call")
    # best of several runs, since other processes on a shared machine can slow any single run
    parser.add_argument("--repeats", type=int, default=1, help="runs of each path; best is kept")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other processes skew both figures
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    per_image = max(
        per_image_rate(images, args.workers, args.batch_size, args.device)
        for _ in range(args.repeats)
    )
    batched = max(batched_rate(images, args.chunk, args.device) for _ in range(args.repeats))
    print(
        f"device={args.device} images={args.images} repeats={args.repeats} "
        f"torch_threads={torch.get_num_threads()} cpus={usable_cpus()} "
        f"load_average_1min_before={load_before:.2f}"
    )
    print(f"per-image DataLoader ({args.workers} workers): {per_image:,.0f} images/s")
    print(f"BatchAugmenter (chunks of {args.chunk}): {batched:,.0f} images/s")
    print(f"ratio batched/per-image: {batched / per_image:.1f}x")


if __name__ == "__main__":
    main()
