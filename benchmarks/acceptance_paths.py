"""The checks of `gpu_acceptance.py` that walk the GPU paths a user meets beyond one plain run
(issue 31): a checkpoint written on two GPUs resumed on one, where each worker process really
ran its kernels, the host-memory data path forced with a small cap, an out-of-memory inside the
memory gate with a memory budget set, and cuDNN autotuning as it was during a run. Each is
GPU-only: under --cpu it is skipped with its reason (the CPU suite tests the decisions behind
each). Each takes the run's `Context` and returns a `Result` (see acceptance_checks.py); the
verdicts are plain functions, tested on the CPU (tests/test_gpu_acceptance.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from acceptance_checks import Context, Result, arch_named, take

from nas.config.machine import Machine
from nas.config.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
NEEDS_CUDA = "skipped on --cpu: needs CUDA"
PATH_IMAGES = 1024  # train images of the resume and host-path checks


def check_resume_two_gpus(ctx: Context) -> Result:
    """A checkpoint written by a run on the second of two GPUs (both GPUs' random states in it)
    resumes in a process that sees one GPU (CUDA_VISIBLE_DEVICES=0) and trains its next
    epoch there with a finite loss."""
    if not ctx.cuda:
        return Result("resume_2gpu", "skipped", NEEDS_CUDA)
    if torch.cuda.device_count() < 2:
        return Result("resume_2gpu", "skipped", "skipped: needs 2 GPUs (1 is visible)")
    from nas.train.fit import fit, set_seed
    from nas.train.model import build_model

    splits = dataclasses.replace(ctx.splits, train=take(ctx.splits.train, PATH_IMAGES))
    checkpoint = ctx.scratch / "two-gpus.ckpt"
    set_seed(0)
    fit(build_model(arch_named(ctx.sizes.train_arch)), splits, Recipe(epochs=1),
        Machine(device="cuda:1"), checkpoint_path=checkpoint, progress=False)  # fmt: skip
    script = (
        "import dataclasses, json, sys\n"
        "from acceptance_checks import CPU_SIZES, GPU_SIZES, arch_named, take\n"
        "from nas.config.data import DataConfig\nfrom nas.config.machine import Machine\n"
        "from nas.config.recipe import Recipe\nfrom nas.data.loading import load_splits\n"
        "from nas.train.fit import fit\nfrom nas.train.model import build_model\n"
        "import torch\n"
        f"splits = load_splits(DataConfig(dataset='synthetic', synthetic_size={PATH_IMAGES * 2}))\n"
        f"arch = arch_named({ctx.sizes.train_arch!r})\n"
        "result = fit(build_model(arch), splits, Recipe(epochs=2), Machine(device='cuda'),\n"
        f"             checkpoint_path={str(checkpoint)!r}, progress=False)\n"
        "print(json.dumps({'gpus': torch.cuda.device_count(),\n"
        "                  'losses': [row.train_loss for row in result.history]}))\n"
    )  # fmt: skip
    report, error = _run_python(script, CUDA_VISIBLE_DEVICES="0")
    losses = (report or {}).get("losses", [])
    ok = report is not None and report["gpus"] == 1 and len(losses) == 2
    ok = ok and all(math.isfinite(loss) for loss in losses)
    summary = (
        f"written on cuda:1 of 2, resumed where 1 GPU is visible: train losses {losses}"
        if report
        else f"the resuming process failed: {error}"
    )
    return Result("resume_2gpu", "passed" if ok else "failed", summary, {"report": report})


WORKER_SCRIPT = """
import json, sys
import torch
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.data import DataConfig
from nas.data.loading import load_splits
from nas.search.workers import own_device
from nas.train.fit import fit
from nas.train.model import build_model
from acceptance_checks import CPU_ARCH

device = sys.argv[1]
own_device(device)  # what a worker does first
splits = load_splits(DataConfig(dataset="synthetic", synthetic_size=512))
fit(build_model(CPU_ARCH), splits, Recipe(epochs=1), Machine(device="cuda"), progress=False)
allocated = [torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())]
print(json.dumps({"device": device, "current": torch.cuda.current_device(),
                  "name": torch.cuda.get_device_name(), "peak_bytes_per_gpu": allocated}))
