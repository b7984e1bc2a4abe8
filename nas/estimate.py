"""Owns the cost estimate a search or a retrain prints before it starts: a few timed training
steps of a typical candidate on the run's device, turned into the time of the whole run, and,
for a long run on a CPU, the flags that bring it down.

Claims:
- Nothing is loaded or written. The dataset's size is counted from its settings (CIFAR's fixed
  sizes, an image folder's files, the synthetic size), the model trains on random tensors, the
  global random state is restored afterwards, and a SQLite store is only read (to count off
  the trials a resumed search already trained).
- The timing takes a few seconds (`TIMING_SECONDS` after warm-up steps). A run that even a
  deliberately slow machine (`SLOW_FLOPS`) would finish within 10 minutes by the analytic count
  (`RunPlan.slow_seconds`) is not timed at all: quick, smoke and test runs pay nothing.
- The arithmetic (`RunPlan.seconds`) is linear in trials, epochs and images: the recipe's
  training steps, plus each epoch's validation pass counted as a third of a training step per
  image (forward only, no backward or optimizer step); a retrain adds one pass over the test set.
- It is the cost of a full run: the pruner stops weak trials early and a resumed run skips the
  epochs it has, so the real run is usually shorter; augmentation and data handling are not
  timed (about a sixth of an epoch of a 126k-parameter net on a 2-core CPU, less for larger
  nets: "The floor" in benchmarks/RESULTS.md).
- Where the estimate cannot be made (an unusable device, no candidate under the budget, a
  missing image folder), nothing is printed: the run itself reports the problem in its words.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from nas.arch import Architecture, count_macs, count_params
from nas.config import DataConfig
from nas.errors import UserError
from nas.machine import usable_cpus

TRAIN_FLOPS_PER_MAC = 6  # forward 2 FLOPs per MAC, backward twice the forward
VALIDATION_SHARE = 1 / 3  # a validation image costs the forward third of a training image
SLOW_FLOPS = 1e9  # training FLOP/s that one core of any CPU the tool supports exceeds
SLOW_STEP_SECONDS = 0.02  # per-step overhead (launches, optimizer) a slow machine may need
NOT_WORTH_SECONDS = 600.0  # runs that machine ends within 10 min (a real one: 1-2) are not timed
ADVICE_HOURS = 3.0  # a CPU run estimated longer than this gets the line of flags
TIMING_SECONDS = 2.0  # timed steps stop once this much has passed (after one warm-up step)
PROBE_BATCH = 2  # the warm-up step's batch: it also tells how long a full batch would take
STEP_SECONDS_TARGET = 0.5  # a timed step larger than this is timed on fewer images (CPU)
CANDIDATE_SAMPLES = 25  # candidates under the budget sampled to pick a typical one
EXAMPLE_SUBSET, EXAMPLE_EPOCHS = 5000, 10  # the cheaper settings the advice line prices
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # images in CIFAR-10/100's train and test sets


@dataclass(frozen=True)
class DataShape:
    """What the run's data costs, counted from its settings without reading it."""

    train_images: int  # per epoch, after the validation split and --subset
    val_images: int  # validated after every epoch
    test_images: int  # evaluated once by a retrain
    image_size: int  # pixels, square
    num_classes: int


def data_shape(data: DataConfig) -> DataShape | None:
    """The split sizes `nas.data.load_splits` would give, or None when unknown (no folder)."""
    if data.dataset in ("cifar10", "cifar100"):
        total, test, classes = CIFAR_TRAIN, CIFAR_TEST, 10 if data.dataset == "cifar10" else 100
    elif data.dataset == "synthetic":
        total, test, classes = data.synthetic_size, data.synthetic_size // 5, data.synthetic_classes
    else:
        counted = _count_image_folder(Path(data.data_dir))
        if counted is None:
            return None
        total, test, classes = counted
    val = round(total * data.val_fraction)
    train = total - val
    if data.subset is not None:
        train = min(train, data.subset)
    if data.image_size is None:  # the commands choose it first; a folder's: headers only
        from nas.data import choose_image_size

        data = choose_image_size(data)[0]
    return DataShape(train, val, test, data.image_size, classes)


def _count_image_folder(root: Path) -> tuple[int, int, int] | None:
    """(train files, test files, classes) of an image folder, or None if it is not one."""
    counts = []
    classes = 0
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            return None
        class_folders = [entry for entry in os.scandir(folder) if entry.is_dir()]
        classes = classes or len(class_folders)
        counts.append(sum(1 for c in class_folders for f in os.scandir(c.path) if f.is_file()))
    return (counts[0], counts[1], classes) if counts[0] > 1 and classes else None


