"""Owns timing one training step of a candidate on the run's device: the recipe's step (its
optimizer, precision and memory layout) on random images, and a step of the recipe's batch size
scaled from fewer images where a full one would take too long (a large model on a CPU).

Claims:
- Nothing is loaded or written: the model trains on random tensors of the recipe's batch, and
  the global random state is restored afterwards.
- Steps are timed only until `budget` (default `TIMING_SECONDS`) has passed after the warm-up
  step: with no time at all, exactly one step is timed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from nas.arch.architecture import Architecture

TIMING_SECONDS = 2.0  # timed steps stop once this much has passed (after one warm-up step)
PROBE_BATCH = 2  # the warm-up step's batch: it also tells how long a full batch would take
STEP_SECONDS_TARGET = 0.5  # a timed step larger than this is timed on fewer images (CPU)


@dataclass(frozen=True)
class StepTiming:
    """One training step, timed on the run's device."""

    seconds: float  # a step of the recipe's batch size (scaled from `timed_batch` if smaller)
    timed_batch: int  # images per timed step: the batch size, or fewer for a slow CPU step
    steps: int  # timed steps (after the warm-up steps)


def time_training_step(
    arch: Architecture, recipe, machine, image_size: int, *, budget: float = TIMING_SECONDS
) -> StepTiming:
    """Time the recipe's training step (`nas.train.step.TrainingStep` under the run's precision,
    with its optimizer and memory layout, cuDNN autotuning on as `nas.train.fit.fit` runs) for
    `arch` on random images at `machine.device`; the global random state and the autotuning
    setting are left as they were.

    A warm-up step and a timed step on `PROBE_BATCH` images tell how long a full batch would
    take; where that is over `STEP_SECONDS_TARGET` (a large model on a CPU) fewer images are
    timed, and the step is scaled up to the batch size along the line through both timings
    (a fixed cost per step plus a cost per image). Steps are timed for about half of `budget`
    (never more than `budget`); the fastest counts, since other processes only add time."""
    import torch

    from nas.train.devices import resolve_device
    from nas.train.precision import cudnn_autotuning

    device = resolve_device(machine.device)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []), cudnn_autotuning(cuda):
        timing = _timed_steps(arch, recipe, machine, image_size, device, budget)
    if cuda:
        torch.cuda.empty_cache()  # the model and its batches are gone: give the memory back
    return timing


def _timed_steps(arch: Architecture, recipe, machine, image_size: int, device, budget: float):
    import torch

    from nas.data.batches import memory_format
    from nas.train.model import build_model
    from nas.train.optimizer import make_optimizer
    from nas.train.precision import precision_for
    from nas.train.step import TrainingStep

    cuda = device.type == "cuda"
    layout = memory_format(machine, device)
    model = build_model(arch).to(device=device, memory_format=layout)
    precision = precision_for(machine.precision, device)
    step = TrainingStep(model, make_optimizer(model, recipe, device), precision)

    def timed(batch: int) -> float:
        started = time.perf_counter()
        images = torch.randn(batch, arch.in_channels, image_size, image_size, device=device)
        labels = torch.randint(0, arch.num_classes, (batch,), device=device)
        step(images.contiguous(memory_format=layout), labels)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    probe = min(PROBE_BATCH, recipe.batch_size)
    timed(probe)  # warm-up: allocator, kernel selection, one-time set-up
    started = time.perf_counter()  # the budget counts from here
    probes = [timed(probe)]
    while len(probes) < 3 and time.perf_counter() - started < budget / 4:
        probes.append(timed(probe))
    probe_seconds = min(probes)
    timed_batch = recipe.batch_size
    if not cuda and probe_seconds / probe * recipe.batch_size > STEP_SECONDS_TARGET:
        affordable = int(STEP_SECONDS_TARGET * probe / probe_seconds)
        timed_batch = max(probe, min(recipe.batch_size, affordable))
    if timed_batch != probe:
        timed(timed_batch)  # warm-up at the timed size
    times = probes if timed_batch == probe else []
    while not times or time.perf_counter() - started < budget / 2:
        times.append(timed(timed_batch))
        if time.perf_counter() - started > budget:
            break
    fastest = min(times)  # other processes on a shared machine only ever add time
    seconds = _scale_to_batch(fastest, timed_batch, probe_seconds, probe, recipe.batch_size)
    return StepTiming(seconds, timed_batch, len(times))


def _scale_to_batch(seconds: float, batch: int, probe_seconds: float, probe: int, full: int):
    """A step of `full` images from steps of `batch` and `probe` images: the straight line
    through both (a fixed cost per step plus a cost per image), or per image from one."""
    if batch == full:
        return seconds
    per_image = (seconds - probe_seconds) / (batch - probe) if batch > probe else 0.0
    if per_image <= 0:
        per_image = seconds / batch
    return seconds + per_image * (full - batch)
