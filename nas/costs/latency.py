"""Owns measuring a candidate's inference latency on the hardware (issue 14): the time of one
forward pass, and the setup it is valid for (`LatencySetup`).

`measure_latency` times a freshly built model (`nas.train.model.build_model`) in eval mode under
`torch.inference_mode`, fed a contiguous NCHW float32 batch (the layout `nas.run.export` exports),
on the asked device, cuDNN autotuning off (its heuristic picks the same algorithms in every
process). Claims:
- It is quiet and leaves the process as it found it: torch's intra-op threads are pinned to
  `LatencySetup.threads` and cuDNN autotuning is turned off, both restored afterwards (also
  when the measurement raises), the global
  random state is untouched (the weights and the input are drawn inside `torch.random.fork_rng`),
  Python's garbage collector collects the young generations first and is held off while
  timing, nothing is printed.
- It is as reproducible as the machine lets it be: warm-up (at least `WARMUP_RUNS` runs and
  `WARMUP_SECONDS`), then timed runs until at least `MIN_RUNS` runs and `MIN_SECONDS`; the
  result is the median with the quartiles as its spread. On the CPU with one thread each run
  is timed by the thread's own CPU time, which leaves out the time other processes hold the
  core (on a shared machine that alone made two measurements differ 2-3x); elsewhere by the
  wall clock (`time.perf_counter`, with `torch.cuda.synchronize` around each run on CUDA).
  `Latency.clock` says which. `benchmarks/bench_latency.py` shows how well two measurements
  agree on this machine and what one costs (benchmarks/RESULTS.md); a small model costs well
  under a second. What no timer leaves out: other processes evicting the model from the
  caches and sharing memory bandwidth, which still slow a run on a busy machine.
- It is bounded: at most `MAX_RUNS` timed runs, and a model so slow that `MAX_SECONDS` pass
  stops after `FEW_RUNS` runs.
- A `Latency` or `LatencySetup` reads back from its dict (as a trial records it) unchanged, and
  a dict with a field it does not know is refused.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from nas.arch.architecture import Architecture
from nas.errors import UserError
from nas.records import recorded_fields
from nas.train.devices import resolve_device, synchronize
from nas.train.model import build_model
from nas.train.precision import cudnn_autotuning

WARMUP_RUNS = 3  # untimed forward passes before timing (allocator, oneDNN primitive caches)
WARMUP_SECONDS = 0.1  # and at least this long, so the CPU clock and caches settle
MIN_RUNS = 15  # timed runs at the least: the quartiles need a few per quarter
MIN_SECONDS = 0.5  # timed wall seconds at the least, so short runs span many scheduler slices
MAX_RUNS = 500  # timed runs at the most (a 1 ms model reaches MIN_SECONDS before)
MAX_SECONDS = 3.0  # a model this slow stops timing after FEW_RUNS runs, not MIN_RUNS
FEW_RUNS = 5  # timed runs at the least for a model slower than MAX_SECONDS / MIN_RUNS

# gc.collect(1) before a measurement (timing here, memory in nas.costs.memory): generations
# 0 and 1, which hold what the previous candidate left, not the full heap
YOUNG_GENERATIONS = 1
WALL_CLOCK = "wall"  # runs timed by time.perf_counter (CUDA, several CPU threads)
CPU_CLOCK = "thread cpu"  # runs timed by the thread's CPU time (the CPU, one thread)


@dataclass(frozen=True)
class LatencySetup:
    """Where and how latency is measured; part of what a cached latency is valid for."""

    device: str = "cpu"  # where latency is measured: "cpu" or "cuda"/"cuda:N"
    batch: int = 1  # images per timed forward pass
    threads: int = 1  # torch intra-op threads while timing on the CPU (pinned, restored after)

    def __post_init__(self) -> None:
        for name in ("batch", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"the latency {name} must be a whole number of 1 or more")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencySetup:
        return cls(**recorded_fields(cls, data))

    def describe(self) -> str:
        """E.g. `cpu, batch 1, 1 thread` (threads only where they matter: on the CPU)."""
        text = f"{self.device}, batch {self.batch}"
        if self.device.split(":")[0] == "cpu":
            text += f", {self.threads} thread{'s' if self.threads != 1 else ''}"
        return text


@dataclass(frozen=True)
class Latency:
    """One latency measurement: milliseconds per forward pass of `LatencySetup.batch` images."""

    median_ms: float  # median of the timed runs, milliseconds per forward pass of `batch` images
    low_ms: float  # 25th percentile of the timed runs
    high_ms: float  # 75th percentile of the timed runs
    runs: int  # timed runs
    seconds: float  # wall seconds the whole measurement took (build, warm-up, runs)
    clock: str = WALL_CLOCK  # what timed the runs: WALL_CLOCK or CPU_CLOCK (see _timer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Latency:
        return cls(**recorded_fields(cls, data))

    def describe(self) -> str:
        """E.g. `1.84 ms (1.80-1.90, 30 runs)`: median, quartiles, timed runs."""
        return f"{self.median_ms:.2f} ms ({self.low_ms:.2f}-{self.high_ms:.2f}, {self.runs} runs)"


def _timer(device: torch.device, threads: int) -> Callable[[], float]:
    """The clock a run is timed with: on the CPU with one thread, the thread's own CPU time
    (`time.thread_time`: torch computes in the calling thread, so on an idle core it equals
    the wall time, and on a shared one it leaves out the slices the OS gives other processes);
    otherwise the wall clock (`time.perf_counter`), whose time waiting for a GPU or for worker
    threads is part of the latency."""
    return time.thread_time if device.type == "cpu" and threads == 1 else time.perf_counter


def _time_runs(
    model,
    inputs,
    device: torch.device,
    timer: Callable[[], float],
    wall: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds of each timed forward pass by `timer`, after the warm-up (see the module
    docstring); the warm-up's and the bounds' seconds are `wall`'s."""
    started = wall()
    warmups = 0
    while warmups < WARMUP_RUNS or wall() - started < WARMUP_SECONDS:
        model(inputs)
        warmups += 1
    synchronize(device)
    times: list[float] = []
    timing_started = wall()
    while len(times) < MAX_RUNS:
        elapsed = wall() - timing_started  # the bounds count wall seconds
        if len(times) >= MIN_RUNS and elapsed >= MIN_SECONDS:
            break
        if len(times) >= FEW_RUNS and elapsed >= MAX_SECONDS:
            break
        run_started = timer()
        model(inputs)
        synchronize(device)
        times.append(timer() - run_started)
    return times


