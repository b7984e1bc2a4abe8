"""Owns the command lines: `python -m nas {params,space,search,retrain,report}` and the two scripts.

Each front end parses flags, calls the package, and prints. Claims: a mistake the user can make
(a `UserError`, a bad flag) ends with one sentence on stderr and exit status 2, never a
traceback; Ctrl-C ends with exit status 130.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nas.arch import PRESETS, Architecture, count_params, param_table
from nas.errors import UserError

EXIT_USAGE = 2  # bad input: flags, files, budgets
EXIT_INTERRUPTED = 130  # Ctrl-C, the shell's convention (128 + SIGINT)

_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kKmMgG]?)\s*$")
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_count(text: str) -> int:
    """`5e6`, `5000000`, `5M`, `500k`, `2.5M` -> a positive whole number."""
    match = _COUNT.match(str(text))
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a parameter count; write it like 5e6, 5000000, 5M, 500k or 2.5M"
        )
    value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if value <= 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number of parameters")
    return int(value)


def parse_int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers like 64,128,128,256"
        ) from None


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line gives one sentence instead of usage plus error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def run(command: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command, turning user errors and Ctrl-C into their exit statuses."""
    try:
        return command(args) or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# ---- architectures ----------------------------------------------------------------------


def add_arch_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=sorted(PRESETS), help="a reference architecture")
    source.add_argument("--arch", metavar="FILE.json", help="an architecture JSON file")
    parser.add_argument("--channels", type=parse_int_list, help="widths per layer: 64,128,128,256")
    parser.add_argument("--blocks", type=parse_int_list, help="blocks per layer: 5,4,3,2")
    parser.add_argument(
        "--conv-kernel", type=parse_int_list, default=(3,), help="main kernel(s) (default: 3)"
    )
    parser.add_argument(
        "--skip-kernel", type=parse_int_list, default=(1,), help="shortcut kernel(s) (default: 1)"
    )
    parser.add_argument("--stem", type=int, default=32, help="stem width (default: 32)")
    parser.add_argument("--classes", type=int, default=10, help="classes (default: 10)")


def load_arch_file(path: str) -> Architecture:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(f"cannot read architecture file {path}: {error.strerror}") from None
    try:
        return Architecture.from_json(text)
    except (ValueError, TypeError) as error:
        raise UserError(f"{path} is not a valid architecture: {error}") from None


def resolve_preset(name: str) -> Architecture:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def arch_from_flags(args: argparse.Namespace) -> Architecture:
    if args.preset:
        return resolve_preset(args.preset)
    if args.arch:
        return load_arch_file(args.arch)
    if not args.channels or not args.blocks:
        raise UserError("give --preset NAME, --arch FILE.json, or both --channels and --blocks")

    def one_or_many(values: tuple[int, ...]) -> int | tuple[int, ...]:
        return values[0] if len(values) == 1 else values

    try:
        return Architecture(
            channels=args.channels,
            blocks=args.blocks,
            conv_kernel=one_or_many(args.conv_kernel),
            skip_kernel=one_or_many(args.skip_kernel),
            stem=args.stem,
            num_classes=args.classes,
        )
    except ValueError as error:
        raise UserError(f"invalid architecture: {error}") from None


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table: numbers right-aligned, text left-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in cells[1:]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(row, widths, numeric)
        ).rstrip()

    return "\n".join(
        [line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]]
    )


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,.]+%?", text))


def params_command(args: argparse.Namespace) -> int:
    arch = arch_from_flags(args)
    rows = [
        (name, "x".join(map(str, shape)), f"{params:,}")
        for name, shape, params in param_table(arch, args.image_size)
    ]
    print(arch.describe())
    print(format_table(("part", "output", "params"), rows))
    print(f"total: {count_params(arch):,} parameters")
    return 0


