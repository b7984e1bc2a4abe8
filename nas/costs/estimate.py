"""Owns the cost estimate a search or a retrain prints before it starts: which run to price
(the trials a resumed search still has to train, a typical candidate: `nas.costs.run_plan`), whether
it is worth timing, one timed step (`nas.costs.step_timing`) turned into the whole run's time, and
the words: one line, plus, for a long run on a CPU, the flags that bring it down.

Claims:
- Nothing is written, and a SQLite store is only read (to count off the trials a resumed
  search already trained).
- A run that even a deliberately slow machine would finish within 10 minutes by the analytic
  count (`nas.costs.run_plan.RunPlan.slow_seconds`) is not timed at all: quick, smoke and test runs
  pay nothing.
- It is the cost of a full run: the pruner stops weak trials early and a resumed run skips the
  epochs it has, so the real run is usually shorter; augmentation and data handling are not
  timed ("The floor" in benchmarks/RESULTS.md measures what they add).
- The parent of several workers on GPUs times nothing (`nas.config.machine.parent_may_use_cuda`):
  it says so in one line instead, and initialises no CUDA.
- Where the estimate cannot be made (an unusable device, no candidate under the budget, a
  missing image folder), nothing is printed: the run itself reports the problem in its words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from nas.arch.architecture import Architecture
from nas.arch.counts import count_macs, count_params
from nas.config.data import DataConfig
from nas.config.machine import parent_may_use_cuda, usable_cpus
from nas.costs.run_plan import RunPlan, data_shape, typical_candidate
from nas.costs.step_timing import time_training_step
from nas.errors import UserError

NOT_WORTH_SECONDS = 600.0  # runs that machine ends within 10 min (a real one: 1-2) are not timed
ADVICE_HOURS = 3.0  # a CPU run estimated longer than this gets the line of flags
EXAMPLE_SUBSET, EXAMPLE_EPOCHS = 5000, 10  # the cheaper settings the advice line prices
NO_ESTIMATE_WITH_GPU_WORKERS = (
    "no cost estimate before {workers} GPU workers: timing a step in this process would keep a "
    "CUDA context on {gpu} for the whole search, memory its worker needs; the progress lines "
    "show each trial's time"
)


def trained_so_far(storage_url: str, study_name: str) -> int:
    """Trained trials a resumed study already holds, read from a SQLite or journal file (0 when
    there is none yet; server stores are not contacted here, so their estimate covers the whole
    target)."""
    from nas.store.opening import store_file

    path = store_file(storage_url)
    if path is None or not path.is_file():
        return 0
    import optuna

    from nas import trial_view
    from nas.store.opening import open_storage

    try:
        study = optuna.load_study(
            study_name=study_name, storage=open_storage(storage_url, create=False)
        )
    except (UserError, KeyError):
        return 0
    return sum(trial_view.is_trained(t) for t in study.get_trials(deepcopy=False))


# ---- what is printed -----------------------------------------------------------------------


def rough_duration(seconds: float) -> str:
    """An estimate in words at the precision it deserves: `about 3 min`, `about 1.5 h` (a time
    already spent is counted exactly by nas.search.time_budget.format_duration)."""
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
        f"estimated cost on {device}: {rough_duration(total)} for {what}{plan.epochs} epochs x "
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
            f"{rough_duration(cheaper.seconds(step_seconds))}), or a CUDA GPU (--device cuda)"
        )
    return lines


def _print(line: str) -> None:
    print(line, flush=True)  # before the run's own lines, also in a log


def _device_label(device, machine) -> str:
    import torch

    from nas.train.precision import precision_for

    if device.type == "cuda":
        precision = precision_for(machine.precision, device).name
        return f"{device} ({torch.cuda.get_device_name(device)}, {precision})"
    return f"cpu ({usable_cpus()} cores, {torch.get_num_threads()} threads)"


def _estimate(
    plan: RunPlan,
    arch: Architecture,
    recipe,
    machine,
    search: bool,
    out: Callable[[str], None],
) -> list[str]:
    from nas.train.devices import resolve_device

    if plan.runs < 1 or plan.epochs < 1:
        return []
    if plan.slow_seconds(count_macs(arch, plan.shape.image_size)) < NOT_WORTH_SECONDS:
        return []
    device = resolve_device(machine.device)
    timing = time_training_step(arch, recipe, machine, plan.shape.image_size)
    lines = cost_lines(plan, timing.seconds, _device_label(device, machine), arch, search=search)
    for line in lines:
        out(line)
    return lines


def announce_search_cost(
    config,
    data: DataConfig,
    recipe,
    machine,
    devices: list[str],
    out: Callable[[str], None] = _print,
) -> list[str]:
    """Print (through `out`) what the search will cost on this device; returns the lines.

    `devices` are the workers' devices: on several GPUs the trials train side by side."""
    try:
        from nas.arch.space import SearchSpace

        shape = data_shape(data)
        if shape is None:
            return []
        space = SearchSpace.resolve(config.space)
        arch = typical_candidate(
            space, config.budget, shape.num_classes, shape.image_size, seed=config.seed
        )
        if arch is None:
            return []
        machine = replace(machine, device=devices[0])
        parallel = len(set(devices)) if devices[0].startswith("cuda") else 1
        plan = RunPlan(config.trials, recipe.epochs, recipe.batch_size, shape, parallel)
        if plan.slow_seconds(count_macs(arch, shape.image_size)) < NOT_WORTH_SECONDS:
            return []  # checked before the store is read: quick runs pay nothing
        if not parent_may_use_cuda(devices):
            line = NO_ESTIMATE_WITH_GPU_WORKERS.format(workers=len(devices), gpu=devices[0])
            out(line)
            return [line]
        plan = replace(plan, runs=config.trials - trained_so_far(config.storage, config.study))
        return _estimate(plan, arch, recipe, machine, True, out)
    except UserError:
        return []  # the search reports the problem itself, in its own words


def announce_retrain_cost(
    arch: Architecture, data: DataConfig, recipe, machine, out: Callable[[str], None] = _print
) -> list[str]:
    """Print (through `out`) what retraining `arch` will cost on this device."""
    try:
        shape = data_shape(data)
        if shape is None:
            return []
        plan = RunPlan(1, recipe.epochs, recipe.batch_size, shape, test_pass=True)
        return _estimate(plan, arch, recipe, machine, False, out)
    except UserError:
        return []
