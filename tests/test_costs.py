"""What a candidate costs on the hardware (nas.costs.latency, nas.costs.memory): the analytic
training-memory estimate against what autograd really keeps, the latency measurement's bounds
and its clean-up, the records' round trip through JSON, and the error for a device
that is not there.

Timing claims (two measurements agree, what one costs) are the benchmark's, not these tests':
benchmarks/bench_latency.py. The CUDA memory measurement cannot run on a CPU-only machine."""

from __future__ import annotations

import contextlib
import gc
import json
import random
import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import nas.costs.latency
from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.arch.space import SearchSpace
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.costs.latency import (
    CPU_CLOCK,
    FEW_RUNS,
    MIN_RUNS,
    WALL_CLOCK,
    Latency,
    LatencySetup,
    measure_latency,
)
from nas.costs.memory import MB, TrainingMemory, estimate_training_memory, training_memory
from nas.errors import UserError
from nas.train.model import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Architecture((8, 16), (1, 2), conv_kernel=3, skip_kernel=1, stem=8)
# even kernels (PaddedConv2d's padded copies), a projection in every layer, three layers
EVEN = Architecture((8, 12, 16), (2, 1, 2), conv_kernel=2, skip_kernel=(2, 1, 4), stem=8)
# identity shortcuts only in the first layer, odd per-layer kernels
MIXED = Architecture((8, 8, 16), (2, 2, 1), conv_kernel=(3, 5, 1), skip_kernel=3, stem=8)
# the imagenet stem (a 7x7 stride-2 convolution and a max-pool that keeps its indices), its
# output read only by an even kernel, by an odd projection, by an odd main convolution
POOLED = Architecture((8, 16), (2, 1), conv_kernel=4, skip_kernel=1, stem=8, stem_type="imagenet")
POOLED_SKIP = Architecture(
    (16, 8), (1, 1), conv_kernel=2, skip_kernel=3, stem=8, stem_type="imagenet"
)
POOLED_ODD = Architecture(
    (8, 8), (1, 2), conv_kernel=3, skip_kernel=2, stem=4, stem_type="imagenet"
)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """`count` torch threads inside the block, the module's one thread again after it."""
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(1)


def _sampled(space: str, count: int) -> list[Architecture]:
    rng = random.Random(14)
    return [SearchSpace.resolve(space).sample(rng, 10) for _ in range(count)]


def saved_for_backward(arch: Architecture, image_size: int, batch: int) -> int:
    """Bytes of the distinct storages autograd saves in a real training forward pass and loss,
    the model's own weights and buffers left out (the estimate counts those apart)."""
    model = build_model(arch).train()
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    images = torch.randn(batch, arch.in_channels, image_size, image_size)
    labels = torch.randint(0, arch.num_classes, (batch,))
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.cross_entropy(model(images), labels)
    loss.backward()  # the saved tensors were real: the backward pass runs on them
    return sum(nbytes for pointer, nbytes in saved.items() if pointer not in own)


@pytest.mark.parametrize(
    "arch",
    [
        TINY,
        EVEN,
        MIXED,
        POOLED,
        POOLED_SKIP,
        POOLED_ODD,
        *_sampled("tiny", 3),
        *_sampled("resnet", 1),
    ],
    ids=lambda a: a.describe().replace(" ", ""),
)
@pytest.mark.parametrize("image_size,batch", [(32, 3), (15, 2)])
def test_the_activation_estimate_is_what_autograd_saves(arch, image_size, batch):
    estimate = estimate_training_memory(arch, image_size, batch, "adam")
    estimated = (estimate.parts["activations"] + estimate.parts["input"]) * MB
    # The model is byte-exact (the image batch, saved by the stem convolution, and the labels,
    # saved by the loss, are the estimate's `input`): a float more or less per image or per
    # step is a wrong model, so no tolerance beyond the division by MB's rounding. A future
    # torch that saves a tensor more fails here, and the model follows it.
    assert estimated == pytest.approx(saved_for_backward(arch, image_size, batch), rel=1e-12)


@pytest.mark.parametrize("optimizer,copies", [("adam", 2), ("adamw", 2), ("sgd", 1)])
def test_weights_gradients_and_optimizer_state_follow_the_parameter_count(optimizer, copies):
    estimate = estimate_training_memory(EVEN, 32, 64, optimizer)
    weights = count_params(EVEN) * 4 / MB
    assert estimate.parts["weights"] == pytest.approx(weights, rel=1e-12)
    assert estimate.parts["gradients"] == pytest.approx(weights, rel=1e-12)
    assert estimate.parts["optimizer"] == pytest.approx(copies * weights, rel=1e-12)
    assert estimate.parts["input"] == pytest.approx(64 * (3 * 32 * 32 * 4 + 8) / MB)
    assert estimate.megabytes == pytest.approx(sum(estimate.parts.values()))
    assert not estimate.measured and estimate.device == "cpu"  # a float32 step as the CPU runs it
    assert estimate_training_memory(EVEN, 32, 64, "sgd", momentum=0.0).parts["optimizer"] == 0


