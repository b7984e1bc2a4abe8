"""Races between processes on one SQLite store (nas.store.opening.open_storage), each reproduced at
its cause on real SQLite files with real Optuna: two workers asking at the same moment never
both take one enqueued trial (the cause of "Cannot tell a COMPLETE trial" in a worker nobody
killed), processes opening a new store at the same moment all open it (the cause of "table
... already exists"), and a trial another process failed while this one trained it is lost,
said once, and the search goes on (no "Cannot tell a FAIL trial" traceback)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event

from nas import records
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.search.loop import run_search
from nas.store.opening import open_storage, stale_trial_callback
from nas.trial_view import is_trained

from helpers import one_torch_thread

TINY = Path(__file__).resolve().parent.parent / "search_spaces" / "tiny.yaml"


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

    event.listen(first.inner.engine, "before_cursor_execute", interleave)
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


# four real processes, twice: slow; the rule's fast proof holds a writer's lock for 1 s
# (test_a_store_another_process_is_writing_waits_for_its_lock)
@pytest.mark.slow
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


@pytest.mark.parametrize("epochs", [1, 2])  # failed before its tell; failed before its epoch 2
def test_a_trial_another_process_failed_while_it_trained_is_lost_and_the_search_goes_on(
    tmp_path, epochs
):
    url = f"sqlite:///{tmp_path}/s.db"
    config = SearchConfig(
        budget=8000, trials=2, space=str(TINY), study="s", storage=url, pruner="none",
        heartbeat=1, confirm=0,
    )  # fmt: skip
    failed: list[int] = []

    def another_process_fails_the_training_trial() -> bool:
        # should_stop, asked after every epoch: the first time a trial is training, a second
        # handle on the file fails it as another worker's reaper would, candidate re-enqueued
        if not failed:
            other = optuna.load_study(study_name="s", storage=open_storage(url))
            for trial in other.get_trials(states=(TrialState.RUNNING,)):
                if records.DEVICE in trial.user_attrs:  # its objective is training it
                    told = other.tell(trial.number, state=TrialState.FAIL)
                    stale_trial_callback(max_retry=2)(other, told)
                    failed.append(trial.number)
        return False

    lines: list[str] = []
    with one_torch_thread():
        study = run_search(
            config,
            DataConfig(dataset="synthetic", subset=48),
            Recipe(epochs=epochs, batch_size=16, augment="none"),
            Machine(device="cpu"),
            should_stop=another_process_fails_the_training_trial,
            announce=lines.append,
        )
    trials = study.get_trials()
    assert len(failed) == 1
    lost = trials[failed[0]]
    assert lost.state == TrialState.FAIL
    said = [line for line in lines if f"trial {failed[0]} was failed by another process" in line]
    assert len(said) == 1
    trained = [t for t in trials if is_trained(t)]
    assert len(trained) == 2  # the target, the lost trial not counted
    assert TrialState.RUNNING not in {t.state for t in trials}
    # its candidate was tried again and trained: nothing lost
    assert lost.params in [t.params for t in trained]


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])  # a new file; one already in WAL
def test_a_store_another_process_is_writing_waits_for_its_lock(tmp_path, journal_mode):
    # switching to WAL or creating tables upgrades a read lock, and SQLite answers "database
    # is locked" at once (no busy wait) while another connection holds the write lock
    path = tmp_path / "new.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute(f"PRAGMA journal_mode={journal_mode}")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE other_writer (x)")
    committed = threading.Timer(1.0, lambda: writer.execute("COMMIT"))
    committed.start()
    storage = open_storage(f"sqlite:///{path}")
    committed.join()
    writer.close()
    study = optuna.create_study(study_name="after", storage=storage)
    assert study.study_name == "after"
    with sqlite3.connect(path) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {row[0] for row in reader.execute("SELECT name FROM sqlite_master")}
    assert {"other_writer", "studies", "trials"} <= names
