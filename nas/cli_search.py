"""Owns the search front end, `scripts/search.py` (`nas.cli.search_main`): flags, progress
lines and bar, the closing summary with the commands to run next, and `--workers N`: N worker
processes (this same command with a hidden `--worker-index`) on one store, whose combined
progress the parent reads from the store and summarises once.

Exit statuses: 0 done, 2 a user error, 130 Ctrl-C, 143 SIGTERM (stopped at a safe point; the
stopped trial is retried by the next run)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from nas.cli_common import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Parser,
    add_data_flags,
    data_config_from,
    format_table,
    parse_count,
    quiet_optuna,
    run,
    stop_on_sigterm,
)
from nas.errors import UserError

SMOKE = {  # --smoke: the whole flow on a CPU in about a minute, no dataset needed
    "dataset": "synthetic",
    "space": "search_spaces/tiny.yaml",
    "epochs": 2,
    "trials": 4,
    "device": "cpu",
    "study": "smoke",
    "budget": 20_000,  # tiny.yaml spans 1.5k..33k parameters: some candidates get rejected
}


DEFAULT_EPOCHS = 40  # the reference study's per-candidate sweep length; see the README


def search_parser() -> Parser:
    from nas.search import DEFAULT_STUDY, PRUNERS, SAMPLERS
    from nas.storage import DEFAULT_STORAGE

    parser = Parser(
        prog="scripts/search.py",
        description="Search ResNet architectures under a parameter budget with an Optuna study.",
    )
    parser.add_argument(
        "--budget",
        type=parse_count,
        help="most parameters a candidate may have: 5e6, 5000000, 5M, 500k (default: 5e6)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        help="trained candidates the study should hold, over all runs and workers (default: 50)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"training epochs per candidate (default: {DEFAULT_EPOCHS})",
    )
    parser.add_argument(
        "--space", help="search-space YAML file (default: search_spaces/resnet.yaml)"
    )
    parser.add_argument("--study", help=f"study name (default: {DEFAULT_STUDY})")
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"Optuna storage URL (default: {DEFAULT_STORAGE})",
    )
    add_data_flags(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument(
        "--augment",
        choices=("recipe", "basic", "none"),
        default="recipe",
        help="training augmentation (default: recipe)",
    )
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="(default: tpe)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median", help="(default: median)")
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="seconds between heartbeats of a running trial; a trial silent for 3 heartbeats "
        "is failed and retried (default: 30)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes on this machine, all on the same store (default: one per visible "
        "GPU on CUDA, each on its own device; 1 on the CPU)",
    )
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the parent
    parser.add_argument("--report", help="HTML report path (default: beside the SQLite store)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a complete search on synthetic data with search_spaces/tiny.yaml, 2 epochs, "
        "4 trials, on the CPU, in about a minute",
    )
    return parser


def search_settings(args: argparse.Namespace):
    from nas.search import DEFAULT_STUDY, SearchConfig
    from nas.train import TrainConfig

    smoke = SMOKE if args.smoke else {}

    def pick(name: str, default):
        value = getattr(args, name)
        return value if value is not None else smoke.get(name, default)

    if args.smoke and args.dataset is None:
        args.dataset = "synthetic"
    for name in ("trials", "epochs", "subset", "batch_size", "heartbeat", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if args.study is not None and not args.study.strip():
        raise UserError("--study must be a non-empty name")
    space_file = pick("space", "search_spaces/resnet.yaml")
    if args.space is None and not Path(space_file).exists():
        # the default spaces ship in the repository beside the package: found from any directory
        shipped = Path(__file__).resolve().parent.parent / space_file
        if shipped.exists():
            space_file = str(shipped)
    config = SearchConfig(
        budget=pick("budget", 5_000_000),
        trials=pick("trials", 50),
        space_file=space_file,
        study=pick("study", DEFAULT_STUDY),
        storage=args.storage,
        sampler=args.sampler,
        pruner=args.pruner,
        # each worker samples with its own seed so they do not propose the same candidates
        seed=(args.seed if args.seed is not None else 0) + (args.worker_index or 0),
        heartbeat=args.heartbeat,
        grace=3 * args.heartbeat,
    )
    recipe = TrainConfig(
        epochs=pick("epochs", DEFAULT_EPOCHS),
        batch_size=args.batch_size,
        augment=args.augment,
        seed=args.seed if args.seed is not None else 0,
        device=pick("device", "auto"),
    )
    return config, data_config_from(args), recipe


def report_path_for(storage: str, study: str) -> Path:
    """Where a study's HTML report goes: beside its SQLite store, else under studies/."""
    if storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///")).parent / f"{study}.html"
    return Path("studies") / f"{study}.html"


