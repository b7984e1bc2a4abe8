"""Seconds per training epoch: the reference study's plain loop vs our trainer `nas.train.fit.fit`.

(a) The reference: a faithful copy of the study's plain PyTorch loop. Images are PIL images
(as torchvision's CIFAR10 dataset hands them out) through torchvision's per-image transforms
RandomRotation(5), RandomHorizontalFlip, RandomCrop(32, padding=2), AutoAugment(CIFAR10),
ToTensor, Normalize, in a DataLoader with `--workers` processes (the study: 2), batch 64,
Adam 1e-3, ReduceLROnPlateau on the validation loss, float32, the model in the default memory
format, `.item()` after every step for the running loss and accuracy, a validation pass every
epoch, a deep copy of the best weights.
(b) Ours: `nas.train.fit.fit` with the default `Recipe` for the device (auto data path; on
CUDA the precision `nas.train.precision` picks and channels_last), same architecture, same data,
same number of epochs.
(c) The floor: the same model's training steps (`nas.train.step.TrainingStep`: the recipe's
optimizer, precision and memory layout, batch 64) on tensors augmented and normalised once,
before the clock starts, already in memory where the model is, plus the validation forward
pass: no data work at all. Ours minus the floor is what our epoch spends on data
(augmentation, shuffling, normalisation) and bookkeeping, the most a faster data path could
still save.

Both train the same architecture from the same initial weights on the same in-memory data
(synthetic, made by `nas.data.loading`, no download; or CIFAR-10 with `--dataset cifar10`).
Epoch 1 is warm-up (DataLoader start, allocator, cuDNN autotuning, compilation) and is reported
apart; the figures are the mean of the later epochs. Epoch seconds include the validation pass.
Not a test; run it by hand, e.g.
    python benchmarks/bench_epoch.py --device cpu --images 2000 --epochs 3 --threads 1
    python benchmarks/bench_epoch.py --device cuda --arch paper-model1 --dataset cifar10
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import time

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.arch.presets import PRESETS
from nas.config.data import DataConfig
from nas.config.machine import Machine, usable_cpus
from nas.config.recipe import Recipe
from nas.data.augment import BatchAugmenter, normalize_batch
from nas.data.batches import memory_format
from nas.data.loading import Splits, TensorData, load_splits
from nas.train.devices import resolve_device
from nas.train.fit import fit, set_seed
from nas.train.model import build_model
from nas.train.optimizer import make_optimizer
from nas.train.precision import cudnn_autotuning, precision_for
from nas.train.step import TrainingStep, float_logits

# On CPU paper-model1 (4.7 GFLOP per image trained: 3 x 2 x its 784M MACs) trains at a few
# images/s on a small machine,
# so the CPU default is a narrow member of the same family (4 layers, 3x3 kernels and skips).
CPU_ARCH = Architecture((16, 32, 32, 64), (1, 1, 1, 1), conv_kernel=3, skip_kernel=3, stem=16)
CUDA_ARCH = "paper-model1"


class PILImages(Dataset):
    """What torchvision's CIFAR10 dataset does: an HWC uint8 array -> PIL image -> transform."""

    def __init__(self, data: TensorData, transform) -> None:
        self.images = data.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def reference_epochs(model, splits: Splits, epochs: int, workers: int, device):
    """The study's plain loop; returns the wall seconds of each epoch (train + validation) and
    the best weights."""
    normalize = T.Normalize(splits.mean, splits.std)
    size = splits.image_shape[-1]
    train_transform = T.Compose(
        [
            T.RandomRotation(5),
            T.RandomHorizontalFlip(),
            T.RandomCrop(size, padding=2),
            T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
            T.ToTensor(),
            normalize,
        ]
    )
    val_transform = T.Compose([T.ToTensor(), normalize])
    train_loader = DataLoader(
        PILImages(splits.train, train_transform), batch_size=64, shuffle=True, num_workers=workers
    )
    val_loader = DataLoader(
        PILImages(splits.val, val_transform), batch_size=64, shuffle=False, num_workers=workers
    )
    model = model.to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min")
    best_loss, best_state = float("inf"), None
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        running_loss, correct, total = 0.0, 0, 0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * labels.size(0)
            correct += (outputs.argmax(1) == labels).sum().item()
            total += labels.size(0)
        model.eval()
        val_loss, val_correct, val_total = 0.0, 0, 0
        with torch.no_grad():
            for images, labels in val_loader:
                images, labels = images.to(device), labels.to(device)
                outputs = model(images)
                val_loss += criterion(outputs, labels).item() * labels.size(0)
                val_correct += (outputs.argmax(1) == labels).sum().item()
                val_total += labels.size(0)
        val_loss /= val_total
        scheduler.step(val_loss)
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds, best_state


