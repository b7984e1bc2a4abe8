"""Owns local worker processes: N searches on one store, started, watched and stopped together.

`run_workers` starts one `python -m nas.search.workers` process per device. Each worker reads its
settings (the search, data, recipe and machine configs, its index and device) from the environment
variable `NAS_WORKER_SETTINGS`, never from its command line: a storage URL's password stays out
of `ps`. Each samples with the search seed plus its index. A worker on a GPU makes it its
current device first (`own_device`), so `cuda` means its own GPU (`nas.config.machine`). The parent
reports every finished trial from the store as it appears, forwards Ctrl-C and SIGTERM to the
workers, and turns their exit statuses into one result. The workers map the parent's one copy of
the data (`nas.data.shared`) instead of each loading its own.

Exit statuses of a worker: 0 done, 2 a user error (its one sentence on stderr), 143 stopped by
SIGTERM at a safe point.

Claims:
- `plan_devices` is `nas.config.machine.worker_devices` on this machine's visible GPUs: without one,
  `auto` workers are named `cpu`; each worker's settings carry its device, with its index, and
  its seed (the search's plus its index).
- A plan naming a GPU that is not there is one sentence, exit status 2, nothing stored.
- Each worker's machine says how many workers train on its GPU (`Machine.gpu_shared_by`,
  from `nas.config.machine.gpu_shared_by`).
- `own_device` makes a CUDA device the current GPU and does nothing for the CPU (a CPU worker
  never touches CUDA).
- With a time limit, no worker starts once the time left cannot hold a worker's start-up,
  priced as this command's own until its study was prepared (the same work), and the closing
  (`time_budget.workers_refusal`: one sentence, result 0). Each worker holds back the parent's
  poll (its closing) from its limit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nas.config.data import DataConfig
from nas.config.machine import Machine, gpu_shared_by, usable_cpus, worker_devices
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.data.shared import SHARED_DATA_ENV, shared_copy, shared_splits
from nas.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    StopRequested,
    UserError,
    stop_on_sigterm,
)
from nas.process import skip_final_collection
from nas.search.loop import prepare_study, run_search
from nas.search.progress import NewTrials, TrialOutcome
from nas.search.time_budget import TimeBudget, recorded_closing, workers_refusal

SETTINGS_ENV = "NAS_WORKER_SETTINGS"  # JSON: {"search", "data", "recipe", "machine": ...}
WATCH_POLL = 0.5  # seconds between the parent's looks at its workers and the store


def plan_devices(requested: int | None, device: str) -> list[str]:
    """The device of each worker on this machine (`nas.config.machine.worker_devices`): one per
    visible GPU by default on CUDA, worker i on `cuda:<i mod GPUs>`, else `requested`
    (default 1) workers on `device`."""
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return worker_devices(visible, requested, device)


def own_device(device: str) -> None:
    """Make a worker's GPU its current one, before anything touches CUDA: a bare `cuda` (the
    latency device, the loader's pin-memory thread, torch's defaults) then means that GPU,
    and no worker opens a context on GPU 0 it does not train on."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))


@dataclass
class WorkersResult:
    """How the workers ended: `status` is 0, EXIT_USAGE, EXIT_TERMINATED or 1 (a crash)."""

    status: int
    message: str = ""  # for a non-zero status: what to tell the user


def worker_environment(
    config: SearchConfig,
    data: DataConfig,
    recipe: Recipe,
    machine: Machine,
    index: int,
    device: str,
    shared_by: int = 1,
    started: float | None = None,
) -> dict[str, str]:
    """Worker `index`'s environment: its settings on `device`, which `shared_by` workers train
    on (`Machine.gpu_shared_by`)."""
    env = dict(os.environ)
    settings = {
        # each worker samples with its own seed so they do not propose the same candidates;
        # each confirms at its end what the race still asks for (claimed in the store)
        "search": dataclasses.asdict(dataclasses.replace(config, seed=config.seed + index)),
        "started": started,  # the command's start (time.time()): where its time limit counts from
        "data": data.to_dict(),
        "recipe": recipe.to_dict(),
        "machine": dataclasses.replace(machine, device=device, gpu_shared_by=shared_by).to_dict(),
    }
    env[SETTINGS_ENV] = json.dumps(settings)
    return env


