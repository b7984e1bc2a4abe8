"""Owns the retrain front end, `scripts/retrain_best.py` (`nas.cli.retrain_main`): which
architecture and settings to retrain, and the printed result. SIGTERM stops the run after the
current epoch's checkpoint with exit status 143; the same command resumes it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nas.arch import count_params
from nas.cli_common import (
    EXIT_TERMINATED,
    Parser,
    add_data_flags,
    data_config_from,
    format_table,
    load_arch_file,
    quiet_optuna,
    resolve_preset,
    run,
    stop_on_sigterm,
)
from nas.errors import UserError

RETRAIN_EPOCHS = 150  # the reference study's final training length


def retrain_parser() -> Parser:
    from nas.search import DEFAULT_STUDY
    from nas.storage import DEFAULT_STORAGE

    parser = Parser(
        prog="scripts/retrain_best.py",
        description="Train a study's best architecture (or a named one) for long, evaluate it on "
        "the test set, and export it to a run folder. Rerun the same command to resume.",
    )
    parser.add_argument("--study", default=DEFAULT_STUDY, help=f"(default: {DEFAULT_STUDY})")
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"Optuna storage URL (default: {DEFAULT_STORAGE})",
    )
    parser.add_argument("--trial", type=int, help="retrain this trial (default: the best one)")
    parser.add_argument(
        "--arch",
        metavar="PRESET|FILE.json",
        help="train a named architecture without a study, e.g. paper-model1",
    )
    parser.add_argument(
        "--epochs", type=int, default=RETRAIN_EPOCHS, help=f"(default: {RETRAIN_EPOCHS})"
    )
    add_data_flags(parser, defaults_from_study=True)
    parser.add_argument(
        "--out", help="run folder (default: runs/<study>/trial-<n>, or runs/<preset>)"
    )
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument(
        "--artifact-dir",
        help="where the dashboard's artifacts go (default: artifacts/ beside the SQLite store)",
    )
    return parser


def artifact_dir_for(storage_url: str) -> Path | None:
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url.removeprefix("sqlite:///")).parent / "artifacts"
    return None


def retrain_command(args: argparse.Namespace) -> int:
    from nas.retrain import choose_from_study, load_study, record_in_study, retrain
    from nas.storage import make_storage
    from nas.train import TrainConfig

    if args.epochs < 0:
        raise UserError(f"--epochs must be 0 or more, got {args.epochs}")
    quiet_optuna()
    study = storage = choice = None
    if args.arch:
        if args.trial is not None:
            raise UserError("give either --arch or --trial, not both")
        if args.arch.endswith(".json"):
            arch, name = load_arch_file(args.arch), Path(args.arch).stem
        else:
            arch, name = resolve_preset(args.arch), args.arch
        data_base, recipe_base, source = {}, {}, {"arch": args.arch}
        run_dir = Path(args.out or Path("runs") / name)
    else:
        storage = make_storage(args.storage)
        study = load_study(storage, args.study)
        choice = choose_from_study(study, args.trial)
        arch, data_base, recipe_base = choice.arch, choice.data, choice.recipe
        source = {"study": args.study, "storage": args.storage, "trial": choice.trial.number}
        run_dir = Path(args.out or Path("runs") / args.study / f"trial-{choice.trial.number}")
    data = data_config_from(args, data_base)
    recipe = TrainConfig.from_dict(
        {
            **recipe_base,
            "epochs": args.epochs,
            "device": args.device or "auto",
            **({"seed": args.seed} if args.seed is not None else {}),
        }
    )
    print(
        f"retraining {arch.describe()} ({count_params(arch):,} parameters) for "
        f"{recipe.epochs} epochs into {run_dir}"
    )
    from nas.search import StopRequested

    try:
        with stop_on_sigterm() as stop:
            metrics = retrain(
                arch, data, recipe, run_dir, fresh=args.fresh, source=source, should_stop=stop
            )
    except StopRequested as stopped:
        print(
            f"stopped by SIGTERM after epoch {stopped.epoch}; rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    if metrics.get("reused"):
        print(f"{run_dir} already holds a finished run; pass --fresh to train it again")
    artifacts = None
    if study is not None:
        artifacts = Path(args.artifact_dir) if args.artifact_dir else artifact_dir_for(args.storage)
        record_in_study(study, storage, choice.trial, metrics, run_dir, artifacts)
    rows = [
        ("test accuracy", f"{metrics['test_accuracy']:.2%}"),
        ("test loss", f"{metrics['test_loss']:.4f}"),
        ("parameters", f"{metrics['params']:,}"),
        ("epochs", f"{metrics['epochs_completed']} (best {metrics['best_epoch']})"),
        ("seconds", f"{metrics['seconds']:.0f} ({metrics['seconds_per_epoch']:.1f} per epoch)"),
        ("device", metrics["device"]),
    ]
    print(format_table(("result", ""), rows))
    print(f"run folder: {run_dir}")
    if study is not None:
        dashboard = f"optuna-dashboard {args.storage}"
        if artifacts is not None:
            dashboard += f" --artifact-dir {artifacts}"
        print(f"dashboard:  {dashboard}")
    return 0


def retrain_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/retrain_best.py`: retrain, evaluate and export the best architecture."""
    args = retrain_parser().parse_args(argv)
    return run(retrain_command, args)