"""


def check_worker_kernels(ctx: Context) -> Result:
    """Where kernels really run, per worker process: for each device `plan_devices` gives the
    default workers, a process does what a worker does first (`own_device`), trains with a bare
    `--device cuda` and reports from inside itself its current GPU, that GPU's name and the
    peak memory allocated on every GPU: only its own may hold any."""
    if not ctx.cuda:
        return Result("worker_kernels", "skipped", NEEDS_CUDA)
    from nas.search.workers import plan_devices

    devices = plan_devices(None, "cuda")
    reports = []
    for device in devices:
        report, error = _run_python(WORKER_SCRIPT, args=[device])
        reports.append(report or {"device": device, "error": error})
    ok, verdict = kernels_verdict(devices, reports)
    return Result("worker_kernels", "passed" if ok else "failed", verdict, {"reports": reports})


def kernels_verdict(planned: list[str], reports: list[dict]) -> tuple[bool, str]:
    """Whether each worker ran on its own GPU: its current GPU is the one planned, and no other
    GPU holds memory of its (a context or a tensor on GPU 0 would show there)."""
    problems, seen = [], []
    for device, report in zip(planned, reports, strict=True):
        if "error" in report:
            problems.append(f"{device}: {report['error']}")
            continue
        index = int(device.split(":")[1])
        seen.append(f"{device} ran on cuda:{report['current']} ({report['name']})")
        if report["current"] != index:
            problems.append(f"{device} ran its kernels on cuda:{report['current']}")
        others = [i for i, b in enumerate(report["peak_bytes_per_gpu"]) if b and i != index]
        if others:
            problems.append(f"{device} also allocated on {', '.join(f'cuda:{i}' for i in others)}")
    text = "; ".join(seen) or "no worker reported"
    return not problems and bool(seen), text + ("" if not problems else "; " + "; ".join(problems))


def check_host_path(ctx: Context) -> Result:
    """The host-memory data path, forced with a small cap: the split stays on the host and is
    uploaded per chunk of 64 through pinned memory, and its batches equal those of the split
    kept on the GPU for the same seed (same shuffle, same draws)."""
    if not ctx.cuda:
        return Result("host_path", "skipped", NEEDS_CUDA)
    from nas.data.batches import DeviceBatches
    from nas.data.device_memory import DataPlan

    train = take(ctx.splits.train, PATH_IMAGES)
    recipe, machine = Recipe(batch_size=32), Machine(device=str(ctx.device), chunk_size=64)
    host = DeviceBatches(train, recipe, machine, ctx.splits, ctx.device, DataPlan(False, 64, 1))
    resident = DeviceBatches(train, recipe, machine, ctx.splits, ctx.device, DataPlan(True, 64, 1))
    pairs = list(zip(host.epoch(seed=3), resident.epoch(seed=3), strict=True))
    differing = sum(not (torch.equal(a, b) and torch.equal(la, lb)) for (a, la), (b, lb) in pairs)
    on_device = all(images.device == ctx.device for (images, _), _ in pairs)
    ok = differing == 0 and on_device and host.pinned and not host.resident
    summary = (
        f"{len(train):,} images kept on the host (pinned: {host.pinned}), chunks of 64: "
        f"{len(pairs)} batches, {differing} differ from the split kept on {ctx.device}"
    )
    figures = {"batches": len(pairs), "differing": differing, "pinned": host.pinned}
    return Result("host_path", "passed" if ok else "failed", summary, figures)


def check_gate_oom(ctx: Context) -> Result:
    """An out-of-memory inside the memory gate: a search with --max-memory-mb whose first
    candidate cannot even be measured on the GPU rejects it as "does not fit on cuda:N" with
    the device recorded, and trains the next candidate in the same process."""
    if not ctx.cuda:
        return Result("gate_oom", "skipped", NEEDS_CUDA)
    from acceptance_search import OOM_BATCH, run_oom_search

    from nas import records, trial_view

    trials = run_oom_search(ctx, "gate_oom", max_memory_mb=10.0**9)
    first = trials[0]
    reason = first.user_attrs.get(records.PRUNE_REASON, "")
    rejected = trial_view.is_rejected(first) and reason == f"does not fit on {ctx.device}"
    recorded = first.user_attrs.get(records.OUT_OF_MEMORY) == str(ctx.device)
    trained = len(trials) > 1 and trial_view.is_trained(trials[1])
    summary = (
        f"trial 0 at batch {OOM_BATCH} with a memory budget: {reason or 'no reason'!r}, "
        f"out-of-memory device recorded: {recorded}; trial 1 "
        f"{'trained' if trained else 'did not train'}"
    )
    ok = rejected and recorded and trained
    figures = {"reason": reason, "recorded": recorded, "second_trained": trained}
    return Result("gate_oom", "passed" if ok else "failed", summary, figures)


def check_autotuning(ctx: Context) -> Result:
    """cuDNN autotuning as it was during a run (`FitResult.extra["cudnn_benchmark"]`, read
    inside `fit`): on for the training on CUDA, and the caller's setting back afterwards."""
    if not ctx.cuda:
        return Result("autotuning", "skipped", NEEDS_CUDA)
    from nas.train.fit import fit, set_seed
    from nas.train.model import build_model

    splits = dataclasses.replace(ctx.splits, train=take(ctx.splits.train, 256))
    before = torch.backends.cudnn.benchmark
    set_seed(0)
    result = fit(build_model(arch_named(ctx.sizes.train_arch)), splits, Recipe(epochs=1),
                 Machine(device=str(ctx.device)), progress=False)  # fmt: skip
    during, after = result.extra.get("cudnn_benchmark"), torch.backends.cudnn.benchmark
    ok = during is True and after == before
    summary = f"cudnn.benchmark during the run: {during}; before {before}, after {after}"
    return Result("autotuning", "passed" if ok else "failed", summary, {"during": during})


def _run_python(script: str, args: list[str] | None = None, **env: str):
    """Run `script` in a fresh interpreter (benchmarks/ and the checkout importable); its last
    stdout line as JSON, or None and the last line of its stderr."""
    paths = os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])
    finished = subprocess.run(
        [sys.executable, "-c", script, *(args or [])], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": paths, **env}, timeout=300,
    )  # fmt: skip
    if finished.returncode != 0 or not finished.stdout.strip():
        lines = finished.stderr.strip().splitlines()
        return None, lines[-1] if lines else f"exit {finished.returncode}"
    return json.loads(finished.stdout.strip().splitlines()[-1]), ""
