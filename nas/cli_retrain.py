"""Owns `nas retrain`: which architecture and settings to retrain (a study's best or chosen
trial, or a named architecture), the per-epoch lines, and the printed result. SIGTERM stops the
run after the current epoch's checkpoint with exit status 143; the same command resumes it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nas.arch import count_params
from nas.cli_common import (
    Parser,
    add_data_flags,
    add_recipe_flags,
    add_storage_flags,
    arch_from_text,
    data_config_from,
    format_table,
    interactive,
    non_negative_int,
    quiet_optuna,
    recipe_overrides,
    storage_flag,
    storage_from,
)
from nas.errors import EXIT_TERMINATED, StopRequested, UserError, stop_on_sigterm


def add_retrain_parser(commands) -> None:
    from nas.train import TrainConfig

    parser: Parser = commands.add_parser(
        "retrain",
        help="train a study's best architecture (or a named one) for long and evaluate it",
        description="Train a study's best architecture (or a named one) for long, evaluate it "
        "on the test set, and export it to a run folder. Rerun the same command to resume.",
    )
    add_storage_flags(parser)
    parser.add_argument(
        "--trial", type=non_negative_int, help="retrain this trial (default: --pick's choice)"
    )
    parser.add_argument(
        "--pick",
        nargs="+",
        metavar="HOW",
        help="which trained trial: best (the most accurate, default) or smallest-within PCT "
        "(the cheapest within PCT accuracy points of the best, on the study's Pareto front's "
        "cost: parameters, or what --objective pareto lowered)",
    )
    parser.add_argument(
        "--arch",
        metavar="ARCH",
        help="train an architecture without a study: a preset (paper-model1), a JSON file, or "
        "a printed architecture like 64,128,128,256/5,4,3,2/k3/s3",
    )
    parser.add_argument(
        "--epochs",
        type=non_negative_int,
        default=TrainConfig.epochs,
        help="training epochs (default: %(default)s, the reference study's final length)",
    )
    add_data_flags(parser, inherited=True)
    add_recipe_flags(parser, inherited=True)
    parser.add_argument(
        "--out", help="run folder (default: runs/<study>/trial-<n>, or runs/<preset>)"
    )
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument(
        "--artifact-dir",
        help="where the dashboard's artifacts go (default: artifacts/ beside the SQLite store)",
    )
    parser.set_defaults(handler=retrain_command)


def artifact_dir_for(storage_url: str) -> Path | None:
    from nas.storage import sqlite_path

    store = sqlite_path(storage_url)
    return store.parent / "artifacts" if store is not None else None


def print_epoch(row: dict, epochs: int) -> None:
    """One line per epoch: on a terminal above the bar, in a log as a plain line."""
    line = (
        f"epoch {row['epoch']:>3}/{epochs}  train {row['train_loss']:.4f} "
        f"{row['train_accuracy']:.2%}  val {row['val_loss']:.4f} "
        f"{row['val_accuracy']:.2%}  lr {row['lr']:.0e}  {row['seconds']:.1f} s"
    )
    if interactive():
        from tqdm.auto import tqdm

        tqdm.write(line)
    else:
        print(line, flush=True)


def describe_inputs(data, recipe, inherited: dict, overrides: dict, from_study: bool) -> None:
    """Say what the run trains on and with, before it starts: the data (dataset, subset,
    split) and the recipe, naming what the command line changed from the study or preset."""
    subset = f"{data.subset:,} training images" if data.subset else "all training images"
    print(
        f"data:   {data.dataset} in {data.data_dir}, {subset}, "
        f"{data.val_fraction:.0%} held out for validation (split seed {data.split_seed})"
        + (" (the study's)" if from_study else "")
    )
    print(
        f"recipe: {recipe.optimizer} lr {recipe.lr:g}"
        + (f" momentum {recipe.momentum:g}" if recipe.optimizer == "sgd" else "")
        + f", weight decay {recipe.weight_decay:g}, batch {recipe.batch_size}, "
        f"augmentation {recipe.augment}"
    )
    changed = [
        f"{key} {value!r} (was {inherited[key]!r})" if key in inherited else f"{key} {value!r}"
        for key, value in overrides.items()
        if inherited.get(key, getattr(type(recipe), key, None)) != value
    ]
    if changed:
        source = "the study's recipe" if from_study else "the recipe"
        print(f"        changed from {source}: {', '.join(changed)}", flush=True)


def parse_pick(words: list[str] | None):
    """`--pick best` | `--pick smallest-within PCT` -> `nas.front.Pick`."""
    from nas.front import Pick

    if not words or words == ["best"]:
        return Pick()
    if words[0] == "smallest-within" and len(words) == 2:
        try:
            points = float(words[1])
        except ValueError:
            points = -1.0
        if 0 <= points <= 100:
            return Pick("smallest-within", points)
        raise UserError(
            f"--pick smallest-within takes accuracy points from 0 to 100, like 1 or 0.5, "
            f"not {words[1]!r}"
        )
    raise UserError(
        f"--pick takes best or smallest-within PCT (e.g. --pick smallest-within 1), "
        f"not {' '.join(words)!r}"
    )


def retrain_command(args: argparse.Namespace) -> int:
    from nas.retrain import choose_from_study, load_study, record_in_study, retrain
    from nas.storage import display_url, open_storage
    from nas.train import TrainConfig

    quiet_optuna()
    storage_url = storage_from(args)
    study = choice = None
    pick = parse_pick(args.pick)
    if args.pick and args.trial is not None:
        raise UserError("give either --pick or --trial, not both")
    if args.arch:
        if args.trial is not None or args.pick:
            other = "--trial" if args.trial is not None else "--pick"
            raise UserError(f"give either --arch or {other}, not both")
        arch, name, recipe_base = arch_from_text(args.arch)
        data_base, source = {}, {"arch": args.arch}
        run_dir = Path(args.out or Path("runs") / name)
    else:
        study = load_study(open_storage(storage_url, create=False), args.study)
        choice = choose_from_study(study, args.trial, pick)
        arch, data_base, recipe_base = choice.arch, choice.data, choice.recipe
        source = {
            "study": args.study,
            "storage": display_url(storage_url),
            "trial": choice.trial.number,
        }
        run_dir = Path(args.out or Path("runs") / args.study / f"trial-{choice.trial.number}")
    data = data_config_from(args, data_base)
    overrides = recipe_overrides(args)
    recipe = TrainConfig.from_dict(
        {
            **recipe_base,
            **overrides,
            "epochs": args.epochs,
            "device": args.device or TrainConfig.device,
            **({"seed": args.seed} if args.seed is not None else {}),
        }
    )
    if choice is not None and args.trial is None:
        print(f"picked trial {choice.trial.number}: {choice.why}", flush=True)
    print(
        f"retraining {arch.describe()} ({count_params(arch):,} parameters) for "
        f"{recipe.epochs} epochs into {run_dir}",
        flush=True,
    )
    describe_inputs(data, recipe, recipe_base, overrides, from_study=study is not None)
    from nas.estimate import announce_retrain_cost

    announce_retrain_cost(arch, data, recipe)
    try:
        with stop_on_sigterm() as stop:
            metrics = retrain(
                arch, data, recipe, run_dir, fresh=args.fresh, source=source, should_stop=stop,
                progress=interactive(), on_epoch=lambda row: print_epoch(row, recipe.epochs),
            )  # fmt: skip
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
        artifacts = Path(args.artifact_dir) if args.artifact_dir else artifact_dir_for(storage_url)
        record_in_study(study, choice.trial, metrics, run_dir, artifacts)
        from nas.cli_search import report_path_for
        from nas.report import write_report

        report = write_report(  # now with the retrain's result
            study, report_path_for(storage_url, args.study), storage_flag=storage_flag(storage_url)
        )
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
        dashboard = f"optuna-dashboard {display_url(storage_url)}"
        if artifacts is not None:
            dashboard += f" --artifact-dir {artifacts}"
        print(f"dashboard:  {dashboard}")
        print(f"report:     {report}")
    return 0
