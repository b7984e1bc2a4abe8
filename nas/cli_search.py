"""Owns the search front end, `scripts/search.py` (`nas.cli.search_main`): flags, progress
lines and bar, and the closing summary with the commands to run next."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nas.cli_common import (
    EXIT_INTERRUPTED,
    Parser,
    add_data_flags,
    data_config_from,
    format_table,
    parse_count,
    quiet_optuna,
    run,
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
    from nas.search import DEFAULT_STORAGE, DEFAULT_STUDY, PRUNERS, SAMPLERS

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
    for name in ("trials", "epochs", "subset", "batch_size", "heartbeat"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "epochs" else 1):
            raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
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
        seed=args.seed if args.seed is not None else 0,
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


def report_path_for(config) -> Path:
    if config.storage.startswith("sqlite:///"):
        return Path(config.storage.removeprefix("sqlite:///")).parent / f"{config.study}.html"
    return Path("studies") / f"{config.study}.html"


def format_outcome(outcome) -> str:
    accuracy = "-" if outcome.val_accuracy is None else f"{outcome.val_accuracy:.2%}"
    note = f"  ({outcome.note})" if outcome.note else ""
    return (
        f"trial {outcome.number:>4}  params {outcome.params:>11,}  val {accuracy:>7}  "
        f"{outcome.seconds:>7.1f} s  {outcome.state}{note}"
    )


def search_command(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from nas.report import write_report
    from nas.search import run_search, trial_counts

    config, data, recipe = search_settings(args)
    quiet_optuna()
    print(
        f"study {config.study!r} in {config.storage}: {config.trials} trained candidates "
        f"under {config.budget:,} parameters, {recipe.epochs} epochs each, "
        f"space {config.space_file}"
    )
    bars = []  # created on the first event, so an early error prints no empty bar

    def bar():
        if not bars:
            bars.append(tqdm(total=config.trials, desc="trained", unit="trial", dynamic_ncols=True))
        return bars[0]

    def on_trial(outcome, trained: int) -> None:
        tqdm.write(format_outcome(outcome))
        bar().n = min(trained, config.trials)
        bar().refresh()

    def on_wait(running: int) -> None:
        bar().set_postfix_str(f"waiting for {running} running trial(s)")

    try:
        study = run_search(config, data, recipe, on_trial=on_trial, on_wait=on_wait)
    except KeyboardInterrupt:
        bar().close()
        print(
            "interrupted: the running trial was marked failed, finished trials are kept; "
            "rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    bar().n = min(trial_counts(study)[0], config.trials)
    bar().close()
    report = write_report(study, args.report or report_path_for(config))
    print_summary(study, config, report)
    return 0


def print_summary(study, config, report: Path) -> None:
    from nas.report import architecture_summary, rejected_trials, top_trials
    from nas.search import DEFAULT_STORAGE, DEFAULT_STUDY, trial_counts

    trained, _ = trial_counts(study)
    # a duplicate repeats its original's result: list each architecture once
    best = [t for t in top_trials(study, len(study.trials)) if "duplicate_of" not in t.user_attrs]
    rows = [
        (
            rank,
            trial.number,
            f"{trial.value:.2%}",
            f"{trial.user_attrs.get('params', 0):,}",
            architecture_summary(trial),
            f"{trial.user_attrs.get('seconds_per_epoch', 0):.1f}",
        )
        for rank, trial in enumerate(best[:5], start=1)
        if trial.value is not None
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
    args = search_parser().parse_args(argv)
    return run(search_command, args)
