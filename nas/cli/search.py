"""Owns `nas search`: its flags (defaults from `SearchConfig`, `Recipe`, `DataConfig`; the
settings they make are `nas.cli.search_settings`), the closing summary with the commands to run
next (progress lines are `nas.cli.progress`), and the choice between one search in this
process and `--workers N` (nas.search.workers).

Exit statuses: 0 done, 2 a user error, 130 Ctrl-C, 143 SIGTERM (stopped at a safe point; the
stopped trial is retried by the next run)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from nas.cli.budgets import add_budget_flags
from nas.cli.common import Parser, non_negative_float, parse_count, positive_int, quiet_optuna
from nas.cli.flags import (
    add_data_flags,
    add_recipe_flags,
    add_storage_flags,
    announce_image_size,
    warn_about_precision,
)
from nas.cli.progress import Progress
from nas.cli.search_settings import search_settings
from nas.config.costs import COSTS
from nas.config.search import (
    PRUNERS,
    SAMPLERS,
    SEARCH_EPOCHS,
    SearchConfig,
)
from nas.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, StopRequested, UserError, stop_on_sigterm

STOPPED = (
    "stopped by SIGTERM: the running trial was marked failed and will be retried; "
    "rerun the same command to resume"
)
INTERRUPTED = (
    "interrupted: the running trial was marked failed, finished trials are kept; "
    "rerun the same command to resume"
)


def add_search_parser(commands) -> None:
    parser: Parser = commands.add_parser(
        "search",
        help="search architectures under a parameter budget (resumable)",
        description="Search ResNet architectures under a parameter budget with an Optuna "
        "study. Rerun the same command to resume it.",
    )
    parser.add_argument(
        COSTS["params"].flag,
        type=parse_count,
        help=f"{COSTS['params'].flag_help} (default: {SearchConfig.budget:,})",
    )
    parser.add_argument(
        "--trials",
        type=positive_int,
        help="trained candidates the study should hold, over all runs and workers "
        f"(default: {SearchConfig.trials})",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        help=f"training epochs per candidate (default: {SEARCH_EPOCHS})",
    )
    parser.add_argument(
        "--space",
        help="a built-in space's name (nas space --list) or a YAML file "
        f"(default: {SearchConfig.space})",
    )
    add_storage_flags(parser)
    parser.set_defaults(study=None)  # --smoke names its own study unless one is given
    add_data_flags(parser)
    add_recipe_flags(parser)
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=SearchConfig.sampler,
        help="how candidates are proposed (default: %(default)s)",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        help=f"how weak candidates are stopped early (default: {SearchConfig.pruner}; none "
        "with --objective pareto, which Optuna cannot prune)",
    )
    add_budget_flags(parser)
    add_store_flags(parser)
    add_run_flags(parser)
    parser.set_defaults(handler=search_command)


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """How this run's processes share the study store: heartbeats, the wait for a store that
    stopped answering, worker processes."""
    parser.add_argument(
        "--heartbeat",
        type=positive_int,
        default=SearchConfig.heartbeat,
        help="seconds between heartbeats of a running trial; a trial silent for 3 heartbeats "
        "is failed and retried (default: %(default)s)",
    )
    parser.add_argument(
        "--store-wait",
        type=non_negative_float,
        metavar="SECONDS",
        default=SearchConfig.store_wait,
        help="how long to wait for a study store that stopped answering (a database restart "
        "or failover, a full disk) before stopping; the same command then resumes "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes on this machine, all on the same store (default: one per "
        "visible GPU on CUDA, each on its own device; 1 on the CPU)",
    )


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """How this run of the search goes: the warm start, the time limit, confirmations, the
    report's path, and --smoke."""
    parser.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_false",
        help="do not train the reference study's models first (a new study trains those "
        "its space holds within the budget before sampling)",
    )
    parser.add_argument(
        "--time-limit",
        metavar="DURATION",
        help="the search ends within this (8h, 90m, 3600s), counted from the process's start "
        "and holding back the closing report: no trial "
        "or confirmation run starts that the time left cannot hold, and one still training "
        "when it is out stops after its epoch (the next run retries it); with --trials, "
        "whichever comes first; each run (a resume) has its own limit",
    )
    parser.add_argument(
        "--confirm",
        type=int,
        metavar="N",
        default=SearchConfig.confirm,
        help="confirmation runs (another seed) this run may spend before naming its best: the "
        "race confirms candidates in order until the leader's mean stands above every "
        "unconfirmed candidate's run (default: %(default)s; 0: none)",
    )
    parser.add_argument(
        "--report",
        help="HTML report path, kept by the study for later refreshes (default: the one the "
        "study keeps, else beside the SQLite store)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a complete search on synthetic data with the tiny space, 2 epochs, batch 32, "
        "4 trials, on the CPU, in about a minute",
    )


