"""The checks of `gpu_acceptance.py` that run a real search: the out-of-memory prune inside
`run_search`, one worker process per visible GPU (`run_workers`), and the hardware budgets
(latency and training memory measured on the device, a search held to them). Each takes the
run's `Context` and returns a `Result` (see acceptance_checks.py).
"""

from __future__ import annotations

import contextlib
import os

import torch
from acceptance_checks import Context, Result

from nas import records, trial_view
from nas.arch.counts import count_params
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe

OOM_SPACE = """# gpu_acceptance: one candidate far too big for any GPU at batch 8192, one tiny
name: oom
stem: 16
layers: [2, 2]
channels: [16, 512]
blocks: [1, 8]
conv_kernel: [3]
skip_kernel: [1]
"""
OOM_BATCH = 8192  # 512 channels x 8 blocks at 32x32: ~75 MB of activations per image, ~600 GB


def run_oom_search(ctx: Context, name: str, max_memory_mb: float | None = None) -> list:
    """A real search (`run_search`) on `ctx.device` whose first candidate (enqueued) does not
    fit in GPU memory at batch `OOM_BATCH` and whose second is tiny; its trials."""
    from nas.arch.space import SearchSpace
    from nas.config.search import SearchConfig
    from nas.search.loop import open_study, run_search

    space_file = ctx.scratch / f"{name}.yaml"
    space_file.write_text(OOM_SPACE)
    space = SearchSpace.load(space_file)
    config = SearchConfig(
        budget=count_params(space.largest(10)), trials=1, space=str(space_file), study=name,
        storage=f"sqlite:///{ctx.scratch / f'{name}.db'}", sampler="random", pruner="none",
        max_memory_mb=max_memory_mb,
    )  # fmt: skip
    data = DataConfig(dataset="synthetic", synthetic_size=OOM_BATCH + 1024, subset=OOM_BATCH)
    recipe = Recipe(epochs=1, batch_size=OOM_BATCH, augment="none")
    machine = Machine(device=str(ctx.device))
    study = open_study(config, space, data, recipe, num_classes=10, image_size=32)
    shared = {"layers": 2, "conv_kernel": 3, "skip_kernel": 1}
    study.enqueue_trial(
        {**shared, "channels_1": 512, "blocks_1": 8, "channels_2": 512, "blocks_2": 8}
    )
    study.enqueue_trial(
        {**shared, "channels_1": 16, "blocks_1": 1, "channels_2": 16, "blocks_2": 1}
    )
    torch.cuda.empty_cache()
    return run_search(config, data, recipe, machine).get_trials(deepcopy=False)


def check_oom(ctx: Context) -> Result:
    """A real search (`run_search`) whose first candidate does not fit in the GPU's memory:
    it is pruned with its reason, and the next candidate trains in the same process."""
    from nas.arch.space import SearchSpace

    if not ctx.cuda:
        return Result("oom", "skipped", "skipped: needs CUDA")
    trials = run_oom_search(ctx, "oom")
    space = SearchSpace.load(ctx.scratch / "oom.yaml")
    first, second = trials[0], trials[1] if len(trials) > 1 else None
    reason = first.user_attrs.get(records.PRUNE_REASON, "")
    failed = trial_view.classify(first) == trial_view.TrialKind.FAILED
    pruned = failed and reason.startswith("out of memory")
    trained = second is not None and trial_view.is_trained(second)
    left = torch.cuda.memory_allocated(ctx.device) / 2**20
    summary = (
        f"trial 0 ({count_params(space.from_params(first.params, 10)):,} parameters, batch "
        f"{OOM_BATCH}): {first.state.name.lower()}, {reason or 'no reason recorded'!r}; trial 1 "
        f"{'trained' if trained else 'did not train'} in the same process; {left:.0f} MiB still "
        "allocated after"
    )
    figures = {
        "first_reason": reason, "first_state": first.state.name,
        "second_trained": trained, "allocated_mib_after": left, "trials": len(trials),
    }  # fmt: skip
    return Result("oom", "passed" if pruned and trained else "failed", summary, figures)


def check_workers(ctx: Context) -> Result:
    """`--workers`' default: one worker process per visible GPU, each on its own device, all
    on one store, until the study holds its trials. On the CPU (only when asked): one worker."""
    from nas.config.search import SearchConfig
    from nas.search.workers import plan_devices, run_workers

    if not ctx.cuda and "workers" not in ctx.requested:
        return Result(
            "workers", "skipped",
            "skipped on --cpu: one worker per GPU needs CUDA, and a worker process takes 10-40 s "
            "to start on 2 cores (--cpu --only workers runs one)",
        )  # fmt: skip
    devices = plan_devices(None, "cuda" if ctx.cuda else "cpu")
    config = SearchConfig(
        budget=20_000, trials=2 * len(devices) if ctx.cuda else 1, space="tiny", study="workers",
        storage=f"sqlite:///{ctx.scratch / 'workers.db'}", pruner="none",
    )  # fmt: skip
    data = DataConfig(dataset="synthetic", subset=128 if ctx.cuda else 64)
    recipe = Recipe(epochs=1, augment="recipe")
    machine = Machine(device=devices[0])
    if ctx.cuda:
        torch.cuda.empty_cache()  # the workers need the memory this process cached
    with _environment(OMP_NUM_THREADS="1") if not ctx.cuda else contextlib.nullcontext():
        result = run_workers(config, data, recipe, machine, devices)  # CPU: a tiny net, one thread
    import optuna

    study = optuna.load_study(study_name="workers", storage=config.storage)
    trained = [t for t in study.get_trials(deepcopy=False) if trial_view.is_trained(t)]
    used = sorted({str(t.user_attrs.get(records.DEVICE)) for t in trained})
    ok, verdict = workers_verdict(devices, used, result.status, len(trained), config.trials)
    summary = f"{len(devices)} worker(s) on {', '.join(devices)}: {verdict}"
    if result.status:
        summary += f" ({result.message.splitlines()[-1] if result.message else 'no message'})"
    figures = {"devices": devices, "status": result.status, "trained": len(trained),
               "devices_used": used}  # fmt: skip
    return Result("workers", "passed" if ok else "failed", summary, figures)