def format_outcome(outcome) -> str:
    accuracy = "-" if outcome.val_accuracy is None else f"{outcome.val_accuracy:.2%}"
    note = f"  ({outcome.note})" if outcome.note else ""
    return (
        f"trial {outcome.number:>4}  params {outcome.params:>11,}  val {accuracy:>7}  "
        f"{outcome.seconds:>7.1f} s  {outcome.state}{note}"
    )


STOPPED = (
    "stopped by SIGTERM: the running trial was marked failed and will be retried; "
    "rerun the same command to resume"
)
INTERRUPTED = (
    "interrupted: the running trial was marked failed, finished trials are kept; "
    "rerun the same command to resume"
)


def plan_workers(requested: int | None, device: str) -> list[str]:
    """The device of each worker: one per visible GPU by default on CUDA (worker i on
    `cuda:i`), else `requested` (default 1) workers on `device`."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        return [f"cuda:{i % gpus}" for i in range(requested or gpus)]
    return [device] * (requested or 1)


def check_report_path(path: Path) -> None:
    """Refuse a report path that cannot be written before the search, not after it."""
    if path.is_dir() or any(parent.is_file() for parent in path.parents):
        raise UserError(f"cannot write the report to {path}: pick a file path with --report")


def search_command(args: argparse.Namespace) -> int:
    config, data, recipe = search_settings(args)
    quiet_optuna()
    args.report = Path(args.report or report_path_for(config.storage, config.study))
    check_report_path(args.report)
    if args.worker_index is not None:
        return worker_command(config, data, recipe)
    devices = plan_workers(args.workers, recipe.device)
    workers = f", {len(devices)} workers" if len(devices) > 1 else ""
    print(
        f"study {config.study!r} in {config.storage}: {config.trials} trained candidates "
        f"under {config.budget:,} parameters, {recipe.epochs} epochs each, "
        f"space {config.space_file}{workers}"
    )
    if len(devices) > 1:
        return parent_command(args, config, data, recipe, devices)
    return single_command(args, config, data, recipe, devices[0])


class Progress:
    """The bar of trained candidates, created on the first event (an early error prints none)."""

    def __init__(self, total: int):
        self.total = total
        self.bar = None

    def get(self):
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.total, desc="trained", unit="trial", dynamic_ncols=True)
        return self.bar

    def trial(self, outcome, trained: int) -> None:
        from tqdm.auto import tqdm

        tqdm.write(format_outcome(outcome))
        self.set(trained)

    def set(self, trained: int) -> None:
        self.get().n = min(trained, self.total)
        self.get().refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def single_command(args, config, data, recipe, device: str) -> int:
    import dataclasses

    from nas.search import StopRequested, run_search

    recipe = dataclasses.replace(recipe, device=device)
    progress = Progress(config.trials)

    def on_wait(running: int) -> None:
        progress.get().set_postfix_str(f"waiting for {running} running trial(s)")

    try:
        with stop_on_sigterm() as stop:
            study = run_search(
                config, data, recipe, on_trial=progress.trial, on_wait=on_wait, should_stop=stop
            )
    except KeyboardInterrupt:
        progress.close()
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except StopRequested:
        progress.close()
        print(STOPPED, file=sys.stderr)
        return EXIT_TERMINATED
    return finish(args, config, study, progress)


def finish(args, config, study, progress: Progress) -> int:
    from nas.report import write_report
    from nas.search import trial_counts

    progress.set(trial_counts(study)[0])
    progress.close()
    report = write_report(study, args.report)  # resolved and checked by search_command
    print_summary(study, config, report)
    return 0


def worker_command(config, data, recipe) -> int:
    """One of the parent's workers: search quietly (the parent reports), stop like the parent."""
    from nas.search import StopRequested, run_search

    try:
        with stop_on_sigterm() as stop:
            run_search(config, data, recipe, should_stop=stop)
    except StopRequested:
        return EXIT_TERMINATED
    return 0


def worker_command_line(argv: Sequence[str], index: int, device: str) -> list[str]:
    # argparse keeps the last value of a repeated flag: these override the user's
    return [sys.executable, "-m", "nas", "search", *argv]  + [
        "--workers", "1", "--worker-index", str(index), "--device", device,
    ]  # fmt: skip


