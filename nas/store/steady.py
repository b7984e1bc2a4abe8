"""Owns what every study store this tool writes through does besides Optuna's own: riding out a
short outage of the store, and the heartbeats of the trials this process runs.

`SteadyStore` wraps an Optuna store (an `RDBStorage` for SQLite, PostgreSQL and MySQL, a
`JournalStorage` for a journal file) behind Optuna's public `BaseStorage` interface:

- **Outages.** A call that fails because the store cannot be reached or written (a PostgreSQL
  restart or failover, a dropped connection, a SQLite file whose disk is full or locked past
  its busy timeout) is tried again with a growing pause (0.25 s, doubling, at most 8 s) for up
  to `outage` seconds; the first failure and the recovery are said once each on stderr. If the
  store stays away, `StoreUnavailable` says so in one sentence: nothing stored is lost, and the
  same command, run again, resumes. Any other error (a refused write to a finished trial, bad
  data) is raised at once, as Optuna raised it.
- **Heartbeats.** Every trial this process sets RUNNING records `records.HEARTBEAT`
  (wall-clock seconds) at once and every `heartbeat` seconds until this process finishes it;
  `nas.search.reaper.StaleTrialReaper` fails a RUNNING trial whose beat is older than the grace
  period, whichever machine it ran on. One mechanism for every kind of store: Optuna's own
  heartbeat serves RDB stores only and is off for a store it does not know.

Claims:
- A store call that fails while the store is away is retried until it answers, within
  `outage` seconds; the caller sees its result as if nothing had happened.
- The outage is said when a call first meets it, and its end when a call that met it lands.
- A store that stays away past `outage` seconds ends the call in `StoreUnavailable`, whose
  message is one sentence naming the store, how long it was tried and the cause; after that,
  each call is tried once (the command is ending: its last writes do not wait again).
- An error that is not an outage is raised at once, with no retry.
- A finishing write retried after an outage, which had landed before the connection broke, is
  taken as done (True), not as "Cannot tell a COMPLETE trial".
- A trial this process runs beats until it is finished, and only then stops.
- A study's trials are read whole only once: its finished trials come from this process's copy
  (`nas.store.finished_trials`), which Optuna's own cache, internal to it, cannot be asked for.
- `steady_for` counts from the end of the last outage this process saw (infinite before one).
"""

from __future__ import annotations

import copy
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from nas import records
from nas.errors import StoreUnavailable
from nas.store.finished_trials import FinishedTrials

FIRST_PAUSE, LONGEST_PAUSE = 0.25, 8.0  # seconds between tries while the store is away


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the store could not be reached or written, rather than that the
    call itself was refused: SQLAlchemy's OperationalError (connection refused or dropped, disk
    full, database locked) or InterfaceError, raised as they are or wrapped by Optuna's
    StorageInternalError."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(error, optuna.exceptions.StorageInternalError):
        error = error.__cause__ or error.__context__ or error
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (OperationalError, InterfaceError))