def measure_latency(
    arch: Architecture,
    image_size: int,
    setup: LatencySetup,
    *,
    timer: Callable[[], float] | None = None,
    wall: Callable[[], float] = time.perf_counter,
) -> Latency:
    """The latency of `arch` on `image_size`-pixel square images under `setup`.

    `timer` times each run (by default `_timer`'s choice for the device) and `wall` the
    warm-up, the bounds and the whole measurement; a test passes fake clocks to know each
    figure exactly. Raises UserError for a device that cannot be used here (e.g. cuda without
    a GPU).
    """
    started = wall()
    device = resolve_device(setup.device)
    threads = torch.get_num_threads()
    timer = timer or _timer(device, setup.threads)
    collecting = gc.isenabled()
    # the young generations hold what a previous candidate left; a full collection takes
    # ~0.4 s with torch loaded here (300k objects), longer than the whole measurement
    gc.collect(YOUNG_GENERATIONS)
    try:
        torch.set_num_threads(setup.threads)
        with torch.random.fork_rng(devices=[]):  # weights and input leave the global RNG alone
            model = build_model(arch).eval().to(device)
            inputs = torch.randn(setup.batch, arch.in_channels, image_size, image_size)
        inputs = inputs.to(device).contiguous()  # NCHW float32, as nas.run.export's graphs take
        gc.disable()  # no collection pauses inside the timed runs
        # cuDNN's heuristics pick the algorithms: the same ones in every process and for every
        # candidate, where autotuning's pick follows timing noise (its own flag restored after)
        with torch.inference_mode(), cudnn_autotuning(False):
            times = _time_runs(model, inputs, device, timer, wall)
    finally:
        if collecting:
            gc.enable()
        torch.set_num_threads(threads)
    del model, inputs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    low, median, high = statistics.quantiles(times, n=4, method="inclusive")
    return Latency(
        median_ms=median * 1000,
        low_ms=low * 1000,
        high_ms=high * 1000,
        runs=len(times),
        seconds=wall() - started,
        clock=CPU_CLOCK if timer is time.thread_time else WALL_CLOCK,
    )