def test_activations_grow_with_the_batch_and_the_image():
    small = estimate_training_memory(TINY, 32, 8, "adam").parts["activations"]
    assert estimate_training_memory(TINY, 32, 16, "adam").parts["activations"] > 1.99 * small
    assert estimate_training_memory(TINY, 64, 8, "adam").parts["activations"] > 3.9 * small


def test_training_memory_on_the_cpu_is_the_estimate_labelled_as_such():
    recipe = Recipe(batch_size=32, optimizer="sgd", momentum=0.9)
    memory = training_memory(EVEN, 32, recipe, Machine(device="cpu"))
    assert memory == TrainingMemory(
        **{**estimate_training_memory(EVEN, 32, 32, "sgd").to_dict(), "device": "cpu"}
    )
    text = memory.describe()
    assert text.startswith(f"{memory.megabytes:.1f} MB (estimated for cpu: weights ")
    for name in ("weights", "gradients", "optimizer", "activations", "input"):
        assert f"{name} {memory.parts[name]:.1f}" in text


def test_an_unknown_optimizer_is_a_user_error():
    with pytest.raises(UserError) as refused:
        estimate_training_memory(TINY, 32, 8, "lamb")
    assert str(refused.value) == "optimizer must be one of adam, adamw, sgd, got lamb"


def test_training_memory_follows_the_recipes_momentum():
    # SGD without momentum keeps no optimizer state: the recipe's momentum reaches the estimate
    weights = count_params(EVEN) * 4 / MB
    plain = Recipe(batch_size=32, optimizer="sgd", momentum=0.0)
    assert training_memory(EVEN, 32, plain, Machine(device="cpu")).parts["optimizer"] == 0
    heavy = Recipe(batch_size=32, optimizer="sgd", momentum=0.9)
    assert training_memory(EVEN, 32, heavy, Machine(device="cpu")).parts["optimizer"] == (
        pytest.approx(weights, rel=1e-12)
    )


@contextlib.contextmanager
def cudnn_benchmark_on() -> Iterator[None]:
    """cuDNN autotuning on inside the block (a process's own setting a measurement must keep)."""
    found = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = found


def test_a_latency_measurement_is_bounded_ordered_and_leaves_the_threads_and_rng_alone():
    rng_before = torch.random.get_rng_state()
    with torch_threads(2), cudnn_benchmark_on():  # timed on 1 thread (2 crawl on 2 busy cores)
        latency = measure_latency(TINY, 16, LatencySetup(threads=1))
        assert torch.get_num_threads() == 2
        assert torch.backends.cudnn.benchmark is True  # turned off to time, then restored
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert latency.runs >= MIN_RUNS
    assert latency.clock == CPU_CLOCK  # one CPU thread: timed by its own CPU time
    assert 0 < latency.low_ms <= latency.median_ms <= latency.high_ms
    batch = measure_latency(TINY, 16, LatencySetup(batch=4))
    assert batch.runs >= MIN_RUNS and batch.median_ms > 0


class Probe(torch.nn.Module):
    """A stand-in for the candidate (put where `nas.costs.latency` builds it): each forward pass
    records whether Python's garbage collector was on and torch's intra-op threads, then sleeps
    `sleep` seconds."""

    def __init__(self, sleep: float = 0.0):
        super().__init__()
        self.sleep = sleep
        self.collector_on: list[bool] = []
        self.threads: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.collector_on.append(gc.isenabled())
        self.threads.append(torch.get_num_threads())
        time.sleep(self.sleep)
        return images.sum()


def probed(monkeypatch, probe: Probe) -> Probe:
    monkeypatch.setattr(nas.costs.latency, "build_model", lambda arch: probe)
    return probe


