"""Owns the journal-file store: Optuna's `JournalStorage` on one append-only file, the store for
a cluster's shared filesystem (NFS, Lustre, GPFS), where SQLite's locking is unreliable, and the
heartbeats Optuna keeps only for its RDB stores.

Its URL is `journal:///` followed by the file's path, the way SQLite's URL names its file:
`journal:///studies/nas.log` is relative to the working directory,
`journal:////shared/nas/study.log` (four slashes) is absolute. optuna-dashboard opens the file
itself: `optuna-dashboard /shared/nas/study.log` (`nas.commands.dashboard_command`).

Optuna's journal store has no heartbeat of its own (its heartbeat thread and
`fail_stale_trials` serve RDB stores only), so a trial whose machine died would stay RUNNING
for ever. `BeatingJournalStorage` beats instead: every trial this process sets RUNNING gets
`records.HEARTBEAT` (wall-clock seconds) written at once and every `heartbeat` seconds, until
this process finishes it; `nas.search.reaper.StaleTrialReaper` fails a RUNNING trial whose beat is
older than the grace period, whichever machine it ran on.

Claims:
- `journal_path` is the file a `journal:` URL names (parsed by SQLAlchemy's `make_url`, as every
  storage URL), None for any other URL; a `journal:` URL without a path is a UserError.
- Opening with `create=False` never creates the file: a missing one is one sentence.
- A trial this process runs beats until it is finished, and only then stops.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.trial import TrialState

from nas import records
from nas.errors import UserError

SCHEME = "journal"


def journal_path(url: str) -> Path | None:
    """The file of a `journal:///PATH` store; None for another kind of URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.drivername != SCHEME:
        return None
    if not parsed.database:
        raise UserError(
            f"{url!r} names no journal file; write journal:///studies/nas.log (relative) or "
            "journal:////shared/nas/study.log (absolute)"
        )
    return Path(parsed.database)


def file_backend(path: Path):
    """Optuna's append-only file backend, under its public name in this Optuna: `journal.
    JournalFileBackend` since 4.0, `JournalFileStorage` before. Its default lock (a symlink)
    works on NFS."""
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # Optuna < 4.0
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return JournalFileBackend(str(path))


def open_journal(path: Path, *, heartbeat: int = 30, create: bool = True) -> JournalStorage:
    """The journal store in `path`; with `create`, the file (and its folder) is made when
    missing and the trials this process runs beat every `heartbeat` seconds."""
    if not create:
        if not path.is_file():
            raise UserError(
                f"there is no study store at {path}; run a search first (nas search) or pass "
                "--storage with the store's URL"
            )
        return JournalStorage(file_backend(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return BeatingJournalStorage(file_backend(path), heartbeat)
    except OSError as error:
        raise UserError(f"cannot create the journal store {path}: {error}") from None


class BeatingJournalStorage(JournalStorage):
    """A journal store whose RUNNING trials, while this process runs them, record a heartbeat
    (`records.HEARTBEAT`) every `heartbeat` seconds: the journal's stand-in for Optuna's RDB
    heartbeats. A beat stops when this process finishes the trial, or when its process dies."""

    def __init__(self, backend, heartbeat: int):
        super().__init__(backend)
        self.heartbeat = heartbeat
        self.beats: dict[int, threading.Event] = {}  # trial id -> set to stop its beat
        self.beats_lock = threading.Lock()

    def create_new_trial(self, study_id, template_trial=None):
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self.start_beat(trial_id)
        return trial_id

    def set_trial_state_values(self, trial_id, state, values=None):
        if state.is_finished():
            self.stop_beat(trial_id)  # before the write: no beat lands on a finished trial
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:  # this process took a WAITING trial
            self.start_beat(trial_id)
        return changed

    def start_beat(self, trial_id: int) -> None:
        stop = threading.Event()
        with self.beats_lock:
            self.beats[trial_id] = stop
        self.beat(trial_id)  # at once: a retried trial may carry its dead run's last beat
        thread = threading.Thread(
            target=self.keep_beating, args=(trial_id, stop), daemon=True, name="nas-heartbeat"
        )
        thread.start()

    def stop_beat(self, trial_id: int) -> None:
        with self.beats_lock:
            stop = self.beats.pop(trial_id, None)
        if stop is not None:
            stop.set()

    def keep_beating(self, trial_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            if not self.beat(trial_id):
                return

    def beat(self, trial_id: int) -> bool:
        try:
            self.set_trial_system_attr(trial_id, records.HEARTBEAT, time.time())
        except (RuntimeError, KeyError):  # Optuna's UpdateFinishedTrialError is a RuntimeError
            return False  # finished meanwhile (by this process or a reaper elsewhere)
        return True


def beat_age(trial: optuna.trial.FrozenTrial) -> float | None:
    """Seconds since the trial's last journal heartbeat, None when it has none."""
    beat = trial.system_attrs.get(records.HEARTBEAT)
    return time.time() - beat if isinstance(beat, (int, float)) else None
