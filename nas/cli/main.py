"""Owns the one command-line tree, `nas {search,retrain,export,predict,report,params,space,
doctor}` (the console script `nas` and `python -m nas`; each command's flags live in its `cli_*`
module), `nas report`, and `search_main`/`retrain_main`, which the README's `scripts/search.py`
and `scripts/retrain_best.py` call with their own arguments.

Claims: a mistake the user can make (a `UserError`, a bad flag) ends with one sentence on stderr
and exit status 2, never a traceback; Ctrl-C ends with exit status 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nas.cli.common import Parser, quiet_optuna, run
from nas.cli.describe import add_params_parser, add_space_parser
from nas.cli.doctor import add_doctor_parser
from nas.cli.export import add_export_parser, add_predict_parser
from nas.cli.flags import add_storage_flags, storage_from
from nas.cli.retrain import add_retrain_parser
from nas.cli.search import add_search_parser
from nas.errors import UserError

DESCRIPTION = (
    "Search ResNet image classifiers for the most accurate one under a parameter budget, "
    "then retrain, report and inspect. Run `nas COMMAND --help` for a command's flags."
)


def build_parser() -> Parser:
    parser = Parser(prog="nas", description=DESCRIPTION)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    add_search_parser(commands)
    add_retrain_parser(commands)
    add_export_parser(commands)
    add_predict_parser(commands)
    add_report_parser(commands)
    add_params_parser(commands)
    add_space_parser(commands)
    add_doctor_parser(commands)
    return parser


def add_report_parser(commands) -> None:
    report = commands.add_parser(
        "report",
        help="write a study's self-contained HTML report",
        description="Write a study's self-contained HTML report (opens offline).",
    )
    add_storage_flags(report)
    report.add_argument("--out", help="HTML file (default: beside the SQLite store)")
    report.set_defaults(handler=report_command)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad command line (2): a status, not an exit
        return exit_.code if isinstance(exit_.code, int) else 2
    return run(args.handler, args)


def search_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/search.py ARGS` is `nas search ARGS`."""
    return main(["search", *(sys.argv[1:] if argv is None else argv)])


def retrain_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/retrain_best.py ARGS` is `nas retrain ARGS`."""
    return main(["retrain", *(sys.argv[1:] if argv is None else argv)])


def report_command(args: argparse.Namespace) -> int:
    from nas.report.page import report_path, write_report
    from nas.search.choice import load_study
    from nas.storage import open_storage

    quiet_optuna()
    url = storage_from(args)
    study = load_study(open_storage(url, create=False), args.study)
    out = Path(args.out) if args.out else report_path(study, url)
    try:
        written = write_report(study, out, storage=url)
    except OSError as error:  # e.g. --out inside a path that is a file, or no permission
        raise UserError(
            f"cannot write the report to {out} ({error.filename}: {error.strerror}); "
            "pass --out with a writable path"
        ) from None
    print(f"report: {written}")
    return 0
