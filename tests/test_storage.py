"""The study store: URLs shown without passwords, read-only opening that creates nothing, and
the reaper that fails RUNNING trials whose process is gone (even before their first heartbeat),
on real SQLite stores."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.engine import Engine

from nas import records
from nas.errors import UserError
from nas.search.progress import WaitWatch
from nas.search.reaper import StaleTrialReaper, worker_record
from nas.store.opening import display_url, open_storage, sqlite_path

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    # these tests ask() for trials as a killed worker leaves them, outside Study.optimize
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used"),
]


@pytest.mark.parametrize(
    "url, shown",
    [
        (
            "postgresql+psycopg2://nas:s3cret@db:5432/nas",
            "postgresql+psycopg2://nas:***@db:5432/nas",
        ),
        ("mysql://root:p%40ss@localhost/x", "mysql://root:***@localhost/x"),
        ("sqlite:///studies/nas.db", "sqlite:///studies/nas.db"),
        ("not a url user:pw@host", "not a url user:pw@host"),  # nothing URL-like to mask
        ("weird://user:pw@host:notaport/db", "weird://user:***@host:notaport/db"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    assert display_url(url) == shown


def test_sqlite_paths_come_from_sqlalchemy_not_string_prefixes():
    assert sqlite_path("sqlite:///studies/nas.db") == Path("studies/nas.db")
    assert sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("postgresql://u@h/db") is None


def test_reading_a_missing_store_creates_nothing(tmp_path):
    with pytest.raises(UserError, match="there is no study store at"):
        open_storage(f"sqlite:///{tmp_path}/missing.db", create=False)
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_store_is_in_wal_mode(tmp_path):
    open_storage(f"sqlite:///{tmp_path}/s.db")
    with sqlite3.connect(tmp_path / "s.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_every_store_connection_waits_a_minute_for_another_writer(tmp_path):
    """What the slow test below shows with a real 6 s lock, read from each SQLite connection the
    store opens (SQLAlchemy's public connect event): a busy timeout of 60 s, not sqlite3's 5 s."""
    waits = []

    def read_wait(connection, _record) -> None:
        waits.append(connection.execute("PRAGMA busy_timeout").fetchone()[0])

    event.listen(Engine, "connect", read_wait)
    try:
        _study(tmp_path).set_user_attr("written", True)
    finally:
        event.remove(Engine, "connect", read_wait)
    assert waits and set(waits) == {60_000}  # milliseconds


@pytest.mark.slow  # holds a real lock for 6 s; the wait is proven fast above
def test_a_write_waits_for_another_writer_instead_of_failing(tmp_path):
    study = _study(tmp_path)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process's write transaction holds the lock
    # longer than sqlite3's own 5 s default wait, so only the store's longer wait gets through
    release = threading.Timer(6.0, lambda: other.execute("COMMIT"))
    release.start()
    try:
        study.set_user_attr("written", True)  # raises "database is locked" without the wait
    finally:
        release.join()
        other.close()
    assert study.user_attrs["written"] is True


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(
        study_name="s", storage=open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=60)
    )


def _finished_pid() -> int:
    """The pid of a process that has ended (and been waited for): nothing runs under it."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_trial_whose_local_process_is_gone_is_failed_and_retried_at_once(tmp_path):
    study = _study(tmp_path)
    study.enqueue_trial({"x": 3})
    dead = study.ask()  # what a killed worker leaves: RUNNING, no heartbeat, params fixed
    dead.suggest_int("x", 0, 9)
    dead.set_user_attr(records.WORKER, {**worker_record(), "pid": _finished_pid()})
    alive = study.ask()
    alive.set_user_attr(records.WORKER, worker_record())  # this process: alive
    elsewhere = study.ask()
    elsewhere.set_user_attr(records.WORKER, {"host": "another-machine", "pid": 1})

    assert StaleTrialReaper(grace=3600)(study) == [dead.number]
    states = {t.number: t.state for t in study.trials}
    assert states[dead.number] == TrialState.FAIL
    assert states[alive.number] == states[elsewhere.number] == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    again = study.ask()  # the next trial asked for is the retry, with the dead one's candidate
    assert again.number == retry.number
    assert again.suggest_int("x", 0, 9) == 3


def test_a_trial_that_never_started_its_objective_is_failed_after_the_grace(tmp_path):
    study = _study(tmp_path)
    orphan = study.ask()  # killed before its objective's first line: no worker, no heartbeat
    reap = StaleTrialReaper(grace=0.3)
    assert reap(study) == []  # first seen now
    assert study.trials[orphan.number].state == TrialState.RUNNING
    time.sleep(0.4)
    assert reap(study) == [orphan.number]
    assert study.trials[orphan.number].state == TrialState.FAIL
    assert reap(study) == []  # nothing twice


def test_waiting_for_trials_that_make_no_progress_ends_with_a_message(tmp_path):
    study = _study(tmp_path)
    running = study.ask()
    watch = WaitWatch(max_wait=0.2)
    watch.check(study)
    running.report(0.5, 1)  # an epoch: progress restarts the clock
    time.sleep(0.25)
    watch.check(study)
    time.sleep(0.25)
    with pytest.raises(UserError, match=rf"trial\(s\) {running.number}, which other processes"):
        watch.check(study)