def run_workers(
    config: SearchConfig,
    data: DataConfig,
    recipe: Recipe,
    machine: Machine,
    devices: list[str],
    *,
    on_trial: Callable[[TrialOutcome, int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    announce: Callable[[str], None] | None = None,
    started: float | None = None,
) -> WorkersResult:
    """Run one worker per device until the study holds `config.trials` trained candidates.
    `started`: when the command started (`time.time()`): each worker's time limit counts from
    there.

    Ctrl-C (KeyboardInterrupt here) is forwarded to every worker, which fail their running
    trials; the KeyboardInterrupt is re-raised once they have exited."""
    # user errors surface here, once; a new study is created (and warm-started) here
    _, study, splits, _ = prepare_study(config, data, recipe, machine, announce=announce)
    if config.time_limit is not None and started is not None:  # room for their start-up?
        refusal = workers_refusal(
            max(0.0, time.time() - started), config.time_limit,
            WATCH_POLL + recorded_closing(study.user_attrs),
        )  # fmt: skip
        if refusal is not None:
            (announce or print)(refusal)
            return WorkersResult(0)
    new_trials = NewTrials(study, on_trial)
    logs = [tempfile.TemporaryFile("w+") for _ in devices]  # each worker's stderr
    processes: list[subprocess.Popen] = []
    try:
        with shared_copy(splits, announce or print) as folder:  # one copy of the data for all
            del splits  # this process trains nothing: its copy goes
            for index, log in enumerate(logs):
                env = _worker_env(config, data, recipe, machine, index, devices, started)
                env.update({SHARED_DATA_ENV: str(folder)} if folder else {})
                processes.append(_start_worker(env, log))
            stopping = _watch(processes, new_trials, should_stop)
    except KeyboardInterrupt:
        _send(processes, signal.SIGINT)
        for process in processes:
            process.wait()
        raise
    finally:
        texts = _read_and_close(logs)
    new_trials.report()
    return _result_of([process.returncode for process in processes], texts, stopping)


def _worker_env(
    config: SearchConfig,
    data: DataConfig,
    recipe: Recipe,
    machine: Machine,
    index: int,
    devices: list[str],
    started: float | None = None,
) -> dict[str, str]:
    """Worker `index`'s environment; CPU-only workers share the cores between them."""
    shared_by = gpu_shared_by(devices, index)
    env = worker_environment(
        config, data, recipe, machine, index, devices[index], shared_by, started
    )
    if all(device == "cpu" for device in devices) and "OMP_NUM_THREADS" not in env:
        # share the cores instead of every worker using all of them
        env["OMP_NUM_THREADS"] = str(max(1, usable_cpus() // len(devices)))
    return env


def _start_worker(env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nas.search.workers"],
        env=env,
        start_new_session=True,  # Ctrl-C reaches the parent, which forwards it
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def _send(processes: list[subprocess.Popen], signum: int) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)


def _watch(
    processes: list[subprocess.Popen], new_trials: NewTrials, should_stop: Callable[[], bool]
) -> bool:
    """Report finished trials until every worker has exited; a stop request is sent to them
    once, as SIGTERM. Returns whether it was."""
    stopping = False
    while any(process.poll() is None for process in processes):
        if should_stop() and not stopping:
            stopping = True
            _send(processes, signal.SIGTERM)
        new_trials.report()
        time.sleep(WATCH_POLL)
    return stopping


def _read_and_close(logs) -> list[str]:
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read().strip())
        log.close()
    return texts


def _result_of(statuses: list[int], texts: list[str], stopping: bool) -> WorkersResult:
    """One result from the workers' exit statuses and their stderr."""
    if stopping or EXIT_TERMINATED in statuses:
        return WorkersResult(EXIT_TERMINATED)
    failed = [(index, status) for index, status in enumerate(statuses) if status != 0]
    if not failed:
        return WorkersResult(0)
    index, status = failed[0]
    text = texts[index]
    if status == EXIT_USAGE:  # every worker met the same mistake: say it once
        return WorkersResult(EXIT_USAGE, text.splitlines()[-1] if text else "a worker refused")
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    message = (f"{text}\n" if text else "") + (
        f"worker {index} {how}; finished trials are kept, rerun the same command to resume"
    )
    return WorkersResult(1, message)


def worker_main() -> int:
    """One worker: search quietly with the settings in `NAS_WORKER_SETTINGS` (the parent
    reports), stop like the parent."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        settings = json.loads(os.environ[SETTINGS_ENV])
        config = SearchConfig(**settings["search"])
        data = DataConfig.from_dict(settings["data"])
        recipe = Recipe.from_dict(settings["recipe"])
        machine = Machine.from_dict(settings["machine"])
    except (KeyError, ValueError, TypeError):
        print(f"error: a worker needs its settings in ${SETTINGS_ENV}", file=sys.stderr)
        return EXIT_USAGE
    budget = None
    if config.time_limit is not None:  # counted from the command's start, not this process's
        started = settings.get("started")
        spent = max(0.0, time.time() - started) if isinstance(started, (int, float)) else 0.0
        # the parent notices this worker's exit at its next poll, then closes
        budget = TimeBudget(config.time_limit, offset=spent, closing=WATCH_POLL)
    try:
        own_device(machine.device)
        shared = os.environ.get(SHARED_DATA_ENV)  # the parent's copy of the data, mapped
        splits = shared_splits(Path(shared)) if shared else None
        with stop_on_sigterm() as stop:
            run_search(
                config, data, recipe, machine, splits=splits, should_stop=stop, time_budget=budget
            )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StopRequested:
        return EXIT_TERMINATED
    except KeyboardInterrupt:  # forwarded by the parent; the running trial is already failed
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    status = worker_main()
    skip_final_collection()  # the parent waits for this process's exit
    sys.exit(status)
