"""The store every command writes through (nas.store.steady.SteadyStore), on real stores: a real
SQLite file whose connection fails for a while (failures raised at the driver, through
SQLAlchemy's public events, as a dropped server connection or a full disk raise them), a real
journal file; the heartbeat of a running trial on each kind of store."""

from __future__ import annotations

import re
import sqlite3
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event

from nas import records
from nas.errors import StoreUnavailable
from nas.search.reaper import StaleTrialReaper
from nas.store.opening import open_storage
from nas.store.steady import SteadyStore, is_outage


class Outage:
    """Makes the next `failures` statements on `storage`'s engine fail as `error` does (at
    the driver: SQLAlchemy wraps it as for a real outage); `after` statements pass first."""

    def __init__(
        self, storage: SteadyStore, failures: int, error: str, after: int = 0, writes=False
    ):
        self.failures, self.error, self.after, self.writes = failures, error, after, writes
        self.statements = 0
        event.listen(storage.inner.engine, "before_cursor_execute", self)

    def __call__(self, _connection, _cursor, statement: str, *_args) -> None:
        self.statements += 1
        if self.writes and not statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            return  # a full disk: reads go on
        if self.statements > self.after and self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError(self.error)


def _steady(tmp_path, outage: float = 30, said: list | None = None) -> tuple[SteadyStore, int]:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=60, outage=outage)
    if said is not None:
        storage.say = said.append
    optuna.create_study(study_name="s", storage=storage)
    return storage, storage.get_study_id_from_name("s")


def test_a_write_while_the_store_is_away_lands_once_it_is_back(tmp_path):
    said: list[str] = []
    storage, study_id = _steady(tmp_path, said=said)
    trial_id = storage.create_new_trial(study_id)
    Outage(storage, failures=2, error="disk I/O error")  # two tries fail, the third lands
    storage.set_trial_user_attr(trial_id, "written", 7)
    reread = open_storage(f"sqlite:///{tmp_path}/s.db", create=False)
    assert reread.get_trial(trial_id).user_attrs["written"] == 7
    assert said[0] == (
        f"the study store sqlite:///{tmp_path}/s.db is not answering (disk I/O error); "
        "trying again for up to 30 s"
    )  # once, not once per try
    assert re.fullmatch(
        rf"the study store sqlite:///{tmp_path}/s.db is back after \d+ s; going on", said[1]
    )
    assert len(said) == 2


def test_a_read_that_works_while_writes_fail_does_not_say_the_store_is_back(tmp_path):
    said: list[str] = []
    storage, study_id = _steady(tmp_path, said=said)
    trial_id = storage.create_new_trial(study_id)
    Outage(storage, failures=2, error="database or disk is full", writes=True)
    writer = threading.Thread(target=storage.set_trial_user_attr, args=(trial_id, "w", 1))
    writer.start()
    while storage.away_since is None:  # the write met the full disk, and waits to try again
        time.sleep(0.01)
    assert storage.get_trial(trial_id).number == 0  # a read works meanwhile
    writer.join()
    assert storage.get_trial(trial_id).user_attrs["w"] == 1
    assert len(said) == 2 and "not answering" in said[0] and "is back after" in said[1]


def test_a_store_away_past_the_allowance_is_one_sentence(tmp_path):
    storage, study_id = _steady(tmp_path, outage=1, said=[])
    trial_id = storage.create_new_trial(study_id)
    outage = Outage(storage, failures=10**6, error="database or disk is full")
    with pytest.raises(StoreUnavailable) as raised:
        storage.set_trial_user_attr(trial_id, "written", 7)
    # tried at 0, 0.25, 0.75 s, then once more at the 1 s allowance
    assert outage.statements >= 4
    assert str(raised.value) == (
        f"the study store sqlite:///{tmp_path}/s.db could not be reached or written for 1 s "
        "(database or disk is full); nothing stored is lost: run the same command again once "
        "the store is back (or has free space) and it resumes"
    )
    assert "\n" not in str(raised.value)
    outage.statements = 0  # the command is ending: its last writes try once, not for 1 s again
    with pytest.raises(StoreUnavailable, match="for 0 s"):
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    assert outage.statements == 1
    reread = open_storage(f"sqlite:///{tmp_path}/s.db", create=False)
    assert reread.get_trial(trial_id).state == TrialState.RUNNING  # nothing lost, nothing torn


def test_an_error_that_is_not_an_outage_is_raised_at_once(tmp_path):
    said: list[str] = []
    storage, study_id = _steady(tmp_path, said=said)
    finished = [storage.create_new_trial(study_id) for _ in range(2)]
    for trial_id in finished:
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
    counter = Outage(storage, failures=0, error="unused")
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.inner.set_trial_user_attr(finished[0], "late", 1)  # one try, by Optuna itself
    one_try, counter.statements = counter.statements, 0
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attr(finished[1], "late", 1)
    assert counter.statements == one_try and said == []  # no retry, nothing said


