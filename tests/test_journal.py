"""The journal-file store (`journal:///PATH`): its URL, read-only opening, the dashboard command
and report path it gives, its heartbeats and the reaper reading them, and real `python -m nas
search` processes on one journal file: several at once record exactly the target, and a SIGKILL
of one mid-trial loses nothing and runs nothing twice.

Real Optuna journal files under tmp_path; the tiny space and small synthetic data on the CPU.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas import records
from nas.cli.main import search_main
from nas.commands import dashboard_command
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.errors import UserError
from nas.report.page import default_report_path
from nas.search.loop import run_search
from nas.search.reaper import StaleTrialReaper
from nas.store.journal import journal_path
from nas.store.opening import check_url, open_storage, store_file
from nas.trial_view import is_trained

from helpers import run_in_process

DATA = DataConfig(dataset="synthetic", subset=48)
RECIPE = Recipe(epochs=3, batch_size=16, augment="none")
MACHINE = Machine(device="cpu")

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "search_spaces" / "tiny.yaml"
STUDY = "t"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
FAST = [
    "--dataset", "synthetic", "--subset", "48", "--augment", "none", "--device", "cpu",
    "--batch-size", "16", "--space", str(TINY), "--seed", "0", "--pruner", "none",
    "--budget", "8000", "--study", STUDY, "--heartbeat", "1", "--confirm", "0",
]  # fmt: skip


def test_the_url_names_the_file_as_sqlites_does():
    assert journal_path("journal:///studies/nas.log") == Path("studies/nas.log")  # relative
    assert journal_path("journal:////shared/nas/study.log") == Path("/shared/nas/study.log")
    assert journal_path("sqlite:///studies/nas.db") is None
    assert journal_path("postgresql://u@h/db") is None
    assert store_file("journal:///a/b.log") == Path("a/b.log")
    check_url("journal:///a/b.log")  # no database driver asked for
    with pytest.raises(UserError, match="names no journal file"):
        journal_path("journal://")


def test_the_dashboard_is_given_the_file_and_the_report_goes_beside_it():
    # optuna-dashboard opens a journal by its path (it takes no journal:// URL)
    assert dashboard_command("journal:////shared/my runs/s.log") == (
        "optuna-dashboard '/shared/my runs/s.log'"
    )
    # beside the file (how a name becomes a file name: tests/test_study_names.py)
    assert default_report_path("journal:////shared/x/s.log", "my_study") == Path(
        "/shared/x/my_study.html"
    )


def test_reading_a_missing_journal_creates_nothing(tmp_path):
    with pytest.raises(UserError, match="there is no study store at"):
        open_storage(f"journal:///{tmp_path}/missing.log", create=False)
    assert list(tmp_path.iterdir()) == []


def test_a_journal_url_without_a_file_is_one_sentence_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_in_process(search_main, [*FAST, "--storage", "journal://"])
    assert status == 2
    assert err.strip().splitlines() == [
        "error: 'journal://' names no journal file; write journal:///studies/nas.log "
        "(relative) or journal:////shared/nas/study.log (absolute)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_trial_whose_beat_is_stale_is_failed_on_any_machine_and_retried(tmp_path):
    url = f"journal:///{tmp_path}/s.log"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=60))
    plain = open_storage(url, create=False)  # a store that does not beat: beats set by hand
    elsewhere = {records.WORKER_HOST: "another-machine", records.WORKER_PID: 1}
    numbers = {}
    for name, age in (("dead", 100.0), ("alive", 5.0)):
        running = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={"x": 3},
            distributions={"x": optuna.distributions.IntDistribution(0, 9)},
            user_attrs={records.WORKER: elsewhere},
            system_attrs={records.HEARTBEAT: time.time() - age},
        )
        trial_id = plain.create_new_trial(plain.get_study_id_from_name("s"), running)
        numbers[name] = plain.get_trial_number_from_id(trial_id)

    assert StaleTrialReaper(grace=90)(study) == [numbers["dead"]]
    states = {t.number: t.state for t in study.trials}
    assert states[numbers["dead"]] == TrialState.FAIL
    assert states[numbers["alive"]] == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == study.trials[numbers["dead"]].params


def _search(store: Path, trials: int, epochs: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "nas", "search", *FAST, "--trials", str(trials),
        "--epochs", str(epochs), "--storage", f"journal:///{store}", *extra,
    ]  # fmt: skip


def _config(store: Path) -> SearchConfig:
    """The study FAST makes, with no trial to train: its settings recorded once."""
    return SearchConfig(
        budget=8000, trials=0, space=str(TINY), study=STUDY, storage=f"journal:///{store}",
        pruner="none", heartbeat=1, grace=3, confirm=0,
    )  # fmt: skip


def _trials(store: Path) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(f"journal:///{store}", create=False)
    return optuna.load_study(study_name=STUDY, storage=storage).trials


def _check_filled(trials, target: int) -> None:
    """The study holds exactly `target` trained trials, each architecture trained once, none
    left RUNNING or WAITING, and trial numbers without gaps."""
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    trained = [t.user_attrs[records.ARCHITECTURE] for t in trials if is_trained(t)]
    assert len(trained) == len(set(trained)) == target  # nothing trained twice
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.slow
def test_two_workers_on_one_journal_record_exactly_the_target(tmp_path):
    store = tmp_path / "shared" / "s.log"
    search = subprocess.run(
        _search(store, 5, 1, "--workers", "2"),
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr
    assert "Traceback" not in search.stderr
    assert search.stdout.count(f"study {STUDY!r}: 5 trained candidates") == 1
    assert f"next:   optuna-dashboard {store}" in search.stdout
    assert (store.parent / f"{STUDY}.html").is_file()  # the report beside the journal
    _check_filled(_trials(store), 5)


@pytest.mark.slow
def test_a_sigkilled_search_loses_nothing_and_the_other_and_a_rerun_finish_the_study(
    tmp_path, monkeypatch
):
    store = tmp_path / "s.log"
    run_search(_config(store), DATA, RECIPE, MACHINE)  # the study, created once, trains nothing

    def search(seed: int) -> subprocess.Popen:
        return subprocess.Popen(
            _search(store, 3, 3, "--seed", str(seed)), cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip

    # the victim first, killed in its first trial's epochs; then a second search on the same
    # file (started together, the second could fill the study before the victim trains at all)
    victim = search(0)
    other = None
    try:
        killed = _wait_for_running_epoch(victim, store)
        victim.send_signal(signal.SIGKILL)  # no handler runs: the trial stays RUNNING
        victim.wait(timeout=30)
        # the other search fails the dead trial (its process is gone), retries its candidate
        # and fills the study
        other = search(1)
        _, err = other.communicate(timeout=300)
    finally:
        victim.kill()
        if other is not None:
            other.kill()
    assert victim.returncode == -signal.SIGKILL
    assert other.returncode == 0, err
    trials = _trials(store)
    assert trials[killed].state == TrialState.FAIL
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert retried.params == trials[killed].params and is_trained(retried)
    _check_filled(trials, 3)

    monkeypatch.chdir(tmp_path)  # the killed command, rerun: the study is full, nothing trains
    status, out, err = run_in_process(search_main, _search(store, 3, 3)[4:])
    assert status == 0, err
    assert "3 trained candidates (target 3)" in out
    assert len(_trials(store)) == len(trials)


def _wait_for_running_epoch(process: subprocess.Popen, store: Path, timeout=120.0) -> int:
    """The number of a RUNNING trial of `process` that has reported an epoch, read from the
    journal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if store.exists():
            try:
                trials = _trials(store)
            except (KeyError, UserError):  # the study is not created yet
                trials = []
            for trial in trials:
                worker = trial.user_attrs.get(records.WORKER, {})
                mine = worker.get(records.WORKER_PID) == process.pid
                if mine and trial.state == TrialState.RUNNING and trial.intermediate_values:
                    return trial.number
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"no trial reported an epoch within {timeout} s")


def test_the_printed_dashboard_command_splits_into_a_file_path():
    words = shlex.split(dashboard_command("journal:///studies/nas.log"))
    assert words == ["optuna-dashboard", "studies/nas.log"]
