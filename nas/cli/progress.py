"""Owns how `nas search` shows progress: one line per finished trial, and on a terminal also a
bar of trained candidates; in a log, plain lines with no carriage returns.
"""

from __future__ import annotations

from nas.cli.common import interactive


def format_outcome(outcome) -> str:
    accuracy = "-" if outcome.val_accuracy is None else f"{outcome.val_accuracy:.2%}"
    note = f"  ({outcome.note})" if outcome.note else ""
    return (
        f"trial {outcome.number:>4}  params {outcome.params:>11,}  val {accuracy:>7}  "
        f"{outcome.seconds:>7.1f} s  {outcome.kind.name.lower()}{note}"
    )


class Progress:
    """Finished trials as lines; on a terminal also a bar of trained candidates (created on the
    first event, so an early error prints none). In a log: plain lines, no carriage returns."""

    def __init__(self, total: int):
        self.total = total
        self.bar = None
        self.live = interactive()

    def _bar(self):
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.total, desc="trained", unit="trial", dynamic_ncols=True)
        return self.bar

    def trial(self, outcome, trained: int) -> None:
        line = f"{format_outcome(outcome)}  [{min(trained, self.total)}/{self.total} trained]"
        if self.live:
            from tqdm.auto import tqdm

            tqdm.write(line)
            self.set(trained)
        else:
            print(line, flush=True)

    def note(self, line: str) -> None:
        """A line that is not a trial: above the bar on a terminal, plain in a log."""
        if self.live:
            from tqdm.auto import tqdm

            tqdm.write(line)
        else:
            print(line, flush=True)

    def waiting(self, running: int) -> None:
        if self.live:
            self._bar().set_postfix_str(f"waiting for {running} running trial(s)")

    def set(self, trained: int) -> None:
        if self.live:
            self._bar().n = min(trained, self.total)
            self._bar().refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
