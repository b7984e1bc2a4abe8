"""Owns the one command-line tree, `nas {search,retrain,export,predict,report,params,space,
doctor}` (the console script `nas` and `python -m nas`; each command's flags and handler live
in its own module of `nas.cli`), and `search_main`/`retrain_main`, which the README's
`scripts/search.py` and `scripts/retrain_best.py` call with their own arguments.

Claims: a mistake the user can make (a `UserError`, a bad flag) ends with one sentence on stderr
and exit status 2, never a traceback; Ctrl-C ends with exit status 130. A command is timed
(`args.started`, where `nas search --time-limit` counts from) from this process's start when it
is the process's own command line (`main()` with no arguments: the console script, `python -m
nas`, the scripts), else from the call.
"""

from __future__ import annotations

import sys
import time
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
    """The command `argv`, else this process's command line (then timed from its start)."""
    return run_command(argv, whole_process=argv is None)


def run_command(argv: Sequence[str] | None, whole_process: bool) -> int:
    """Run one command; `whole_process`: it is this process's whole life, so it is timed from
    the process's start and the interpreter's exit is made short."""
    from nas.process import command_start, skip_final_collection

    started = command_start() if whole_process else time.time()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad command line (2): a status, not an exit
        return exit_.code if isinstance(exit_.code, int) else 2
    args.started = started
    status = run(args.handler, args)
    if whole_process:
        skip_final_collection()
    return status


def search_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/search.py ARGS` is `nas search ARGS`."""
    return run_command(["search", *(sys.argv[1:] if argv is None else argv)], argv is None)


def retrain_main(argv: Sequence[str] | None = None) -> int:
    """`scripts/retrain_best.py ARGS` is `nas retrain ARGS`."""
    return run_command(["retrain", *(sys.argv[1:] if argv is None else argv)], argv is None)
