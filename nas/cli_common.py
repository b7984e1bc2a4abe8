"""Owns what the commands of `nas` share: flag types and flag groups (architecture, data,
storage) whose defaults come from the config dataclasses, the argparse class that turns a bad
command line into one sentence, the runner that maps user errors to exit status 2 and Ctrl-C to
130, the SIGTERM flag (exit 143 at the next safe point), plain-text tables, and whether output
goes to a terminal (progress bars) or a log (plain lines).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas.arch import Architecture
from nas.config import (
    AUGMENTATIONS,
    DATASETS,
    OPTIMIZERS,
    POLICY_NAMES,
    PRECISION_HELP,
    PRECISIONS,
    DataConfig,
    TrainConfig,
)
from nas.config_search import DEFAULT_STORAGE, DEFAULT_STUDY, STORAGE_ENV
from nas.errors import EXIT_INTERRUPTED, EXIT_USAGE, UserError
from nas.presets import PRESETS

_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kKmMgG]?)\s*$")


_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def count_of(what: str) -> Callable[[str], int]:
    """argparse type: `5e6`, `5000000`, `5M`, `500k`, `2.5M`, `1.2G` -> a positive whole number
    of `what` (e.g. "parameters", "MACs")."""

    def parse(text: str) -> int:
        match = _COUNT.match(str(text))
        if not match:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of {what}; write it like 5e6, 5000000, 5M, 500k or 2.5M"
            )
        value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
        if value > 1e15:  # far beyond any model (and float('1e400') is infinite)
            raise argparse.ArgumentTypeError(f"{text!r} is too large a number of {what}")
        if value <= 0 or value != int(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be a positive whole number of {what}")
        return int(value)

    return parse


parse_count = count_of("parameters")


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be {minimum} or more")
        return value

    parse.__name__ = f"whole number >= {minimum}"  # argparse names the type in its errors
    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def interactive() -> bool:
    """True when a person watches a terminal: progress bars then; plain lines in a log."""
    return sys.stderr.isatty()


def parse_int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers like 64,128,128,256"
        ) from None


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line gives one sentence instead of usage plus error, and a
    flag must be spelled out (no prefixes: workers and scripts rely on exact names)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

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


def add_arch_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=sorted(PRESETS), help="a reference architecture")
    source.add_argument(
        "--arch",
        metavar="ARCH",
        help="a preset, an architecture JSON file, or a printed architecture like "
        "64,128,128,256/5,4,3,2/k3/s3",
    )
    parser.add_argument("--channels", type=parse_int_list, help="widths per layer: 64,128,128,256")
    parser.add_argument("--blocks", type=parse_int_list, help="blocks per layer: 5,4,3,2")
    parser.add_argument(
        "--conv-kernel", type=parse_int_list, default=(3,), help="main kernel(s) (default: 3)"
    )
    parser.add_argument(
        "--skip-kernel", type=parse_int_list, default=(1,), help="shortcut kernel(s) (default: 1)"
    )
    parser.add_argument(
        "--stem",
        type=positive_int,
        default=Architecture.stem,
        help="stem width (default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        type=whole_number(2),
        default=Architecture.num_classes,
        help="classes (default: %(default)s)",
    )


def add_recipe_flags(parser: argparse.ArgumentParser, inherited: bool = False) -> None:
    """The recipe's knobs; unset flags keep the reference recipe (or, `inherited`, the study's
    or the preset's). Defaults come from `TrainConfig`."""

    def default(value: object) -> str:
        return f"the study's or preset's, else {value}" if inherited else str(value)

    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help=f"optimizer (default: {default(TrainConfig.optimizer)})",
    )
    parser.add_argument(
        "--lr", type=positive_float, help=f"learning rate (default: {default(TrainConfig.lr)})"
    )
    parser.add_argument(
        "--momentum",
        type=non_negative_float,
        help=f"SGD momentum (default: {default(TrainConfig.momentum)})",
    )
    parser.add_argument(
        "--weight-decay",
        type=non_negative_float,
        help=f"weight decay (default: {default(TrainConfig.weight_decay)})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"images per step (default: {default(TrainConfig.batch_size)})",
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        help="training augmentation: recipe (rotation, flip, crop, AutoAugment), basic (no "
        f"AutoAugment) or none (default: {default(TrainConfig.augment)})",
    )
    parser.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        help="AutoAugment policy: torchvision's CIFAR-10, SVHN (digits) or ImageNet one "
        f"(default: {default('cifar10')})",
    )
    parser.add_argument(
        "--no-flip",
        dest="flip",
        action="store_const",
        const=False,
        help="no random horizontal flips (digits, text)",
    )


