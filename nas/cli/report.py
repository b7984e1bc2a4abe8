"""Owns `nas report`: its flags, and writing a study's self-contained HTML report (the page is
`nas.report.page`'s) where `--out` says, or beside the SQLite store. Prints the path written;
a path it cannot write is a `UserError` naming it."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.cli.common import Parser, quiet_optuna
from nas.cli.flags import add_storage_flags, storage_from
from nas.errors import UserError


def add_report_parser(commands) -> None:
    report: Parser = commands.add_parser(
        "report",
        help="write a study's self-contained HTML report",
        description="Write a study's self-contained HTML report (opens offline).",
    )
    add_storage_flags(report)
    report.add_argument("--out", help="HTML file (default: beside the SQLite store)")
    report.set_defaults(handler=report_command)


def report_command(args: argparse.Namespace) -> int:
    from nas.report.page import report_path, write_report
    from nas.search.choice import load_study
    from nas.store.opening import open_storage

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
