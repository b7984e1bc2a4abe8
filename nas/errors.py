"""Owns the exceptions every layer may raise and the command line interprets, and the
exit statuses they become.

`UserError` (or a subclass) is for bad input: a bad flag value, a missing or malformed file, an
impossible budget, a missing dataset (`DataError`, raised by the data settings and readers).
Its message is one plain sentence that says what was wrong
and how to fix it. The command line turns it into that sentence on stderr and exit status 2,
with no traceback. Anything else is a bug and keeps its traceback.

`StopRequested` is raised at a safe point (after an epoch's checkpoint, between trials) when a
stop was asked for, e.g. by SIGTERM; the command line exits with 143 and the same command
resumes. `stop_on_sigterm` is the flag the long-running loops poll for it.
"""

import signal
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_USAGE = 2  # bad input: flags, files, budgets
EXIT_INTERRUPTED = 130  # Ctrl-C, the shell's convention (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM, stopped at a safe point (128 + SIGTERM)


class UserError(Exception):
    """A problem with the user's input; the message is one sentence saying how to fix it."""


class DataError(UserError):
    """A dataset is missing, corrupt or misconfigured; the message says how to fix it."""


class StoreUnavailable(UserError):
    """The study store could not be reached or written for longer than the outage allowance
    (`nas.store.steady`); the message says so in one sentence. Nothing stored is lost, and the
    same command resumes once the store is back: like a mistake in the input, it is said once
    and ends the command with exit status 2, whatever the process (a worker, the parent)."""


class StopRequested(Exception):
    """Raised at a safe point (after an epoch, between trials) when a stop was asked for."""

    def __init__(self, epoch: int | None = None):
        self.epoch = epoch  # the last finished epoch, when stopped inside a training run
        where = f" after epoch {epoch}" if epoch is not None else ""
        super().__init__(f"stop requested{where}")


class StopFlag:
    """Set by SIGTERM; the long-running loops call it (`flag()`) at their safe points."""

    def __init__(self) -> None:
        self.signalled = False

    def __call__(self) -> bool:
        return self.signalled


@contextmanager
def stop_on_sigterm() -> Iterator[StopFlag]:
    """Install a SIGTERM handler that only sets a flag, and restore the previous one after.

    Outside the main thread (where Python cannot install handlers) the flag simply never sets.
    """
    flag = StopFlag()

    def handler(_signum, _frame) -> None:
        flag.signalled = True

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