RECIPE_FLAGS = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "batch_size",
    "augment",
    "policy",
    "flip",
)


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe settings the command line sets explicitly (TrainConfig field -> value)."""
    return {name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) is not None}


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def arch_from_text(text: str) -> tuple[Architecture, str, dict[str, Any]]:
    """`--arch`: a preset's name, an architecture JSON file, or the printed form
    (`64,128,128,256/5,4,3,2/k3/s3`). Returns the architecture, a name for its run folder, and
    the preset's recipe (empty for the other two)."""
    from nas.presets import PRESET_RECIPES

    if text in PRESETS:
        return PRESETS[text], text, dict(PRESET_RECIPES.get(text, {}))
    if text.endswith(".json") or Path(text).is_file():
        return load_arch_file(text), Path(text).stem, {}
    if "/" in text:
        try:
            arch = Architecture.parse(text)
        except (ValueError, TypeError) as error:
            raise UserError(f"invalid architecture: {error}") from None
        return arch, re.sub(r"[^0-9A-Za-z,._-]+", "_", arch.describe()).strip("_"), {}
    raise UserError(
        f"unknown preset or architecture {text!r}: give a preset ({', '.join(sorted(PRESETS))}), "
        "an architecture JSON file, or a printed architecture like 64,128,128,256/5,4,3,2/k3/s3"
    )


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
        return arch_from_text(args.arch)[0]
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


def quiet_optuna() -> None:
    """Our own progress lines replace Optuna's log; its experimental-API notices are noise here."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def add_storage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--study", default=DEFAULT_STUDY, help=f"study name (default: {DEFAULT_STUDY})"
    )
    parser.add_argument(
        "--storage",
        help=f"any Optuna storage URL (default: ${STORAGE_ENV} when set, else {DEFAULT_STORAGE}); "
        f"put a URL with a password in ${STORAGE_ENV} to keep it off the command line",
    )


def storage_from(args: argparse.Namespace) -> str:
    from nas.storage import default_storage

    if args.storage is not None and not args.storage.strip():
        raise UserError("--storage must be a storage URL, e.g. sqlite:///studies/nas.db")
    return args.storage or default_storage()


def add_data_flags(parser: argparse.ArgumentParser, inherited: bool = False) -> None:
    """Dataset and device flags. `inherited`: unset flags take the study's values."""

    def default(value: object) -> str:
        return "the study's" if inherited else str(value)

    parser.add_argument(
        "--dataset", choices=DATASETS, help=f"dataset (default: {default(DataConfig.dataset)})"
    )
    parser.add_argument(
        "--data-dir", help=f"dataset folder (default: {default(DataConfig.data_dir)})"
    )
    parser.add_argument(
        "--subset",
        type=positive_int,
        help=f"train on only N images, for quick runs (default: {default('all')})",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        metavar="N",
        help="train on images resized to N pixels square; every cost (MACs, memory, latency) "
        "and the exported model's input follow it (default: "
        + ("the study's" if inherited else "the dataset's own: 32 for CIFAR, an image folder's "
           "median side up to 224")
        + ")",
    )  # fmt: skip
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept CIFAR files already in --data-dir without checking their checksums",
    )
    parser.add_argument(
        "--device", help=f"auto, cpu, cuda or cuda:N (default: {TrainConfig.device})"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help=f"what training computes in; {PRECISION_HELP} (default: {TrainConfig.precision})",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, help=f"training seed (default: {TrainConfig.seed})"
    )


def warn_about_precision(requested: str, device_names: Sequence[str]) -> None:
    """Print on stderr, once before training, each way the asked precision does not run as
    asked on these devices (one line each; a search's trials would repeat it otherwise)."""
    from nas.precision import precision_warnings
    from nas.train import resolve_device

    try:
        devices = [resolve_device(name) for name in dict.fromkeys(device_names)]
    except UserError:
        return  # the run refuses the device itself, in its own words
    for line in precision_warnings(requested, devices):
        print(f"warning: {line}", file=sys.stderr, flush=True)


def announce_image_size(data: DataConfig) -> DataConfig:
    """`data` at the image size it trains at (`nas.data.choose_image_size`), printing the one
    line that says the size and why wherever images are resized."""
    from nas.data import choose_image_size

    data, line = choose_image_size(data)
    if line is not None:
        print(line, flush=True)
    return data


def data_config_from(args: argparse.Namespace, base: dict | None = None) -> DataConfig:
    settings = dict(base or {})
    for key in ("dataset", "data_dir", "subset", "image_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.no_verify:
        settings["verify"] = False
    return DataConfig.from_dict(settings)