def test_a_finishing_write_that_landed_before_the_break_is_taken_as_done(tmp_path):
    storage, study_id = _steady(tmp_path, said=[])
    landed, refused = storage.create_new_trial(study_id), storage.create_new_trial(study_id)
    for trial_id in (landed, refused):
        storage.inner.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
    # the write landed, then the connection broke before its answer came: the retry finds the
    # trial finished as asked
    Outage(storage, failures=1, error="server closed the connection unexpectedly")
    assert storage.set_trial_state_values(landed, TrialState.COMPLETE, [0.5]) is True
    # without a break, a write to a finished trial is refused as Optuna refuses it
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(refused, TrialState.COMPLETE, [0.5])
    # and after a break, a different result is refused too: it is not this write's
    Outage(storage, failures=1, error="server closed the connection unexpectedly")
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(refused, TrialState.COMPLETE, [0.7])


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_running_trial_beats_until_it_is_finished(tmp_path, kind):
    url = f"{kind}:///{tmp_path}/s.{'db' if kind == 'sqlite' else 'log'}"
    storage = open_storage(url, heartbeat=0.2)  # the flag takes whole seconds; the store any
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    first = study.trials[0].system_attrs[records.HEARTBEAT]  # written at once
    time.sleep(0.7)
    later = study.trials[0].system_attrs[records.HEARTBEAT]
    assert later >= first + 0.2  # beats while running
    study.tell(trial, 0.5)
    finished = study.trials[0].system_attrs[records.HEARTBEAT]
    time.sleep(0.6)
    # read through another store object: what the file holds, no beat after the trial ended
    reread = optuna.load_study(study_name="s", storage=open_storage(url, create=False))
    assert reread.trials[0].system_attrs[records.HEARTBEAT] == finished
    assert reread.trials[0].state == TrialState.COMPLETE


def test_outages_are_told_from_refusals():
    from sqlalchemy.exc import IntegrityError, OperationalError

    dropped = OperationalError("SELECT 1", {}, sqlite3.OperationalError("connection refused"))
    assert is_outage(dropped)
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = dropped
    assert is_outage(wrapped)
    refused = IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not is_outage(refused)
    wrapped_refusal = optuna.exceptions.StorageInternalError("commit failed")
    wrapped_refusal.__cause__ = refused
    assert not is_outage(wrapped_refusal)
    assert not is_outage(ValueError("Cannot tell a COMPLETE trial."))


def test_right_after_an_outage_no_trial_is_failed_for_a_late_beat(tmp_path):
    # while the store was away no beat landed: a live worker's trial looks stale for a while
    storage, study_id = _steady(tmp_path, said=[])
    plain = open_storage(f"sqlite:///{tmp_path}/s.db", create=False)  # writes no beats
    elsewhere = {records.WORKER_HOST: "another-machine", records.WORKER_PID: 1}
    paused = plain.create_new_trial(
        study_id,
        optuna.trial.create_trial(
            state=TrialState.RUNNING,
            user_attrs={records.WORKER: elsewhere},
            system_attrs={records.HEARTBEAT: time.time() - 100},  # past the 90 s grace
        ),
    )
    study = optuna.load_study(study_name="s", storage=storage)
    Outage(storage, failures=1, error="connection refused")
    storage.get_all_studies()  # this process sees the store go and come back
    assert StaleTrialReaper(grace=90, store=storage)(study) == []
    assert storage.get_trial(paused).state == TrialState.RUNNING
    # a process that saw no outage (or once the store has been back for the grace) fails it
    assert StaleTrialReaper(grace=90)(study) == [plain.get_trial_number_from_id(paused)]
    assert storage.get_trial(paused).state == TrialState.FAIL


def test_a_dead_processs_confirmation_claim_on_another_machine_is_failed_and_not_queued(tmp_path):
    storage, study_id = _steady(tmp_path, said=[])
    plain = open_storage(f"sqlite:///{tmp_path}/s.db", create=False)  # writes no beats
    claim = plain.create_new_trial(
        study_id,
        optuna.trial.create_trial(
            state=TrialState.RUNNING,
            user_attrs={
                records.CONFIRMS: 0,
                records.CLAIM_TOKEN: "dead",
                records.WORKER: {records.WORKER_HOST: "another-machine", records.WORKER_PID: 1},
            },
            system_attrs={records.HEARTBEAT: time.time() - 500},  # it died long ago
        ),
    )
    study = optuna.load_study(study_name="s", storage=storage)
    assert StaleTrialReaper(grace=90, store=storage)(study) == [0]
    assert storage.get_trial(claim).state == TrialState.FAIL  # trial 0 may be claimed again
    # and nothing queued: a queued copy of a claim would train a candidate no count sees
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL]