def test_the_collector_is_held_off_while_timing_and_nothing_is_printed(monkeypatch, capfd):
    probe = probed(monkeypatch, Probe())
    assert gc.isenabled()
    latency = measure_latency(TINY, 16, LatencySetup(threads=1))
    assert gc.isenabled()  # on again after
    assert len(probe.collector_on) >= latency.runs >= MIN_RUNS  # warm-up and timed runs
    assert not any(probe.collector_on)
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(("process", "asked"), [(2, 1), (1, 2)])
def test_every_timed_run_uses_the_threads_asked_for(monkeypatch, process, asked):
    probe = probed(monkeypatch, Probe())
    with torch_threads(process):
        latency = measure_latency(TINY, 16, LatencySetup(threads=asked))
        assert torch.get_num_threads() == process  # the process's own again after
    assert len(probe.threads) >= latency.runs >= MIN_RUNS  # warm-up and timed runs
    assert set(probe.threads) == {asked}
    assert latency.clock == (CPU_CLOCK if asked == 1 else WALL_CLOCK)


def test_a_slow_model_stops_after_few_runs_on_either_clock(monkeypatch):
    # a 50 ms model past MAX_SECONDS = 0.2 s: timing stops at FEW_RUNS, not at MIN_RUNS
    monkeypatch.setattr(nas.costs.latency, "MAX_SECONDS", 0.2)
    probed(monkeypatch, Probe(sleep=0.05))
    one = measure_latency(TINY, 16, LatencySetup(threads=1))
    assert one.runs == FEW_RUNS and one.clock == CPU_CLOCK
    assert one.median_ms < 25  # a sleep takes no CPU time: the thread's clock leaves it out
    two = measure_latency(TINY, 16, LatencySetup(threads=2))
    assert two.runs == FEW_RUNS and two.clock == WALL_CLOCK
    assert two.median_ms >= 50  # the wall clock counts the sleep


def test_a_fast_model_stops_at_max_runs(monkeypatch):
    monkeypatch.setattr(nas.costs.latency, "MAX_RUNS", 40)
    monkeypatch.setattr(
        nas.costs.latency, "MIN_SECONDS", 60.0
    )  # never reached by 40 trivial passes
    probed(monkeypatch, Probe())
    assert measure_latency(TINY, 16, LatencySetup(threads=1)).runs == 40