@dataclass(frozen=True)
class RunPlan:
    """How much training a run asks for; its cost follows from the time of one step."""

    runs: int  # models trained to the end: trials still to train, or 1 for a retrain
    epochs: int  # epochs per model
    batch_size: int  # images per training step
    shape: DataShape
    parallel: int = 1  # models training at once (one worker per GPU)
    test_pass: bool = False  # a retrain evaluates the test set once at the end

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.shape.train_images / self.batch_size)

    def seconds(self, step_seconds: float) -> float:
        """The whole run's seconds when one training step of `batch_size` images takes
        `step_seconds`."""
        per_image = step_seconds / self.batch_size
        epoch = (
            self.steps_per_epoch * step_seconds
            + self.shape.val_images * per_image * VALIDATION_SHARE
        )
        test = self.shape.test_images * per_image * VALIDATION_SHARE if self.test_pass else 0.0
        return self.runs * (self.epochs * epoch + test) / max(1, self.parallel)

    def slow_seconds(self, macs: int) -> float:
        """The run's seconds on a deliberately slow machine (`SLOW_FLOPS`): an upper bound that
        needs no timing, used to skip the estimate for runs that are quick anyway."""
        flops = TRAIN_FLOPS_PER_MAC * macs * self.batch_size
        return self.seconds(SLOW_STEP_SECONDS + flops / SLOW_FLOPS)


@dataclass(frozen=True)
class StepTiming:
    """One training step, timed on the run's device."""

    seconds: float  # a step of the recipe's batch size (scaled from `timed_batch` if smaller)
    timed_batch: int  # images per timed step: the batch size, or fewer for a slow CPU step
    steps: int  # timed steps (after the warm-up steps)


def time_training_step(
    arch: Architecture, recipe, image_size: int, *, budget: float = TIMING_SECONDS
) -> StepTiming:
    """Time the recipe's training step (`nas.step.TrainingStep` under the run's precision, with
    its optimizer and memory layout, cuDNN autotuning on as `nas.train.fit` runs) for `arch` on
    random images at `recipe.device`; the global random state and the autotuning setting are
    left as they were.

    A warm-up step and a timed step on `PROBE_BATCH` images tell how long a full batch would
    take; where that is over `STEP_SECONDS_TARGET` (a large model on a CPU) fewer images are
    timed, and the step is scaled up to the batch size along the line through both timings
    (a fixed cost per step plus a cost per image). Steps are timed for about half of `budget`
    (never more than `budget`); the fastest counts, since other processes only add time."""
    import torch

    from nas.precision import cudnn_autotuning
    from nas.train import resolve_device

    device = resolve_device(recipe.device)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []), cudnn_autotuning(cuda):
        timing = _timed_steps(arch, recipe, image_size, device, budget)
    if cuda:
        torch.cuda.empty_cache()  # the model and its batches are gone: give the memory back
    return timing


def _timed_steps(arch: Architecture, recipe, image_size: int, device, budget: float):
    import torch

    from nas.batches import memory_format
    from nas.model import build_model
    from nas.step import TrainingStep, make_optimizer, recipe_precision

    cuda = device.type == "cuda"
    layout = memory_format(recipe, device)
    model = build_model(arch).to(device=device, memory_format=layout)
    precision = recipe_precision(recipe, device)
    step = TrainingStep(model, make_optimizer(model, recipe, device), precision)

    def timed(batch: int) -> float:
        started = time.perf_counter()
        images = torch.randn(batch, 3, image_size, image_size, device=device)
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