def check_report_path(path: Path) -> None:
    """Refuse a report path that cannot be written before the search, not after it."""
    if path.is_dir() or any(parent.is_file() for parent in path.parents):
        raise UserError(f"cannot write the report to {path}: pick a file path with --report")


def search_command(args: argparse.Namespace) -> int:
    import datetime

    from nas.search.workers import plan_devices
    from nas.store.opening import display_url

    started = datetime.datetime.now(datetime.UTC)  # the summary tells this command's runs
    started_clock = args.started  # the time limit counts from the command's start
    config, data, recipe, machine = search_settings(args)
    quiet_optuna()
    from nas.report.page import default_report_path

    report = Path(args.report or default_report_path(config.storage, config.study))
    check_report_path(report)
    devices = plan_devices(args.workers, machine.device)
    workers = f", {len(devices)} workers" if len(devices) > 1 else ""
    from nas.config.costs import cost_label
    from nas.config.machine import shared_latency_refusal, sharing_line
    from nas.costs.budgets import Budgets

    if Budgets.of(config).latency_measured:  # refused before anything is printed or stored
        refusal = shared_latency_refusal(config.latency_device, devices)
        if refusal is not None:
            raise UserError(refusal)

    goal = (
        f"Pareto (accuracy up, {cost_label(config.minimize)} down)" if config.pareto else "accuracy"
    )
    print(
        f"study {config.study!r} in {display_url(config.storage)}: {config.trials} trained "
        f"candidates within {Budgets.of(config).describe()}, {recipe.epochs} epochs each, "
        f"space {config.space}, objective {goal}{workers}",
        flush=True,
    )
    line = sharing_line(devices)
    if line is not None:
        print(line, flush=True)  # once, for every worker
    warn_about_precision(machine.precision, devices)
    data = announce_image_size(data)
    if not args.smoke:  # the smoke run's minute needs no estimate
        from nas.costs.estimate import announce_search_cost

        announce_search_cost(config, data, recipe, machine, devices)
    progress = Progress(config.trials)
    try:
        if len(devices) > 1:
            status = _with_workers(config, data, recipe, machine, devices, progress, started_clock)
        else:
            machine = dataclasses.replace(machine, device=devices[0])
            status = _in_this_process(config, data, recipe, machine, progress, started_clock)
    except KeyboardInterrupt:
        progress.close()
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    if status:
        return status
    return finish(config, report if args.report else None, progress, started, time.time())


def _in_this_process(config, data, recipe, machine, progress: Progress, started: float) -> int:
    from nas.search.loop import run_search
    from nas.search.time_budget import TimeBudget

    budget = None
    if config.time_limit is not None:  # counted from the command's start
        budget = TimeBudget(config.time_limit, offset=time.time() - started)
    try:
        with stop_on_sigterm() as stop:
            run_search(
                config, data, recipe, machine, on_trial=progress.trial, on_wait=progress.waiting,
                should_stop=stop, announce=progress.note, time_budget=budget,
            )  # fmt: skip
    except StopRequested:
        progress.close()
        print(STOPPED, file=sys.stderr)
        return EXIT_TERMINATED
    return 0


def _with_workers(config, data, recipe, machine, devices, progress: Progress, started) -> int:
    from nas.search.workers import run_workers

    with stop_on_sigterm() as stop:
        result = run_workers(
            config, data, recipe, machine, devices, on_trial=progress.trial, should_stop=stop,
            announce=progress.note, started=started,
        )  # fmt: skip
    if result.status == EXIT_TERMINATED:
        progress.close()
        print(STOPPED, file=sys.stderr)
    elif result.status:
        progress.close()
        message = result.message
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
    return result.status


def finish(config, given: Path | None, progress: Progress, started=None, closing=None) -> int:
    """Write the report (to `given`, which the study then keeps, else to the one it keeps) and
    print the summary; `closing`: when the search ended (`time.time()`): the study keeps how
    long this took, which the next run's time limit reserves."""
    import optuna

    from nas.report.page import record_report_path, report_path, write_report
    from nas.search.progress import trial_counts
    from nas.store.opening import open_storage

    study = optuna.load_study(study_name=config.study, storage=open_storage(config.storage))
    progress.set(trial_counts(study)[0])
    progress.close()
    if given is not None:
        record_report_path(study, given)  # a retrain or `nas report` refreshes this file
    report = write_report(
        study, given or report_path(study, config.storage), storage=config.storage
    )
    from nas.cli.summary import print_summary

    print_summary(study, config, report, since=started)
    if closing is not None:
        from nas.search.time_budget import record_closing

        record_closing(study, time.time() - closing)
    return 0