def workers_verdict(
    planned: list[str], used: list[str], status: int, trained: int, target: int
) -> tuple[bool, str]:
    """Whether the workers did their job, whatever order they started in: every worker exited
    0, the study holds its trained trials, and each trial trained on a device a worker was
    given. A worker that started after the others had trained every trial trains none: said,
    not failed."""
    strangers = sorted(set(used) - set(planned))
    idle = sorted(set(planned) - set(used))
    ok = status == 0 and trained >= target and bool(used) and not strangers
    text = f"exit {status}, {trained} of {target} trials trained on {', '.join(used) or 'none'}"
    if strangers:
        text += f"; {', '.join(strangers)} not among the workers' devices"
    if idle:
        text += f"; {', '.join(idle)} trained none (started after the others had finished)"
    return ok, text


LATENCY_AGREEMENT = 0.10  # two latency measurements of one architecture agree within this share


def check_costs(ctx: Context) -> Result:
    """Issue 14 on the device: latency measured twice agrees within 10 %; training memory is
    measured on CUDA (on the CPU: estimated, and labelled so) and compared with the analytic
    estimate; a search with a memory and a latency budget on the device trains only candidates
    within both."""
    import dataclasses

    import optuna
    from acceptance_checks import arch_named

    from nas.config.search import SearchConfig
    from nas.costs.latency import LatencySetup, measure_latency
    from nas.costs.memory import estimate_training_memory, training_memory
    from nas.search.loop import run_search

    device = str(ctx.device)  # the GPU the acceptance was given, not GPU 0
    arch = arch_named(ctx.sizes.train_arch)
    setup = LatencySetup(device=device, batch=1, threads=1)
    first, second = (measure_latency(arch, 32, setup) for _ in range(2))
    disagreement = abs(first.median_ms - second.median_ms) / min(first.median_ms, second.median_ms)
    recipe, machine = Recipe(batch_size=64), Machine(device=device)
    memory = training_memory(arch, 32, recipe, machine)
    estimate = estimate_training_memory(arch, 32, 64, recipe.optimizer)
    store = ctx.scratch / "costs.db"
    config = SearchConfig(
        budget=20_000, trials=2, space="tiny", study="costs", storage=f"sqlite:///{store}",
        sampler="random", warm_start=False, max_latency_ms=4 * first.median_ms,
        latency_device=device, max_memory_mb=2 * estimate.megabytes,
    )  # fmt: skip
    data = DataConfig(dataset="synthetic", subset=128)
    run_search(config, data, dataclasses.replace(recipe, epochs=1, augment="none"), machine)
    study = optuna.load_study(study_name="costs", storage=config.storage)
    trained = [t for t in study.trials if trial_view.is_trained(t)]
    within = all(
        t.user_attrs[records.LATENCY_MS] <= config.max_latency_ms
        and t.user_attrs[records.MEMORY_MB] <= config.max_memory_mb
        for t in trained
    )
    measured_where_promised = memory.measured == ctx.cuda
    # on --cpu (CI's shared runners) the agreement is reported, not required: other processes
    # on the same cores move CPU timings by tens of percent (benchmarks/RESULTS.md)
    agrees = disagreement <= LATENCY_AGREEMENT or not ctx.cuda
    ok = agrees and within and len(trained) == 2 and measured_where_promised
    summary = (
        f"{ctx.sizes.train_arch} latency on {device}: {first.describe()} then "
        f"{second.describe()} ({disagreement:.1%} apart); training memory at batch 64: "
        f"{memory.describe()}; CPU estimate {estimate.megabytes:.1f} MB "
        f"({estimate.megabytes / memory.megabytes:.2f}x); budgeted search: {len(trained)} "
        f"trained, all within: {within}"
    )
    figures = {
        "latency_ms": [first.median_ms, second.median_ms], "disagreement": disagreement,
        "latency_seconds": [first.seconds, second.seconds], "memory": memory.to_dict(),
        "estimate": estimate.to_dict(), "trained_within_budgets": within,
    }  # fmt: skip
    return Result("costs", "passed" if ok else "failed", summary, figures)


@contextlib.contextmanager
def _environment(**values: str):
    """Environment variables set for the block (child processes inherit them), then restored."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
