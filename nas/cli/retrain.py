"""Owns `nas retrain`: which architecture and settings to retrain (a study's best or chosen
trial, or a named architecture), the per-epoch lines, and the printed result. SIGTERM stops the
run after the current epoch's checkpoint with exit status 143; the same command resumes it."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.cli.arch import arch_from_text
from nas.cli.common import Parser, format_table, interactive, non_negative_int, quiet_optuna
from nas.cli.flags import (
    add_data_flags,
    add_recipe_flags,
    add_storage_flags,
    announce_image_size,
    data_config_from,
    machine_from,
    recipe_overrides,
    storage_from,
    warn_about_precision,
)
from nas.config.recipe import Recipe
from nas.errors import EXIT_TERMINATED, StopRequested, UserError, stop_on_sigterm

if TYPE_CHECKING:  # torch is imported when a retrain starts, not to parse its flags
    from nas.train.state import EpochRow


def add_retrain_parser(commands) -> None:
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
        default=Recipe.epochs,
        help="training epochs (default: %(default)s, the reference study's final length)",
    )
    add_data_flags(parser, inherited=True)
    add_recipe_flags(parser, inherited=True)
    parser.add_argument(
        "--out",
        help="run folder (default: runs/<study>/trial-<n>, the study named as a safe file name; "
        "or runs/<preset>)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument(
        "--artifact-dir",
        help="where the dashboard's artifacts go (default: artifacts/ beside the SQLite store)",
    )
    parser.set_defaults(handler=retrain_command)


def print_epoch(row: EpochRow, epochs: int) -> None:
    """One line per epoch: on a terminal above the bar, in a log as a plain line."""
    line = (
        f"epoch {row.epoch:>3}/{epochs}  train {row.train_loss:.4f} "
        f"{row.train_accuracy:.2%}  val {row.val_loss:.4f} "
        f"{row.val_accuracy:.2%}  lr {row.lr:.0e}  {row.seconds:.1f} s"
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
        f"data:   {data.dataset} in {data.data_dir} at {data.image_size} px, {subset}, "
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
    """`--pick best` | `--pick smallest-within PCT` -> `nas.search.front.Pick`."""
    from nas.search.front import Pick

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


@dataclass
class Target:
    """What a retrain trains and where: a study's trial (`study`, `choice`) or a named
    architecture, with the data and recipe it inherits."""

    arch: Architecture
    data_base: dict
    recipe_base: dict
    source: dict
    run_dir: Path
    study: object = None  # the optuna.Study, for a study's trial
    choice: object = None  # nas.search.choice.StudyChoice


def retrain_command(args: argparse.Namespace) -> int:
    from nas.run.retrain import retrain

    quiet_optuna()
    storage_url = storage_from(args)
    target = choose_target(args, storage_url)
    data = data_config_from(args, target.data_base)
    overrides = recipe_overrides(args)
    recipe = recipe_from(args, target.recipe_base, overrides)
    machine = machine_from(args)
    if target.choice is not None and args.trial is None:
        print(f"picked trial {target.choice.trial.number}: {target.choice.why}", flush=True)
    print(
        f"retraining {target.arch.describe()} ({count_params(target.arch):,} parameters) for "
        f"{recipe.epochs} epochs into {target.run_dir}",
        flush=True,
    )
    data = announce_image_size(data)
    describe_inputs(data, recipe, target.recipe_base, overrides, target.study is not None)
    warn_about_precision(machine.precision, [machine.device])
    from nas.costs.estimate import announce_retrain_cost

    announce_retrain_cost(target.arch, data, recipe, machine)
    try:
        with stop_on_sigterm() as stop:
            result = retrain(
                target.arch, data, recipe, machine, target.run_dir, fresh=args.fresh,
                source=target.source,
                should_stop=stop, progress=interactive(),
                on_epoch=lambda row: print_epoch(row, recipe.epochs),
            )  # fmt: skip
    except StopRequested as stopped:
        print(
            f"stopped by SIGTERM after epoch {stopped.epoch}; rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    if result.reused:
        print(f"{target.run_dir} already holds a finished run; pass --fresh to train it again")
    print_result(result.metrics, target.run_dir)
    if target.study is not None:
        record_and_report(args, storage_url, target, result.metrics)
    return 0


def choose_target(args: argparse.Namespace, storage_url: str) -> Target:
    """A named architecture (--arch), or the study's trial --trial or --pick names."""
    pick = parse_pick(args.pick)
    if args.pick and args.trial is not None:
        raise UserError("give either --pick or --trial, not both")
    if args.arch:
        if args.trial is not None or args.pick:
            other = "--trial" if args.trial is not None else "--pick"
            raise UserError(f"give either --arch or {other}, not both")
        arch, name, recipe_base = arch_from_text(args.arch)
        run_dir = Path(args.out or Path("runs") / name)
        return Target(arch, {}, recipe_base, {"arch": args.arch}, run_dir)
    from nas.files import safe_file_name
    from nas.search.choice import choose_from_study, load_study
    from nas.store.opening import display_url, open_storage

    study = load_study(open_storage(storage_url, create=False), args.study)
    choice = choose_from_study(study, args.trial, pick)
    number = choice.trial.number
    source = {"study": args.study, "storage": display_url(storage_url), "trial": number}
    default = Path("runs") / safe_file_name(args.study) / f"trial-{number}"  # inside runs/
    run_dir = Path(args.out or default)
    return Target(choice.arch, choice.data, choice.recipe, source, run_dir, study, choice)


def recipe_from(args: argparse.Namespace, base: dict, overrides: dict):
    """The inherited recipe (a study's or a preset's) with the command line's changes, epochs
    and seed; what the study recorded of the machine it ran on is not inherited."""
    from nas.config.recipe import Recipe

    return Recipe.from_dict(
        {
            **base,
            **overrides,
            "epochs": args.epochs,
            **({"seed": args.seed} if args.seed is not None else {}),
        }
    )


def print_result(metrics, run_dir: Path) -> None:
    rows = [
        ("test accuracy", f"{metrics.test_accuracy:.2%}"),
        ("test loss", f"{metrics.test_loss:.4f}"),
        ("parameters", f"{metrics.params:,}"),
        ("epochs", f"{metrics.epochs_completed} (best {metrics.best_epoch})"),
        ("seconds", f"{metrics.seconds:.0f} ({metrics.seconds_per_epoch:.1f} per epoch)"),
        ("device", metrics.device),
    ]
    print(format_table(("result", ""), rows))
    print(f"run folder: {run_dir}")


def record_and_report(args, storage_url: str, target: Target, metrics) -> None:
    """Record the result on the study, refresh the study's report (the file its search was
    given) and say where both are."""
    from nas.commands import dashboard_command
    from nas.report.page import report_path, write_report
    from nas.run.retrain import record_in_study
    from nas.store.opening import artifact_dir

    artifacts = Path(args.artifact_dir) if args.artifact_dir else artifact_dir(storage_url)
    record_in_study(target.study, target.choice.trial, metrics, target.run_dir, artifacts)
    report = write_report(target.study, report_path(target.study, storage_url), storage=storage_url)
    print(f"dashboard:  {dashboard_command(storage_url, artifacts)}")
    print(f"report:     {report}")