def test_the_threads_are_restored_when_the_measurement_fails():
    with torch_threads(2), cudnn_benchmark_on(), pytest.raises(RuntimeError):  # 0-pixel image
        try:
            measure_latency(TINY, 0, LatencySetup(threads=1))
        finally:
            assert torch.get_num_threads() == 2
            assert torch.backends.cudnn.benchmark is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available on this machine")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_user_error(device):
    threads = torch.get_num_threads()
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        measure_latency(TINY, 16, LatencySetup(device=device))
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        training_memory(TINY, 16, Recipe(), Machine(device=device))
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("field", ["batch", "threads"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_a_latency_setup_needs_positive_whole_numbers(field, value):
    with pytest.raises(UserError, match=f"latency {field}"):
        LatencySetup(**{field: value})


def test_records_round_trip_through_json_and_describe_their_numbers():
    setup = LatencySetup(device="cpu", batch=8, threads=2)
    latency = Latency(median_ms=1.84, low_ms=1.8, high_ms=1.9, runs=30, seconds=0.41)
    estimate = estimate_training_memory(EVEN, 32, 64, "adam")
    measured = TrainingMemory(198.0, True, "cuda:0", {"peak": 198.0, "weights": 0.1})
    for record in (setup, latency, estimate, measured):
        assert type(record).from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert setup.describe() == "cpu, batch 8, 2 threads"
    assert LatencySetup().describe() == "cpu, batch 1, 1 thread"
    assert LatencySetup(device="cuda:0").describe() == "cuda:0, batch 1"
    assert latency.describe() == "1.84 ms (1.80-1.90, 30 runs)"
    assert measured.describe() == "198.0 MB (measured on cuda:0)"
    parts = {"weights": 19.1, "gradients": 19.1, "optimizer": 38.14, "activations": 135.0}
    assert TrainingMemory(211.36, False, "cpu", {**parts, "input": 0.8}).describe() == (
        "211.4 MB (estimated for cpu: weights 19.1, gradients 19.1, optimizer 38.1, "
        "activations 135.0, input 0.8)"
    )
    with pytest.raises(ValueError, match="unknown Latency field"):
        Latency.from_dict({**latency.to_dict(), "mean_ms": 1.0})


class SimulatedAllocator:
    """`measure_steady_step`'s ops over a toy caching allocator (bytes held, and the peak as
    `torch.cuda.max_memory_allocated` keeps it: reset to what is held now). The model and its
    state take 100 bytes; a warm-up step briefly holds 5000 (cuDNN autotuning's trial
    workspaces); the steady step briefly holds 300 more than the model (activations and the
    chosen algorithm's workspace). Records the order of the phases."""

    def __init__(self):
        self.held, self.top, self.calls = 100, 100, []

    def _spike(self, extra: int) -> None:
        self.top = max(self.top, self.held + extra)

    def warm_up(self, steps: int) -> None:
        self.calls += ["warm_up"] * steps
        for _ in range(steps):
            self._spike(5000)

    def synchronize(self) -> None:
        self.calls.append("synchronize")

    def release_cache(self) -> None:
        self.calls.append("release_cache")

    def reset_peak(self) -> None:
        self.calls.append("reset_peak")
        self.top = self.held

    def measured_step(self) -> None:
        self.calls.append("measured_step")
        self._spike(300)

    def peak(self) -> int:
        self.calls.append("peak")
        return self.top


def test_the_measured_memory_is_one_steady_step_after_the_warm_up():
    from nas.costs.memory import WARM_UP_STEPS, measure_steady_step

    ops = SimulatedAllocator()
    assert measure_steady_step(ops) == 400  # the model's 100 and the step's 300, no trial 5000
    assert WARM_UP_STEPS == 2
    assert ops.calls == [
        "warm_up", "warm_up", "synchronize", "release_cache", "reset_peak", "measured_step",
        "synchronize", "peak",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "setup, said",
    [
        (LatencySetup(), "cpu, batch 1, 1 thread"),
        (LatencySetup(device="cpu:0", batch=8, threads=2), "cpu:0, batch 8, 2 threads"),
        (LatencySetup(device="cuda:1", threads=4), "cuda:1, batch 1"),  # threads: CPU only
    ],
)
def test_a_latency_setup_says_its_threads_only_for_the_cpu(setup, said):
    assert setup.describe() == said


@pytest.mark.parametrize(
    "seconds_a_run, warmups, runs",
    [
        # 3 warm-up runs hold 0.375 s >= 0.1 s; 15 runs hold 1.875 s >= 0.5 s: the count ends it
        (0.125, 3, 15),
        # 3 warm-up runs hold only 0.09375 s: a 4th; then 0.5 s takes 16 runs, past the 15
        (1 / 32, 4, 16),
        # 0.5 s at 1/64 s a run: 32 runs (the wall clock's 0.5 s reached exactly ends it)
        (1 / 64, 7, 32),
        # a slow model: 3.0 s reached after 12 runs (>= FEW_RUNS) ends it before the 15
        (0.25, 3, 12),
    ],
)
def test_latency_is_timed_after_its_warm_up_until_its_bounds(seconds_a_run, warmups, runs):
    from nas.costs.latency import FEW_RUNS, _time_runs

    assert FEW_RUNS <= 12
    now = [100.0]  # a clock that does not start at 0
    calls = []

    def model(inputs):  # each forward pass takes `seconds_a_run` of the fake clock
        calls.append(inputs)
        now[0] += seconds_a_run

    times = _time_runs(model, "x", torch.device("cpu"), lambda: now[0], lambda: now[0])
    assert times == [seconds_a_run] * runs
    assert len(calls) == warmups + runs


def test_a_latency_is_the_median_and_inclusive_quartiles_of_its_runs_in_milliseconds():
    # fake clocks: the wall clock moves 1 s a reading, so the warm-up is its 3 runs and timing
    # stops at FEW_RUNS = 5 runs (3.0 s passed); run i lasts i + 1 ms of the run timer.
    # By hand: 1..5 ms have the median 3 and, inclusive (quartiles of the runs themselves),
    # 2 and 4 (exclusive would give 1.5 and 4.5). The wall clock is read 11 times: at the
    # start, the warm-up's start and its one check, the timing's start, 6 bound checks and
    # at the end: 10 s from the first reading to the last.
    from nas.costs.latency import FEW_RUNS, MAX_SECONDS, WALL_CLOCK

    assert (FEW_RUNS, MAX_SECONDS) == (5, 3.0)
    wall_readings = iter(range(100, 200))
    run_readings = iter([0.0, 0.001, 1.0, 1.002, 2.0, 2.003, 3.0, 3.004, 4.0, 4.005])

    latency = measure_latency(
        TINY,
        16,
        LatencySetup(threads=1),
        timer=lambda: next(run_readings),
        wall=lambda: float(next(wall_readings)),
    )
    assert latency.runs == 5
    assert latency.median_ms == pytest.approx(3.0)
    assert (latency.low_ms, latency.high_ms) == (pytest.approx(2.0), pytest.approx(4.0))
    assert latency.seconds == 10.0
    assert latency.clock == WALL_CLOCK  # a timer other than the thread's CPU time
    assert next(wall_readings) == 111  # nothing else read the wall clock