def floor_epochs(
    model, splits: Splits, config: Recipe, machine: Machine, epochs: int, device
) -> list[float]:
    """The floor: wall seconds of each epoch of `model`'s training steps on tensors augmented
    (the recipe, batched, the same draws for every epoch) and normalised once beforehand,
    already on `device` in the training layout, plus the validation forward pass; the same
    optimizer, precision, training step and batch size as `fit`, and one host sync per epoch."""
    layout = memory_format(machine, device)
    augmenter = BatchAugmenter(config.augment, splits.mean, splits.std)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    images = splits.train.images.to(device)
    train = torch.cat(
        [augmenter(chunk, generator) for chunk in images.split(machine.chunk_size)]
    ).contiguous(memory_format=layout)
    labels = splits.train.labels.to(device)
    val = normalize_batch(splits.val.images.to(device), splits.mean, splits.std)
    val = val.contiguous(memory_format=layout)
    val_labels = splits.val.labels.to(device)
    model = model.to(device=device, memory_format=layout)
    precision = precision_for(machine.precision, device)
    step = TrainingStep(model, make_optimizer(model, config, device), precision)
    cuda = device.type == "cuda"
    seconds = []
    with cudnn_autotuning(cuda):  # as `fit` trains
        for _ in range(epochs):
            if cuda:
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=device)
            for start in range(0, len(labels), config.batch_size):
                batch = slice(start, start + config.batch_size)
                loss_sum += step(train[batch], labels[batch])[0]
            model.eval()
            with torch.no_grad():
                for start in range(0, len(val_labels), machine.eval_batch_size):
                    batch = slice(start, start + machine.eval_batch_size)
                    logits = float_logits(model, val[batch], precision)
                    loss_sum += F.cross_entropy(logits, val_labels[batch])
            loss_sum.item()  # the one host sync per epoch, as in `fit`
            seconds.append(time.perf_counter() - started)
    return seconds


def overhead_text(ours: float, floor: float) -> str:
    """Our epoch's overhead over the floor, in seconds and as a share of our epoch."""
    return (
        f"our overhead over the floor: {ours - floor:.2f} s/epoch "
        f"({(ours - floor) / ours:.0%} of our epoch; ours/floor {ours / floor:.2f})"
    )


def pick_arch(args) -> tuple[str, Architecture]:
    if args.channels:
        channels = tuple(int(c) for c in args.channels.split(","))
        blocks = (
            tuple(int(b) for b in args.blocks.split(",")) if args.blocks else (1,) * len(channels)
        )
        return "custom", Architecture(channels, blocks, 3, 3, stem=args.stem)
    name = args.arch or (CUDA_ARCH if args.device.startswith("cuda") else "cpu-small")
    if name == "cpu-small":
        return name, CPU_ARCH
    if name not in PRESETS:
        raise SystemExit(f"unknown --arch {name!r}; use cpu-small or one of {', '.join(PRESETS)}")
    return name, PRESETS[name]


