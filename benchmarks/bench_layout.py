"""CPU epoch time of `nas.train.fit.fit` in the contiguous layout (the CPU default since issue 10)
against channels_last (the earlier CPU default), alternating the two so that a change in the
machine's load hits both alike.

Why the default changed: with torch 2.14.1 (oneDNN 3.12) on AVX-512 CPUs, the backward pass of
a 1x1 stride-2 convolution on a small channels_last batch with two threads corrupts the heap
(a segfault or "free(): invalid next size"). This measures what the safe default costs.

Not a test; run it by hand, e.g.
    python benchmarks/bench_layout.py --images 4000 --epochs 3 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics

import torch

from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.loading import load_splits
from nas.train.fit import fit, set_seed
from nas.train.model import build_model

# the CPU model of bench_epoch.py: 4 layers, 3x3 kernels and skips, 126,362 parameters
ARCH = Architecture((16, 32, 32, 64), (1, 1, 1, 1), conv_kernel=3, skip_kernel=3, stem=16)


def epoch_seconds(splits, epochs: int, channels_last: bool) -> list[float]:
    """Seconds of each epoch after the first (warm-up) of one `fit`."""
    set_seed(0)
    machine = Machine(device="cpu", channels_last=channels_last)
    result = fit(build_model(ARCH), splits, Recipe(epochs=epochs), machine, progress=False)
    return [row.seconds for row in result.history[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="synthetic train+val images")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit (first is warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two layouts")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_splits(DataConfig(dataset="synthetic", synthetic_size=args.images))
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}  {platform.processor() or platform.machine()}"
        f"  torch {torch.__version__}  threads {torch.get_num_threads()}"
        f"  load {os.getloadavg()[0]:.2f}  model {count_params(ARCH):,} params"
    )
    seconds: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    for round_ in range(args.rounds):
        for name in ("contiguous", "channels_last"):
            measured = epoch_seconds(splits, args.epochs, name == "channels_last")
            seconds[name] += measured
            print(f"round {round_ + 1} {name:>13}: " + ", ".join(f"{s:.2f}" for s in measured))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        print(f"median {name:>13}: {value:.2f} s/epoch")
    change = median["contiguous"] / median["channels_last"] - 1
    print(f"contiguous vs channels_last: {change:+.1%}  (load after {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
