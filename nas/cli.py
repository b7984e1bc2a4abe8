"""Owns the command lines: `python -m nas {params,space,search,retrain,report}`, and the entry
points of the two scripts (`search_main`, `retrain_main`, defined in nas.cli_search and
nas.cli_retrain and re-exported here).

Claims: a mistake the user can make (a `UserError`, a bad flag) ends with one sentence on stderr
and exit status 2, never a traceback; Ctrl-C ends with exit status 130.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from nas.arch import count_params, param_table
from nas.cli_common import (
    Parser,
    add_arch_flags,
    arch_from_flags,
    format_table,
    parse_count,
    quiet_optuna,
    run,
)
from nas.cli_retrain import retrain_main
from nas.cli_search import report_path_for, search_main
from nas.errors import UserError

__all__ = ["main", "retrain_main", "search_main"]


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (image sizes, sample counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


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
    params.add_argument(
        "--image-size", type=positive_int, default=32, help="input size (default: 32)"
    )
    params.set_defaults(handler=params_command)

    space = commands.add_parser("space", help="summarise a search-space file")
    space.add_argument("file", help="a search-space YAML file, e.g. search_spaces/resnet.yaml")
    space.add_argument("--budget", type=parse_count, help="estimate the share under this budget")
    space.add_argument(
        "--samples",
        type=positive_int,
        default=20000,
        help="samples for the estimate (default: 20000)",
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


def report_command(args: argparse.Namespace) -> int:
    from nas.report import write_report
    from nas.retrain import load_study
    from nas.storage import make_storage

    quiet_optuna()
    storage = make_storage(args.storage)
    study = load_study(storage, args.study)
    out = Path(args.out) if args.out else report_path_for(args.storage, args.study)
    try:
        written = write_report(study, out)
    except OSError as error:  # e.g. --out inside a path that is a file, or no permission
        raise UserError(
            f"cannot write the report to {out} ({error.filename}: {error.strerror}); "
            "pass --out with a writable path"
        ) from None
    print(f"report: {written}")
    return 0