def unavailable_in(error: BaseException) -> StoreUnavailable | None:
    """The `StoreUnavailable` that `error` is, or arose while handling (Optuna, failing to
    record a trial whose objective raised it, raises its own error over it), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, StoreUnavailable):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def outage_reason(error: BaseException) -> str:
    """The first line of what the database said, without SQLAlchemy's background link."""
    cause = error
    if isinstance(error, optuna.exceptions.StorageInternalError):
        cause = error.__cause__ or error
    original = getattr(cause, "orig", None) or cause
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def _delegate(name: str):
    def method(self: SteadyStore, *args: Any, **kwargs: Any) -> Any:
        return self.call(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"`BaseStorage.{name}` of the inner store, tried again through an outage."
    return method


# Every public method of Optuna's BaseStorage goes to the inner store through `call`. Read from
# BaseStorage itself, so that a method a newer Optuna adds is delegated too.
_Delegating = type(
    "_Delegating",
    (BaseStorage,),
    {
        name: _delegate(name)
        for name in dir(BaseStorage)
        if not name.startswith("_") and callable(getattr(BaseStorage, name))
    },
)


class SteadyStore(_Delegating):
    """`inner`, retried through outages of up to `outage` seconds, beating the trials this
    process runs every `heartbeat` seconds (no beats when `heartbeat` is None: a store only
    read). `shown` is the store as messages name it (its URL without a password)."""

    def __init__(
        self,
        inner: BaseStorage,
        shown: str,
        *,
        heartbeat: float | None,
        outage: float,
        say: Callable[[str], None] | None = None,
    ):
        self.inner, self.shown = inner, shown
        self.heartbeat, self.outage = heartbeat, outage
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.beats: dict[int, threading.Event] = {}  # trial id -> set to stop its beat
        self.lock = threading.Lock()  # the beats, and one outage message at a time
        self.away_since: float | None = None  # when the current outage was first seen
        self.back_at: float | None = None  # when the last outage ended (time.monotonic)
        self.given_up = False  # an outage outlasted the allowance: later calls try once
        self.trial_copy = FinishedTrials(self.call)  # finished trials, read once

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """`inner.name(*args, **kwargs)`, tried again while the store is away."""
        method = getattr(self.inner, name)
        started, pause, tried = time.monotonic(), FIRST_PAUSE, False
        while True:
            try:
                result = method(*args, **kwargs)
            except Exception as error:
                if tried and name == "set_trial_state_values" and self.landed(*args, **kwargs):
                    result = True  # it landed before the connection broke: done, not refused
                elif not is_outage(error):
                    raise
                else:
                    waited = time.monotonic() - started
                    if self.given_up or waited >= self.outage:
                        self.given_up = True
                        raise StoreUnavailable(self.gone(waited, error)) from None
                    self.away(error)
                    time.sleep(min(pause, self.outage - waited))
                    pause, tried = min(pause * 2, LONGEST_PAUSE), True
                    continue
            self.given_up = False
            if tried:  # the call that met the outage says it is over: a read that works while
                self.back()  # writes still fail (a full disk) does not
            return result

    def gone(self, waited: float, error: BaseException) -> str:
        return (
            f"the study store {self.shown} could not be reached or written for {waited:.0f} s "
            f"({outage_reason(error)}); nothing stored is lost: run the same command again "
            "once the store is back (or has free space) and it resumes"
        )

    def away(self, error: BaseException) -> None:
        with self.lock:
            if self.away_since is None:
                self.away_since = time.monotonic()
                self.say(
                    f"the study store {self.shown} is not answering ({outage_reason(error)}); "
                    f"trying again for up to {self.outage:.0f} s"
                )

    def back(self) -> None:
        if self.away_since is None:
            return
        with self.lock:
            if self.away_since is not None:
                self.say(
                    f"the study store {self.shown} is back after "
                    f"{time.monotonic() - self.away_since:.0f} s; going on"
                )
                self.away_since, self.back_at = None, time.monotonic()

    def steady_for(self) -> float:
        """Seconds since this process last saw the store come back (infinite if never away):
        until it has been back for a grace period, every beat written through it is late."""
        return float("inf") if self.back_at is None else time.monotonic() - self.back_at

    def landed(self, trial_id: int, state: TrialState, values=None) -> bool:
        try:
            trial = self.inner.get_trial(trial_id)
        except Exception:  # noqa: BLE001 - still away: the retry loop decides
            return False
        return trial.state == state and (values is None or trial.values == list(values))

    # a study's trials: the finished ones from this process's copy (nas.store.finished_trials)

    def get_all_trials(self, study_id, deepcopy=True, states=None):
        trials = self.trial_copy.trials(study_id)
        if states is not None:
            trials = [trial for trial in trials if trial.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_n_trials(self, study_id, state=None):
        states = (state,) if isinstance(state, TrialState) else state
        return len(self.get_all_trials(study_id, deepcopy=False, states=states))

    # what this process runs beats: the trials it creates RUNNING or takes from WAITING

    def create_new_trial(self, study_id, template_trial=None):
        trial_id = self.call("create_new_trial", study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self.start_beat(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id, state, values=None):
        if state.is_finished():
            self.stop_beat(trial_id)  # before the write: no beat lands on a finished trial
        changed = self.call("set_trial_state_values", trial_id, state, values)
        if changed and state == TrialState.RUNNING:  # this process took a WAITING trial
            self.start_beat(trial_id)
        return changed

    def start_beat(self, trial_id: int) -> None:
        if self.heartbeat is None:
            return
        stop = threading.Event()
        with self.lock:
            self.beats[trial_id] = stop
        self.beat(trial_id)  # at once: a retried trial may carry its dead run's last beat
        thread = threading.Thread(
            target=self.keep_beating, args=(trial_id, stop), daemon=True, name="nas-heartbeat"
        )
        thread.start()

    def stop_beat(self, trial_id: int) -> None:
        with self.lock:
            stop = self.beats.pop(trial_id, None)
        if stop is not None:
            stop.set()

    def keep_beating(self, trial_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            if not self.beat(trial_id):
                return

    def beat(self, trial_id: int) -> bool:
        try:
            self.call("set_trial_system_attr", trial_id, records.HEARTBEAT, time.time())
        except (RuntimeError, KeyError):  # Optuna's UpdateFinishedTrialError is a RuntimeError
            return False  # finished meanwhile (by this process or a reaper elsewhere)
        except StoreUnavailable:
            return False  # the store is gone: the trial's own next write says so, once
        return True


def beat_age(trial: optuna.trial.FrozenTrial) -> float | None:
    """Seconds since the trial's last heartbeat, None when it has none."""
    beat = trial.system_attrs.get(records.HEARTBEAT)
    return time.time() - beat if isinstance(beat, (int, float)) else None
