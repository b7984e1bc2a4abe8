"""What exact resume costs the per-image loader path: seconds per epoch of three loaders.

(a) `plain`: a plain shuffling DataLoader over per-image transforms (persistent workers,
    default batching): the loader path before issue 13 (`nas.data.loading.make_train_loader`, since
    removed), whose worker streams and later shuffles did not follow from the seed;
(b) `seeded`: `nas.data.batches.LoaderBatches` (persistent workers; each batch carries its own seed
    and its images are transformed under it): the loader path now;
(c) `restarted`: (a) with non-persistent workers (a process start per epoch), the other way to
    make workers follow the epoch's seed, for comparison.
All run `train_transform("recipe")` over N random 32x32 uint8 images, batch 64, and only iterate
(no training); the loaders take turns epoch by epoch so machine load hits them alike. Prints the
median seconds per epoch of each after a warm-up epoch (the workers' first start).
Not a test; run it by hand: python benchmarks/bench_loader.py --images 4096 --workers 2

Results (2-core AMD EPYC shared with other jobs, load average ~6, torch 2.14.1 CPU, 2026-11-25;
per-epoch spread +-1 s, so the three are within noise of one another):
  --images 2048 --epochs 5: plain 9.93 s, seeded 9.37 s, restarted 9.32 s per epoch (median)
  --images 1024 --epochs 6: plain 2.51 s, seeded 2.64 s, restarted 3.03 s per epoch (median)
What seeding adds per batch is one save, reseed and restore of torch's CPU generator: 27 us
against ~270 ms of per-image transforms for a batch of 64 on the same machine (timeit).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset

from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.batches import LoaderBatches
from nas.data.loading import Splits, TensorData

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class PerImage(Dataset):
    """Each image of `data` through `transform`: what the plain loader batches."""

    def __init__(self, data: TensorData, transform) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.transform(self.data.images[index]), self.data.labels[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    data = TensorData(images, torch.randint(0, 10, (args.images,), generator=generator))
    splits = Splits(data, data, data, tuple("0123456789"), CIFAR10_MEAN, CIFAR10_STD)
    cpu = torch.device("cpu")
    machine = Machine(data_path="loader", workers=args.workers, device="cpu")
    seeded = LoaderBatches(data, Recipe(), machine, splits, cpu)
    per_image = PerImage(data, seeded.loader.dataset.transform)
    plain, restarted = (
        DataLoader(
            per_image,
            batch_size=64,
            shuffle=True,
            num_workers=args.workers,
            generator=torch.Generator().manual_seed(0),
            persistent_workers=persistent,
        )  # fmt: skip
        for persistent in (args.workers > 0, False)
    )
    epochs = {
        "plain": lambda seed: iter(plain),
        "seeded": seeded.epoch,
        "restarted": lambda seed: iter(restarted),
    }
    seconds: dict[str, list[float]] = {name: [] for name in epochs}
    for epoch in range(args.epochs + 1):  # epoch 0 warms up (starts the persistent workers)
        for name, run in epochs.items():
            started = time.perf_counter()
            for _ in run(epoch):
                pass
            if epoch:
                seconds[name].append(time.perf_counter() - started)
    torch_threads = torch.get_num_threads()
    print(f"{args.images} images, {args.workers} workers, torch threads {torch_threads}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(
            f"{name:>9}: {median:.3f} s per epoch (median of {len(values)}), "
            f"{args.images / median:,.0f} images/s; all: {', '.join(f'{v:.2f}' for v in values)}"
        )


if __name__ == "__main__":
    main()
