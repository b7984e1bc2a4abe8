"""How reproducible `nas.costs.latency.measure_latency` is on this machine, and what one measurement
costs per candidate (issue 14): every architecture is measured twice, by two independent calls
(and, with `--processes`, once more in each of two fresh Python processes); a pair agrees when
|a - b| / min(a, b) <= `--tolerance` (10 %).

Architectures: the presets paper-model1, paper-model5 and resnet18, `--resnet` sampled from the
built-in `resnet` space and `--tiny` from `tiny` (seeded by `--seed`).

`--clocks SECONDS` shows why the CPU measurement (one thread) times runs by the thread's CPU
time: the same runs timed by both clocks, cut into measurement-long windows.

Exit status 1 when a pair disagrees by more than the tolerance, so the script can serve as a
check. `--memory` also compares the analytic training-memory estimate with the peak of the
bytes glibc's malloc holds live during real training steps (sampled at every module and at
every saved tensor's pack and unpack) and with the growth of the process's peak RSS.

Not a test; run it by hand, e.g.
    python benchmarks/bench_latency.py --threads 1 --batches 1 8
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

import torch

from nas.arch.architecture import Architecture
from nas.arch.counts import count_macs, count_params
from nas.arch.presets import PRESETS
from nas.arch.space import SearchSpace
from nas.config.machine import usable_cpus
from nas.config.recipe import Recipe
from nas.costs.latency import MIN_RUNS, MIN_SECONDS, WARMUP_RUNS, LatencySetup, measure_latency
from nas.costs.memory import MB, estimate_training_memory
from nas.train.model import build_model
from nas.train.optimizer import make_optimizer
from nas.train.precision import precision_for
from nas.train.step import TrainingStep

PRESET_NAMES = ("paper-model1", "paper-model5", "resnet18")  # the fixed candidates
MEMORY_BATCH = 64  # --memory: the recipe's batch size


def architectures(resnet: int, tiny: int, seed: int) -> list[Architecture]:
    rng = random.Random(seed)
    chosen = [PRESETS[name] for name in PRESET_NAMES]
    chosen += [SearchSpace.resolve("resnet").sample(rng, 10) for _ in range(resnet)]
    chosen += [SearchSpace.resolve("tiny").sample(rng, 10) for _ in range(tiny)]
    return chosen


def in_fresh_process(arch: Architecture, image_size: int, setup: LatencySetup) -> float:
    """The median (ms) that one measurement in a new Python process gives."""
    command = [sys.executable, __file__, "--one", arch.describe(), "--image-size", str(image_size)]
    command += ["--threads", str(setup.threads), "--batches", str(setup.batch)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])["median_ms"]


def disagreement(a: float, b: float) -> float:
    return abs(a - b) / min(a, b)


def bench_batch(archs, args, batch: int) -> tuple[list[float], list[float]]:
    """Print one table for `batch`; return every pair's disagreement and every call's seconds."""
    setup = LatencySetup(device="cpu", batch=batch, threads=args.threads)
    print(f"\n{setup.describe()}, {args.image_size}x{args.image_size} images")
    header = "| architecture | params | MMACs | median 1, ms | median 2, ms | disagreement |"
    header += " IQR / median 1 | runs | s per measurement |"
    if args.processes:
        header += " fresh process 1, 2, ms | disagreement |"
    print(header)
    print("|" + "---|" * header.count(" |"))
    pairs, seconds = [], []
    for arch in archs:
        first = measure_latency(arch, args.image_size, setup)
        second = measure_latency(arch, args.image_size, setup)
        pairs.append(disagreement(first.median_ms, second.median_ms))
        seconds += [first.seconds, second.seconds]
        row = (
            f"| {arch.describe()} | {count_params(arch):,} | "
            f"{count_macs(arch, args.image_size) / 1e6:.1f} | {first.median_ms:.3f} | "
            f"{second.median_ms:.3f} | {pairs[-1]:.1%} | "
            f"{(first.high_ms - first.low_ms) / first.median_ms:.1%} | "
            f"{first.runs}, {second.runs} | {first.seconds:.2f}, {second.seconds:.2f} |"
        )
        if args.processes:
            a, b = (in_fresh_process(arch, args.image_size, setup) for _ in range(2))
            pairs.append(disagreement(a, b))
            row += f" {a:.3f}, {b:.3f} | {pairs[-1]:.1%} |"
        print(row, flush=True)
    return pairs, seconds


def compare_clocks(arch: Architecture, image_size: int, seconds: float) -> str:
    """Time forward passes (batch 1, this process's one thread) for `seconds`, each by the wall
    clock and by the thread's CPU time at once; cut the runs into consecutive windows as long as
    one measurement (MIN_SECONDS, at least MIN_RUNS runs) and compare neighbouring windows'
    medians, as two measurements in a row would be compared: the same runs for both clocks."""
    model = build_model(arch).eval()
    inputs = torch.randn(1, arch.in_channels, image_size, image_size)
    runs: list[tuple[float, float]] = []
    with torch.inference_mode():
        for _ in range(WARMUP_RUNS):
            model(inputs)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            wall, cpu = time.perf_counter(), time.thread_time()
            model(inputs)
            runs.append((time.perf_counter() - wall, time.thread_time() - cpu))
    windows, current = [], []
    for run in runs:
        current.append(run)
        if len(current) >= MIN_RUNS and sum(wall for wall, _ in current) >= MIN_SECONDS:
            windows.append(current)
            current = []
    row = f"| {arch.describe()} | {len(runs)} | {len(windows)} |"
    for clock in (0, 1):
        medians = [statistics.median(run[clock] for run in window) for window in windows]
        pairs = [disagreement(a, b) for a, b in zip(medians[::2], medians[1::2])]
        within = sum(pair <= 0.10 for pair in pairs) / len(pairs)
        row += f" {statistics.median(medians) * 1000:.2f} | {within:.0%} | {max(pairs):.0%} |"
    share = sum(cpu for _, cpu in runs) / sum(wall for wall, _ in runs)
    return row + f" {share:.2f} |"


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc 2.33 or later)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
        "keepcost".split()
    ]


def memory_row(arch: Architecture, image_size: int, batch: int) -> str:
    """The estimate against the real peak of three float32 training steps on this CPU, the
    way nas.train.fit.fit takes them (Adam, zero_grad after the forward pass)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def malloc_live_bytes() -> int:  # heap bytes in use plus mmapped blocks
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    peak = 0

    def sample(*_):
        nonlocal peak
        peak = max(peak, malloc_live_bytes() - base)

    def sampled(tensor):
        sample()
        return tensor

    # warm the libraries up first (oneDNN, autograd), so their one-off allocations are not counted
    build_model(Architecture((8,), (1,), stem=8))(torch.randn(2, 3, 8, 8)).sum().backward()
    base, rss_base = malloc_live_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build_model(arch).train()
    for module in model.modules():
        module.register_forward_pre_hook(sample)
        module.register_forward_hook(sample)
    cpu = torch.device("cpu")
    step = TrainingStep(model, make_optimizer(model, Recipe(), cpu), precision_for("fp32", cpu))
    images = torch.randn(batch, arch.in_channels, image_size, image_size)
    labels = torch.randint(0, arch.num_classes, (batch,))
    for _ in range(3):
        # sampled in every forward hook and saved tensor, then after the optimizer's update
        # (the gradients and the optimizer state, all alive at once)
        with torch.autograd.graph.saved_tensors_hooks(sampled, sampled):
            step(images, labels)
        sample()
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_base) * 1024  # KiB on Linux
    estimate = estimate_training_memory(arch, image_size, batch, "adam").megabytes
    return (
        f"| {arch.describe()} | {batch} | {estimate:.1f} | {peak / MB:.1f} | "
        f"{estimate * MB / peak:.2f} | {rss / MB:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing")
    parser.add_argument("--batches", type=int, nargs="+", default=[1], help="images per pass")
    parser.add_argument("--image-size", type=int, default=32, help="square input size, pixels")
    parser.add_argument("--resnet", type=int, default=4, help="architectures from `resnet`")
    parser.add_argument("--tiny", type=int, default=2, help="architectures from `tiny`")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampled architectures")
    parser.add_argument("--tolerance", type=float, default=0.10, help="largest disagreement")
    parser.add_argument("--processes", action="store_true", help="also two fresh processes")
    parser.add_argument("--memory", action="store_true", help="also the memory estimate")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency tables")
    parser.add_argument(
        "--clocks", type=float, metavar="SECONDS", help="also wall vs CPU clock, per arch"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one measurement as JSON (--processes)
    parser.add_argument("--memory-one", help=argparse.SUPPRESS)  # one memory row (--memory)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_one:
        print(memory_row(Architecture.parse(args.memory_one), args.image_size, MEMORY_BATCH))
        return 0
    if args.one:
        setup = LatencySetup(batch=args.batches[0], threads=args.threads)
        latency = measure_latency(Architecture.parse(args.one), args.image_size, setup)
        print(json.dumps(latency.to_dict()))
        return 0
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}  {platform.processor() or platform.machine()}"
        f"  {usable_cpus()} cores  torch {torch.__version__}"
        f"  load {os.getloadavg()[0]:.2f}  {' '.join(sys.argv[1:])}"
    )
    archs = architectures(args.resnet, args.tiny, args.seed)
    failed = False
    for batch in [] if args.no_latency else args.batches:
        pairs, seconds = bench_batch(archs, args, batch)
        within = sum(pair <= args.tolerance for pair in pairs) / len(pairs)
        failed |= max(pairs) > args.tolerance
        print(
            f"batch {batch}: largest disagreement {max(pairs):.1%}, within "
            f"{args.tolerance:.0%}: {within:.0%} of {len(pairs)} pairs; seconds per measurement: "
            f"mean {statistics.mean(seconds):.2f}, max {max(seconds):.2f}"
        )
    if args.clocks:
        print(f"\nwall clock vs thread CPU time, {args.clocks:.0f} s per architecture, batch 1")
        print("| architecture | runs | windows | wall median, ms | wall within 10 % |", end="")
        print(" wall largest | CPU median, ms | CPU within 10 % | CPU largest | CPU / wall |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for arch in archs:
            print(compare_clocks(arch, args.image_size, args.clocks), flush=True)
    if args.memory:
        print("\n| architecture | batch | estimate, MB | malloc live peak, MB | ratio |", end="")
        print(" RSS growth, MB |")
        print("|---|---|---|---|---|---|")
        for arch in archs:  # each in a fresh process, so that its peak RSS is its own
            command = [sys.executable, __file__, "--memory-one", arch.describe()]
            command += ["--image-size", str(args.image_size), "--threads", str(args.threads)]
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            print(result.stdout.splitlines()[-1], flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
