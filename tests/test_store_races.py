"""Races between processes on one SQLite store (nas.storage.open_storage), each reproduced at
its cause on real SQLite files with real Optuna: two workers asking at the same moment never
both take one enqueued trial (the cause of "Cannot tell a COMPLETE trial" in a worker nobody
killed), and processes opening a new store at the same moment all open it (the cause of "table
... already exists")."""

from __future__ import annotations

import multiprocessing
import threading
import warnings

import optuna
import pytest
from sqlalchemy import event

from nas.storage import open_storage


def test_two_handles_asking_at_once_never_take_the_same_enqueued_trial(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    first, second = open_storage(url), open_storage(url)  # two workers' handles on one file
    study = optuna.create_study(study_name="s", storage=first)
    study.enqueue_trial({"x": 1.0})  # e.g. a killed worker's trial, retried
    study.enqueue_trial({"x": 2.0})
    other = optuna.load_study(study_name="s", storage=second)
    taken: dict[str, int] = {}

    def second_asks() -> None:
        taken["second"] = other.ask().number

    def interleave(_conn, _cursor, statement, *_args) -> None:
        # the moment the first worker, having read the trial WAITING, is about to set it
        # RUNNING: the second worker asks (given 2 s: it waits for the lock when there is one)
        if statement.lstrip().upper().startswith("UPDATE TRIALS") and "thread" not in taken:
            taken["thread"] = 1
            asking = threading.Thread(target=second_asks)
            asking.start()
            asking.join(timeout=2)
            interleave.asking = asking

    event.listen(first.engine, "before_cursor_execute", interleave)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Heartbeat ... supposed to be used with optimize"
        taken["first"] = study.ask().number
        interleave.asking.join(timeout=60)
    assert (taken["first"], taken["second"]) == (0, 1)  # one trial each, in the order asked
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.RUNNING] * 2


def _open(url: str, barrier, results) -> None:
    barrier.wait()  # every process opens the new store at the same moment
    try:
        open_storage(url)
        results.put("ok")
    except Exception as error:  # noqa: BLE001 - the parent reports what the child saw
        results.put(f"{type(error).__name__}: {error}")


@pytest.mark.parametrize("round_", range(2))
def test_processes_opening_a_new_store_at_once_all_open_it(tmp_path, round_):
    context = multiprocessing.get_context("spawn")
    url = f"sqlite:///{tmp_path}/new.db"
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_open, args=(url, barrier, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == ["ok"] * 4
    study = optuna.create_study(study_name="after", storage=open_storage(url))
    assert study.study_name == "after"
