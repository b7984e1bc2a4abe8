"""Owns what every command of `nas` shares: the flag types (counts like 5M, whole numbers,
floats, comma-separated lists), the argparse class that turns a bad command line into one
sentence, the runner that maps user errors to exit status 2 and Ctrl-C to 130, plain-text
tables, Optuna's quiet log, and whether output goes to a terminal (progress bars) or a log
(plain lines). The flag groups are `nas.cli.arch` and `nas.cli.flags`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from nas.errors import EXIT_INTERRUPTED, EXIT_USAGE, UserError

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