def parent_command(args, config, data, recipe, devices: list[str]) -> int:
    """Start one worker process per device, show their combined progress from the store, stop
    them on Ctrl-C or SIGTERM, and summarise once when all are done."""
    from nas.search import prepare_study

    _, study, _ = prepare_study(config, data, recipe)  # user errors surface here, once
    env = dict(os.environ)
    if all(device == "cpu" for device in devices) and "OMP_NUM_THREADS" not in env:
        # share the cores instead of every worker using all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(devices)))
    progress = Progress(config.trials)
    processes: list[subprocess.Popen] = []
    logs = [tempfile.TemporaryFile("w+") for _ in devices]  # each worker's stderr
    try:
        return _supervise(args, config, study, devices, env, progress, processes, logs)
    finally:
        for log in logs:
            log.close()


def _supervise(args, config, study, devices, env, progress, processes, logs) -> int:
    from nas.search import outcome_of, trial_counts

    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def report_new() -> None:
        for trial in study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in seen:
                seen.add(trial.number)
                progress.trial(outcome_of(trial), trial_counts(study)[0])

    def send(signum: int) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    stopping = False
    try:
        with stop_on_sigterm() as stop:
            for index, device in enumerate(devices):
                processes.append(
                    subprocess.Popen(
                        worker_command_line(args.argv, index, device),
                        env=env,
                        start_new_session=True,  # Ctrl-C reaches the parent, which forwards it
                        stdout=subprocess.DEVNULL,
                        stderr=logs[index],
                    )
                )
            while any(process.poll() is None for process in processes):
                if stop() and not stopping:
                    stopping = True
                    send(signal.SIGTERM)
                report_new()
                time.sleep(0.5)
    except KeyboardInterrupt:
        send(signal.SIGINT)
        for process in processes:
            process.wait()
        progress.close()
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    report_new()
    statuses = [process.returncode for process in processes]
    if stopping or EXIT_TERMINATED in statuses:
        progress.close()
        print(STOPPED, file=sys.stderr)
        return EXIT_TERMINATED
    failed = [(index, status) for index, status in enumerate(statuses) if status != 0]
    if failed:
        progress.close()
        index, status = failed[0]
        logs[index].seek(0)
        text = logs[index].read().strip()
        if status == EXIT_USAGE:  # every worker met the same mistake: say it once
            print(
                text.splitlines()[-1] if text else "error: a worker refused the settings",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if text:
            print(text, file=sys.stderr)
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        print(
            f"error: worker {index} {how}; finished trials are kept, rerun the same command "
            "to resume",
            file=sys.stderr,
        )
        return 1
    return finish(args, config, study, progress)


def print_summary(study, config, report: Path) -> None:
    from nas.report import architecture_summary, rejected_trials, top_trials, trial_accuracy
    from nas.search import DEFAULT_STUDY, trial_counts
    from nas.storage import DEFAULT_STORAGE

    trained, _ = trial_counts(study)
    rows = [  # top_trials lists each trained architecture once, best first
        (
            rank,
            trial.number,
            f"{trial_accuracy(trial):.2%}",
            f"{trial.user_attrs.get('params', 0):,}",
            architecture_summary(trial),
            f"{trial.user_attrs.get('seconds_per_epoch', 0):.1f}",
        )
        for rank, trial in enumerate(top_trials(study, 5), start=1)
    ]
    print()
    if rows:
        print(format_table(("rank", "trial", "val acc", "params", "architecture", "s/epoch"), rows))
    else:
        print("no trial has finished training yet")
    print(
        f"\nstudy {config.study!r}: {trained} trained, {len(rejected_trials(study))} rejected "
        f"over budget, {len(study.trials)} trials in all"
    )
    print(f"store:  {config.storage}")
    print(f"report: {report}")
    retrain = "python scripts/retrain_best.py"
    if config.study != DEFAULT_STUDY:
        retrain += f" --study {config.study}"
    if config.storage != DEFAULT_STORAGE:
        retrain += f" --storage {config.storage}"
    print(f"next:   optuna-dashboard {config.storage}")
    print(f"        {retrain}")


def search_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/search.py`: run or resume a budget-gated search."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = search_parser().parse_args(argv)
    args.argv = argv  # workers rerun the same command line
    return run(search_command, args)
