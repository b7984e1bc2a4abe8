"""Owns `nas doctor`: its flags and the report a user pastes into a bug report, an aligned
table of what `nas.costs.doctor` found, one line per check.

Exit statuses: 0 healthy (a missing dataset or store is fine), 1 a check failed (named on the
last line and on stderr), 2 a bad flag."""

from __future__ import annotations

import argparse
import sys

from nas.cli.common import Parser, format_table, interactive
from nas.config.outputs import DOCTOR_SECONDS

EXIT_UNHEALTHY = 1  # a check failed: the report names it


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value > 600:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most 600 seconds")
    return value


def add_doctor_parser(commands) -> None:
    parser: Parser = commands.add_parser(
        "doctor",
        help="check the installation, GPUs, data, store and disk; time a training step",
        description="Print versions, GPUs, whether the default dataset and store are there, "
        "free disk, and a few seconds of training steps with images/s: paste the table into "
        "a bug report. Exits 1 when a check fails (a missing dataset or store does not).",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)"
    )
    parser.add_argument(
        "--seconds",
        type=positive_seconds,
        default=DOCTOR_SECONDS,
        help="how long the training steps run (default: %(default)s)",
    )
    parser.set_defaults(handler=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    from nas.costs.doctor import run_checks

    if interactive():
        print(f"checking (the training steps take {args.seconds:g} s) ...", file=sys.stderr)
    checks = run_checks(device=args.device, seconds=args.seconds)
    rows = [(check.name, check.status, check.value) for check in checks]
    print(format_table(("check", "status", "found"), rows))
    failing = [check.name for check in checks if check.failed]
    if failing:
        verdict = f"unhealthy: {', '.join(failing)} failed"
        print(verdict)
        print(f"error: {verdict}", file=sys.stderr)
        return EXIT_UNHEALTHY
    print("healthy")
    return 0