def space_command(args: argparse.Namespace) -> int:
    from nas.space import SearchSpace

    space = SearchSpace.load(args.file)
    smallest, largest = space.smallest(), space.largest()
    print(f"search space {space.name} ({args.file})")
    print(f"distinct architectures: {space.size():,}")
    print(f"smallest: {count_params(smallest):,} parameters  ({smallest.describe()})")
    print(f"largest:  {count_params(largest):,} parameters  ({largest.describe()})")
    if args.budget is not None:
        share = space.fraction_under(args.budget, samples=args.samples)
        print(
            f"under a budget of {args.budget:,}: about {share:.1%} of uniformly sampled "
            f"candidates ({args.samples:,} samples)"
        )
    return 0


def quiet_optuna() -> None:
    """Our own progress lines replace Optuna's log; its experimental-API notices are noise here."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


# ---- search ----------------------------------------------------------------------------------

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


def add_data_flags(parser: argparse.ArgumentParser, defaults_from_study: bool = False) -> None:
    from nas.data import DATASETS

    hint = " (default: the study's)" if defaults_from_study else ""
    parser.add_argument("--dataset", choices=DATASETS, help=f"dataset (default: cifar10){hint}")
    parser.add_argument("--data-dir", help=f"dataset folder (default: ./data){hint}")
    parser.add_argument(
        "--subset", type=int, help=f"train on only N images, for quick runs (default: all){hint}"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept CIFAR files already in --data-dir without checking their checksums",
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--seed", type=int, help="training seed (default: 0)")


def data_config_from(args: argparse.Namespace, base: dict | None = None):
    from nas.data import DataConfig

    settings = dict(base or {})
    for flag, key in (("dataset", "dataset"), ("data_dir", "data_dir"), ("subset", "subset")):
        if getattr(args, flag) is not None:
            settings[key] = getattr(args, flag)
    if args.no_verify:
        settings["verify"] = False
    return DataConfig.from_dict(settings)


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m nas", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    params = commands.add_parser("params", help="count an architecture's parameters per layer")
    add_arch_flags(params)
    params.add_argument("--image-size", type=int, default=32, help="input size (default: 32)")
    params.set_defaults(handler=params_command)

    space = commands.add_parser("space", help="summarise a search-space file")
    space.add_argument("file", help="a search-space YAML file, e.g. search_spaces/resnet.yaml")
    space.add_argument("--budget", type=parse_count, help="estimate the share under this budget")
    space.add_argument(
        "--samples", type=int, default=20000, help="samples for the estimate (default: 20000)"
    )
    space.set_defaults(handler=space_command)

    report = commands.add_parser("report", help="write a study's self-contained HTML report")
    report.add_argument("--study", default="nas", help="study name (default: nas)")
    report.add_argument(
        "--storage",
        default="sqlite:///studies/nas.db",
        help="Optuna storage URL (default: sqlite:///studies/nas.db)",
    )
    report.add_argument("--out", help="HTML file (default: beside the SQLite store)")
    report.set_defaults(handler=report_command)

    commands.add_parser(
        "search", help="run a search (same flags as scripts/search.py)", add_help=False
    )
    commands.add_parser(
        "retrain", help="retrain (same flags as scripts/retrain_best.py)", add_help=False
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "search":
        return search_main(rest)
    if args.command == "retrain":
        return retrain_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return run(args.handler, args)


# ---- retrain -----------------------------------------------------------------------------------

RETRAIN_EPOCHS = 150  # the reference study's final training length


def retrain_parser() -> Parser:
    from nas.search import DEFAULT_STORAGE, DEFAULT_STUDY

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
    from nas.search import SearchConfig, make_storage
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
        storage = make_storage(args.storage, SearchConfig(storage=args.storage))
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
    metrics = retrain(arch, data, recipe, run_dir, fresh=args.fresh, source=source)
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


# ---- report ------------------------------------------------------------------------------------


def report_command(args: argparse.Namespace) -> int:
    from nas.report import write_report
    from nas.retrain import load_study
    from nas.search import SearchConfig, make_storage

    quiet_optuna()
    storage = make_storage(args.storage, SearchConfig(storage=args.storage))
    study = load_study(storage, args.study)
    out = (
        Path(args.out)
        if args.out
        else report_path_for(SearchConfig(study=args.study, storage=args.storage))
    )
    print(f"report: {write_report(study, out)}")
    return 0
