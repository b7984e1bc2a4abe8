"""Owns a search's time budget (`nas search --time-limit 8h`): reading the limit, the rule that
decides whether one more trial may start, and the account of where the time went.

Claims:
- `parse_duration` reads `8h`, `90m`, `3600s` (and a plain number of seconds) into seconds;
  anything else, zero or a negative value is a `UserError` of one sentence.
- `may_start(elapsed, limit, per_trial, reserve)` is the stop rule, a pure function: a new
  trial starts only while the time left (`limit - elapsed`) holds one more trial at the
  measured pace (`per_trial`) plus `reserve` (the confirmation runs still to come). Before any
  trial of this run has trained, the pace is unknown and a trial starts while time is left.
- `TimeBudget` measures with the clock it is given (`time.monotonic` by default; a test or a
  benchmark passes its own, e.g. one that counts training epochs), from its creation, plus
  `offset`, the time the command spent before it was made (the interpreter's start, imports,
  a worker's parent's setup): each run of a search has its own limit, also on a resume,
  counted from the command's start (`nas.process.command_start`). `closing` is held back from
  the limit for what runs after the search loop (the closing report and summary, a worker's
  parent noticing its exit): no trial or confirmation run starts that would reach into it, and
  a trial stops after the epoch that does (`expired`, `fits`, `allows_trial`, `left`). It
  adds up the time of every trial by what became of it (trained, stopped by the pruner,
  rejected, duplicate, other) and of the confirmation runs. The pace is the slowest epoch of
  this run's trials that trained: the next trial is priced as a full trial at that pace
  (`per_trial`), not at a mean that pruned trials lower; `fits(seconds)` and `expired()` are
  what the loop asks before a confirmation run and after every epoch.
- `may_start_workers(elapsed, limit, startup, closing)`: worker processes start only while the
  time left holds their start-up (interpreter, imports, data load) and the closing;
  `workers_refusal` prices the start-up as the command's own so far and says the skip in one
  sentence.
- `record_closing(study, seconds)` keeps the closing's measured time on the study
  (`records.CLOSING`); `recorded_closing(study_attrs)` reads it back (0 before one was measured)
  and `reserve_closing(budget, study)` holds it back from the next run's budget.
- A run's account is recorded on the study (a `records.TimeAccount` under
  `records.TIME_BUDGET_PREFIX` + the run's start and process), and
  `run_lines(study_attrs, since)` says, for each run started since then, whether the time
  limit stopped it and where its time went.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nas import records
from nas.config.search import SearchConfig
from nas.errors import UserError

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}  # suffix -> seconds
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
KINDS = ("trained", "pruned", "rejected", "duplicate", "other", "confirmation")


def parse_duration(text: str) -> float:
    """Seconds in '8h', '90m', '3600s' or '3600'."""
    match = DURATION.match(str(text).lower())
    if match is None:
        raise UserError(f"--time-limit must be a duration such as 8h, 90m or 3600s, not {text!r}")
    seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise UserError(f"--time-limit must be more than 0, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """'2 h 05 min', '12 min 30 s', '45 s'."""
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.0f} s"


def may_start(elapsed: float, limit: float, per_trial: float | None, reserve: float = 0.0) -> bool:
    """Whether one more trial may start: the time left holds a trial at the measured pace and
    the reserve. `per_trial` None: no trial has trained yet, so any time left will do."""
    left = limit - elapsed
    if per_trial is None:
        return left > reserve
    return left >= per_trial + reserve


def confirmation_reserve(config: SearchConfig, budget: TimeBudget, epochs: int) -> float:
    """Time the confirmation runs will need: `config.confirm` full-length runs at this run's
    measured pace per epoch (0 before any trial trained, or in a Pareto study)."""
    per_epoch = budget.per_epoch()
    if config.pareto or not config.confirm or per_epoch is None:
        return 0.0
    return config.confirm * epochs * per_epoch


def may_start_workers(elapsed: float, limit: float, startup: float, closing: float) -> bool:
    """Whether worker processes may start: the time left holds their start-up and the closing
    (a worker that starts with no time for a trial only adds its start-up to the overrun)."""
    return limit - elapsed >= startup + closing


def workers_refusal(elapsed: float, limit: float, closing: float) -> str | None:
    """The sentence that skips the workers when the time left cannot hold their start-up, priced
    as this command's own so far (`elapsed`: interpreter, imports, data load, the same work),
    and the closing; None when they may start."""
    if may_start_workers(elapsed, limit, elapsed, closing):
        return None
    return (
        f"time limit: the {format_duration(limit - elapsed)} left cannot hold the workers' "
        f"start-up (about {format_duration(elapsed)}, as this command's took) and the closing "
        "report; no worker started"
    )


def record_closing(study, seconds: float) -> None:
    """Keep the closing's measured time (report, summary) on the study: the next run's reserve."""
    study.set_user_attr(records.CLOSING, round(seconds, 3))


def recorded_closing(study_attrs: dict) -> float:
    """The last measured closing of this study (0.0 before one was measured)."""
    seconds = study_attrs.get(records.CLOSING)
    return float(seconds) if isinstance(seconds, (int, float)) else 0.0


def reserve_closing(budget: TimeBudget | None, study) -> None:
    """Hold back from `budget` the closing `study` last measured (nothing without a budget)."""
    if budget is not None:
        budget.closing += recorded_closing(study.user_attrs)


def account_line(
    limit: float,
    used: float,
    spent: dict[str, float],
    counts: dict[str, int],
    describe: Callable[[float], str] = format_duration,
) -> str:
    """'time limit 20 s: 14 s used: trained 3 (11 s), rejected 2 (1 s), ...'."""
    names = {"pruned": "stopped by the pruner", "duplicate": "duplicates"}
    parts = [
        f"{names.get(kind, kind)} {counts[kind]} ({describe(spent[kind])})"
        for kind in KINDS
        if counts.get(kind)
    ]
    head = f"time limit {describe(limit)}: {describe(used)} used"
    return head + (": " + ", ".join(parts) if parts else "")


@dataclass
class TimeBudget:
    """A limit on one run of a search, measured with `clock` from the moment it is made."""

    limit: float  # in the clock's units (seconds for the default clock)
    clock: Callable[[], float] = time.monotonic
    offset: float = 0.0  # spent before this budget was made: the command's start came first
    epochs: int = 1  # a full trial's epochs: what the next trial is priced as
    closing: float = 0.0  # held back from the limit for what runs after the search loop
    started: float = field(init=False)
    spent: dict[str, float] = field(init=False)  # clock units by what the time went to
    counts: dict[str, int] = field(init=False)  # trials (and confirmation runs) by kind
    slowest_epoch: float | None = field(init=False, default=None)  # clock units per epoch
    stopped: bool = field(init=False, default=False)  # True once the rule refused a new trial
    cut: bool = field(init=False, default=False)  # True once a trial stopped as the time ran out

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.started_at = datetime.datetime.now(datetime.UTC)  # names the run's record
        self.spent = dict.fromkeys(KINDS, 0.0)
        self.counts = dict.fromkeys(KINDS, 0)

    def elapsed(self) -> float:
        return self.clock() - self.started + self.offset

    def left(self) -> float:
        """Time left for the search loop: the limit less the time used and the closing."""
        return self.limit - self.closing - self.elapsed()

    def expired(self) -> bool:
        """The time is overrun: a running trial stops after its epoch. One ending exactly at the
        limit is not cut: a trial that fitted exactly was allowed to start."""
        return self.left() < 0

    def fits(self, duration: float) -> bool:
        """The time left holds `duration`."""
        return self.left() >= duration

    def record(self, kind: str, duration: float, epochs: int = 0) -> None:
        """A finished trial (or confirmation run) of `kind` (one of KINDS) took `duration`;
        `epochs`: the epochs it trained (trained and pruned trials)."""
        self.spent[kind] += duration
        self.counts[kind] += 1
        if kind in ("trained", "pruned") and epochs:
            self.slowest_epoch = max(self.slowest_epoch or 0.0, duration / epochs)

    def per_trial(self) -> float | None:
        """A full trial (`epochs`) at the slowest epoch of this run's trained trials."""
        return None if self.slowest_epoch is None else self.epochs * self.slowest_epoch

    def per_epoch(self) -> float | None:
        """The slowest training epoch of this run's trials (None before one trained)."""
        return self.slowest_epoch

    def allows_trial(self, reserve: float = 0.0) -> bool:
        """The stop rule at this moment; remembers a refusal (`stopped`)."""
        if may_start(self.elapsed(), self.limit - self.closing, self.per_trial(), reserve):
            return True
        self.stopped = True
        return False

    def account(self, describe: Callable[[float], str] = format_duration) -> str:
        """One line: where the time went (`account_line`)."""
        return account_line(self.limit, self.elapsed(), self.spent, self.counts, describe)

    def to_record(self) -> dict:
        """The run's account as it is stored on the study (`records.TimeAccount`)."""
        return records.TimeAccount(
            started=self.started_at.isoformat(),
            limit=self.limit,
            used=self.elapsed(),
            stopped_by_limit=self.stopped or self.cut,
            spent=dict(self.spent),
            counts=dict(self.counts),
        ).to_dict()

    def record_key(self) -> str:
        return f"{records.TIME_BUDGET_PREFIX}{self.started_at:%Y%m%dT%H%M%S}_{os.getpid()}"


