"""Owns the one command-line tree, `nas {search,retrain,export,predict,report,params,space,
doctor}` (the console script `nas` and `python -m nas`; each command's flags and handler live
in its own module of `nas.cli`), and `search_main`/`retrain_main`, which the README's
`scripts/search.py` and `scripts/retrain_best.py` call with their own arguments.

Claims: a mistake the user can make (a `UserError`, a bad flag) ends with one sentence on stderr
and exit status 2, never a traceback; Ctrl-C ends with exit status 130.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from nas.cli.common import Parser, run
from nas.cli.describe import add_params_parser, add_space_parser
from nas.cli.doctor import add_doctor_parser
from nas.cli.export import add_export_parser, add_predict_parser
from nas.cli.report import add_report_parser
from nas.cli.retrain import add_retrain_parser
from nas.cli.search import add_search_parser

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
