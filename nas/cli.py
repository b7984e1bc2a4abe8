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

    args = parser.parse_args(argv)
    return run(args.handler, args)