def typical_candidate(
    space,
    budget: int,
    num_classes: int,
    image_size: int,
    samples: int = CANDIDATE_SAMPLES,
    seed: int = 0,
) -> Architecture | None:
    """The median by MACs at `image_size` (what training time follows) of `samples` uniformly
    sampled candidates under the budget; None if the space has hardly any under it."""
    rng = random.Random(seed)
    under = []
    for _ in range(samples * 20):  # a budget that rejects 95 % of the space still gives some
        arch = space.sample(rng, num_classes)
        if count_params(arch) <= budget:
            under.append(arch)
            if len(under) == samples:
                break
    if not under:
        return None
    return sorted(under, key=lambda arch: count_macs(arch, image_size))[len(under) // 2]


def trained_so_far(storage_url: str, study_name: str) -> int:
    """Trained trials a resumed study already holds, read from a SQLite store (0 when there is
    none yet; server stores are not contacted here, so their estimate covers the whole target)."""
    from nas.storage import sqlite_path

    path = sqlite_path(storage_url)
    if path is None or not path.is_file():
        return 0
    import optuna

    from nas import records
    from nas.storage import open_storage

    try:
        study = optuna.load_study(
            study_name=study_name, storage=open_storage(storage_url, create=False)
        )
    except (UserError, KeyError):
        return 0
    return sum(records.is_trained(t) for t in study.get_trials(deepcopy=False))


# ---- what is printed -----------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    if seconds < 3600:
        return f"about {seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"about {seconds / 3600:.1f} h"
    return f"about {seconds / 86400:.1f} days"


def cost_lines(
    plan: RunPlan,
    step_seconds: float,
    device: str,
    arch: Architecture,
    *,
    search: bool,
) -> list[str]:
    """The estimate as one line, plus a line of flags that bring it down when it is long on a
    CPU. `search`: a search (the advice names --smoke and --trials too) or a retrain."""
    total = plan.seconds(step_seconds)
    what = f"{plan.runs} trials x " if search else ""
    which = "a typical candidate" if search else "the architecture"
    lines = [
        f"estimated cost on {device}: {format_duration(total)} for {what}{plan.epochs} epochs x "
        f"{plan.steps_per_epoch:,} steps of {plan.batch_size} at {step_seconds:.3g} s per step "
        f"({which}, {count_params(arch):,} parameters; validation included"
        + ("; pruned trials end sooner)" if search else ")")
    ]
    if device.startswith("cpu") and total > ADVICE_HOURS * 3600:
        cheaper = RunPlan(
            plan.runs,
            min(plan.epochs, EXAMPLE_EPOCHS),
            plan.batch_size,
            replace(plan.shape, train_images=min(plan.shape.train_images, EXAMPLE_SUBSET)),
            plan.parallel,
            plan.test_pass,
        )
        smoke = "--smoke (the whole flow in about a minute), " if search else ""
        trials = ", --trials N" if search else ""
        lines.append(
            f"to bring it down: {smoke}--subset N and --epochs N{trials} (--subset "
            f"{EXAMPLE_SUBSET} --epochs {min(plan.epochs, EXAMPLE_EPOCHS)}: "
            f"{format_duration(cheaper.seconds(step_seconds))}), or a CUDA GPU (--device cuda)"
        )
    return lines


def _print(line: str) -> None:
    print(line, flush=True)  # before the run's own lines, also in a log


def _device_label(device, recipe) -> str:
    import torch

    from nas.step import recipe_precision

    if device.type == "cuda":
        precision = recipe_precision(recipe, device).name
        return f"{device} ({torch.cuda.get_device_name(device)}, {precision})"
    return f"cpu ({usable_cpus()} cores, {torch.get_num_threads()} threads)"


def _estimate(
    plan: RunPlan,
    arch: Architecture,
    recipe,
    search: bool,
    out: Callable[[str], None],
) -> list[str]:
    from nas.train import resolve_device

    if plan.runs < 1 or plan.epochs < 1:
        return []
    if plan.slow_seconds(count_macs(arch, plan.shape.image_size)) < NOT_WORTH_SECONDS:
        return []
    device = resolve_device(recipe.device)
    timing = time_training_step(arch, recipe, plan.shape.image_size)
    lines = cost_lines(plan, timing.seconds, _device_label(device, recipe), arch, search=search)
    for line in lines:
        out(line)
    return lines


def announce_search_cost(
    config, data: DataConfig, recipe, devices: list[str], out: Callable[[str], None] = _print
) -> list[str]:
    """Print (through `out`) what the search will cost on this device; returns the lines.

    `devices` are the workers' devices: on several GPUs the trials train side by side."""
    try:
        from nas.space import SearchSpace

        shape = data_shape(data)
        if shape is None:
            return []
        space = SearchSpace.resolve(config.space)
        arch = typical_candidate(
            space, config.budget, shape.num_classes, shape.image_size, seed=config.seed
        )
        if arch is None:
            return []
        recipe = replace(recipe, device=devices[0])
        parallel = len(set(devices)) if devices[0].startswith("cuda") else 1
        plan = RunPlan(config.trials, recipe.epochs, recipe.batch_size, shape, parallel)
        if plan.slow_seconds(count_macs(arch, shape.image_size)) < NOT_WORTH_SECONDS:
            return []  # checked before the store is read: quick runs pay nothing
        plan = replace(plan, runs=config.trials - trained_so_far(config.storage, config.study))
        return _estimate(plan, arch, recipe, True, out)
    except UserError:
        return []  # the search reports the problem itself, in its own words


def announce_retrain_cost(
    arch: Architecture, data: DataConfig, recipe, out: Callable[[str], None] = _print
) -> list[str]:
    """Print (through `out`) what retraining `arch` will cost on this device."""
    try:
        shape = data_shape(data)
        if shape is None:
            return []
        plan = RunPlan(1, recipe.epochs, recipe.batch_size, shape, test_pass=True)
        return _estimate(plan, arch, recipe, False, out)
    except UserError:
        return []