def summary(seconds: list[float], train_images: int, val_images: int) -> tuple[float, str]:
    later = seconds[1:] or seconds
    mean = sum(later) / len(later)
    text = (
        f"warm-up epoch {seconds[0]:.2f} s; later epochs {', '.join(f'{s:.2f}' for s in later)} s; "
        f"mean {mean:.2f} s/epoch = {train_images / mean:,.0f} train images/s; "
        f"all {len(seconds)} epochs {sum(seconds):.1f} s "
        f"({train_images} train + {val_images} val images per epoch)"
    )
    return mean, text


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--arch", help="cpu-small (CPU default) or a preset (CUDA default: "
                        "paper-model1)")  # fmt: skip
    parser.add_argument("--channels", help="custom architecture: per-layer channels, e.g. 16,32")
    parser.add_argument("--blocks", help="custom architecture: per-layer blocks (default 1 each)")
    parser.add_argument("--stem", type=int, default=32, help="custom architecture: stem channels")
    parser.add_argument("--dataset", choices=("synthetic", "cifar10"), default="synthetic")
    parser.add_argument("--data-dir", default="data", help="where CIFAR-10 is (with --dataset)")
    parser.add_argument("--images", type=int,
                        help="synthetic: images made, 10%% of them for validation (default "
                        "4000); cifar10: train images kept (default all 45,000)")  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per trainer, warm-up included"
    )
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    parser.add_argument("--threads", type=int,
                        help="torch.set_num_threads in the main process, for both loops "
                        "(default: torch's choice, one per core)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="ours with torch.compile")
    parser.add_argument("--skip-reference", action="store_true", help="time only ours")
    parser.add_argument("--skip-ours", action="store_true", help="time only the reference")
    parser.add_argument("--skip-floor", action="store_true", help="do not time the floor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    name, arch = pick_arch(args)
    if args.dataset == "cifar10":
        config = DataConfig(dataset="cifar10", data_dir=args.data_dir, subset=args.images)
    else:
        config = DataConfig(dataset="synthetic", synthetic_size=args.images or 4000)
    splits = load_splits(config)
    train_n, val_n = len(splits.train), len(splits.val)

    load = os.getloadavg()
    print(
        f"date={datetime.date.today()} torch={torch.__version__} device={device} "
        f"cpu={cpu_name()!r} cpus={usable_cpus()} torch_threads={torch.get_num_threads()} "
        f"load_average_before={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
    )
    if device.type == "cuda":
        print(f"gpu={torch.cuda.get_device_name(device)!r}")
    print(f"arch={name} {arch.describe()} params={count_params(arch):,} data={args.dataset}")

    results = {}
    if not args.skip_reference:
        set_seed(args.seed)
        model = build_model(arch)
        seconds, _ = reference_epochs(model, splits, args.epochs, args.workers, device)
        results["reference"], text = summary(seconds, train_n, val_n)
        print(f"reference loop ({args.workers} workers, PIL per image, fp32): {text}")
    if not args.skip_ours:
        config = Recipe(epochs=args.epochs, seed=args.seed)
        machine = Machine(device=str(device), compile=args.compile)
        set_seed(args.seed)
        result = fit(build_model(arch), splits, config, machine, progress=False)
        seconds = [row.seconds for row in result.history]
        results["ours"], text = summary(seconds, train_n, val_n)
        path = result.extra.get("data_path", machine.data_path)
        print(f"ours (nas.train.fit.fit, data_path={path}, compile={args.compile}): {text}")
        if args.compile:
            print(f"compile time, apart from the epochs: {result.compile_seconds:.1f} s")
    if not args.skip_floor:
        config, machine = Recipe(seed=args.seed), Machine(device=str(device))
        set_seed(args.seed)
        seconds = floor_epochs(build_model(arch), splits, config, machine, args.epochs, device)
        results["floor"], text = summary(seconds, train_n, val_n)
        print(f"floor (steps on tensors augmented beforehand, no data work): {text}")
    if "reference" in results and "ours" in results:
        print(f"ratio ours/reference: {results['ours'] / results['reference']:.2f} "
              f"(speed-up {results['reference'] / results['ours']:.1f}x)")  # fmt: skip
    if "ours" in results and "floor" in results:
        print(overhead_text(results["ours"], results["floor"]))
    load = os.getloadavg()
    print(f"load_average_after={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}")


if __name__ == "__main__":
    main()