def run_lines(study_attrs: dict, since: datetime.datetime | None = None) -> list[str]:
    """One line per run with a time limit (started at or after `since`), oldest first."""
    lines = []
    for key in sorted(k for k in study_attrs if k.startswith(records.TIME_BUDGET_PREFIX)):
        run = records.TimeAccount.from_dict(study_attrs[key])
        started = datetime.datetime.fromisoformat(run.started)
        if since is not None and started < since.replace(microsecond=0):
            continue
        account = account_line(run.limit, run.used, run.spent, run.counts)
        why = (
            "stopped by the time limit: no further trial fitted in the time left"
            if run.stopped_by_limit
            else "ended within the time limit"
        )
        lines.append(f"run of {started:%Y-%m-%d %H:%M} UTC {why}; {account}")
    return lines


class Ending:
    """What ends a run besides its target: a stop request (SIGTERM, Ctrl-C) and the time
    limit, with the one sentence that says what the time limit skipped."""

    def __init__(
        self,
        stop: Callable[[], bool],
        time_budget: TimeBudget | None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.stop, self.time_budget = stop, time_budget
        self.announce = announce or (lambda _line: None)

    def out_of_time(self) -> bool:
        return self.time_budget is not None and self.time_budget.expired()

    def halt(self) -> bool:
        """Checked after every epoch: a stop request, or no time left."""
        return self.stop() or self.out_of_time()

    def say(self, line: str) -> None:
        self.announce(f"time limit: {line}")
