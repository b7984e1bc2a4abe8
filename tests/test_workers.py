"""Several workers on one study: `--workers N` on a real SQLite store while the real
optuna-dashboard server reads it, the race for the target's last places, stale trials failed
even when the target is already met, and the flag's errors.

Everything runs on the CPU with the tiny space and small synthetic data; worker processes are
real `python -m nas search` processes started by the real parent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas import records
from nas.arch.space import SearchSpace
from nas.cli.main import search_main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.costs.budgets import Budgets
from nas.data.loading import load_splits
from nas.search.loop import run_search
from nas.search.objective import Objective
from nas.store.opening import open_storage
from nas.trial_view import is_trained

from helpers import dashboard_command, free_port, get, one_torch_thread

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "search_spaces" / "tiny.yaml"
STUDY = "t"
BUDGET = 8000
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny nets on a shared 2-core machine
FAST = [
    "--dataset", "synthetic", "--subset", "48", "--augment", "none", "--device", "cpu",
    "--batch-size", "16", "--space", str(TINY), "--seed", "0", "--pruner", "none",
]  # fmt: skip
DATA = DataConfig(dataset="synthetic", subset=48)
RECIPE = Recipe(epochs=1, batch_size=16, augment="none")
MACHINE = Machine(device="cpu")


def _config(store: Path, **changes) -> SearchConfig:
    settings = dict(
        budget=BUDGET,
        trials=0,
        space=str(TINY),
        study=STUDY,
        storage=f"sqlite:///{store}",
        pruner="none",
    )
    return SearchConfig(**{**settings, **changes})


@pytest.mark.slow
def test_four_workers_and_a_dashboard_on_one_sqlite_store(tmp_path):
    store = tmp_path / "s.db"
    run_search(_config(store), DATA, RECIPE, MACHINE)  # create and record the study, train nothing
    study_id = open_storage(f"sqlite:///{store}").get_study_id_from_name(STUDY)

    port = free_port()
    server = subprocess.Popen(
        dashboard_command()
        + [f"sqlite:///{store}", "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    base = f"http://127.0.0.1:{port}"
    answers: list[int] = []  # trial counts the dashboard served while the workers wrote
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                answers.append(len(get(f"{base}/api/studies/{study_id}")["trials"]))
            except (urllib.error.URLError, ConnectionError) as error:
                if answers:  # only the server's start-up may refuse connections
                    errors.append(error)
            except BaseException as error:  # noqa: BLE001  a 500 or a bad body
                errors.append(error)
            time.sleep(0.2)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        search = subprocess.run(
            [sys.executable, "-m", "nas", "search", *FAST, "--budget", str(BUDGET)]
            + ["--trials", "5", "--epochs", "1", "--heartbeat", "1", "--workers", "4"]
            + ["--storage", f"sqlite:///{store}", "--study", STUDY],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            env=ENV,
        )
        time.sleep(0.5)  # one more read of the finished study
    finally:
        done.set()
        reader.join(timeout=15)
        server.terminate()
        server.communicate(timeout=10)

    assert search.returncode == 0, search.stderr
    assert "database is locked" not in search.stderr and "Traceback" not in search.stderr
    summary = "study 't': 5 trained candidates"
    assert search.stdout.count(summary) == 1  # one summary, from the parent
    trials = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{store}").trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # unique, no gaps
    assert sum(is_trained(t) for t in trials) == 5  # exactly the target: no overshoot
    # every candidate finished (a confirmation's claim, nas.search.confirm, ends FAIL by design)
    candidates = [t for t in trials if records.CONFIRMS not in t.user_attrs]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in candidates)
    for trial in candidates:  # the parent printed every trial the workers finished
        assert f"trial {trial.number:>4}" in search.stdout
    # each worker samples with its own seed: their first candidates are not all the same (with
    # one seed all four would be; two random draws from the tiny space may still coincide)
    first = [json.dumps(t.params, sort_keys=True) for t in trials[:4]]
    assert len(set(first)) > 1
    # the dashboard kept answering while four processes wrote, and saw the study grow
    assert not errors, errors[:3]
    assert len(answers) >= 5 and answers[-1] == len(trials) and min(answers) < len(trials)


def test_a_trial_that_loses_the_race_for_the_last_place_is_not_trained(tmp_path):
    """Two workers ask at the same moment for the last place: the lower number trains."""
    store = tmp_path / "s.db"
    run_search(_config(store), DATA, RECIPE, MACHINE)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{store}")
    ahead = study.ask()  # another worker's trial, numbered first, still RUNNING
    splits = load_splits(DATA)
    space = SearchSpace.load(TINY)
    objective = Objective(space, splits, RECIPE, MACHINE, Budgets(params=10**9), target=1)
    with one_torch_thread():
        study.optimize(objective, n_trials=1)
        late = study.trials[-1]
        assert late.number > ahead.number
        assert late.state == TrialState.PRUNED and not is_trained(late)
        assert late.user_attrs["prune_reason"].startswith("not needed")
        assert late.intermediate_values == {}

        # once the earlier trial is gone without training, the place is free again
        study.tell(ahead, state=TrialState.FAIL)
        study.optimize(objective, n_trials=1)
    assert is_trained(study.trials[-1])


def test_a_stale_trial_is_failed_even_when_the_target_is_already_met(tmp_path):
    store = tmp_path / "s.db"
    config = _config(store, heartbeat=1, grace=1, confirm=0)  # trial 'x' builds nothing
    run_search(config, DATA, RECIPE, MACHINE)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{store}")
    study.add_trial(
        optuna.trial.create_trial(value=0.5, user_attrs={"trained": True, "architecture": "x"})
    )
    # a worker on another machine that died mid-trial, its last heartbeat 5 s ago (grace 1 s);
    # written through a store that does not beat, as the dead worker's no longer does
    storage = open_storage(config.storage, create=False)
    dead = storage.create_new_trial(
        storage.get_study_id_from_name(STUDY),
        optuna.trial.create_trial(
            state=TrialState.RUNNING,
            user_attrs={records.WORKER: {records.WORKER_HOST: "elsewhere", records.WORKER_PID: 1}},
            system_attrs={records.HEARTBEAT: time.time() - 5},
        ),
    )

    run_search(
        dataclasses_replace(config, trials=1), DATA, RECIPE, MACHINE
    )  # target met: trains nothing
    trials = optuna.load_study(study_name=STUDY, storage=config.storage).trials
    dead_number = storage.get_trial_number_from_id(dead)
    assert [t.state for t in trials if t.number == dead_number] == [TrialState.FAIL]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(is_trained(t) for t in trials) == 1


def dataclasses_replace(config: SearchConfig, **changes) -> SearchConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_worker_count_is_one_sentence_and_exit_2(value, tmp_path, capsys):
    store = tmp_path / "s.db"
    try:
        status = search_main([*FAST, "--workers", value, "--storage", f"sqlite:///{store}"])
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "--workers" in err
    assert "Traceback" not in err
    assert not store.exists()


def test_each_worker_is_told_its_own_device_and_seed_in_its_settings():
    import torch

    from nas.search.workers import SETTINGS_ENV, own_device, plan_devices, worker_environment

    if not torch.cuda.is_available():  # auto without a GPU: named, so every worker agrees
        assert plan_devices(2, "auto") == ["cpu", "cpu"]
    config = _config(Path("s.db"), seed=7)
    env = worker_environment(config, DATA, RECIPE, MACHINE, 1, "cuda:1")
    settings = json.loads(env[SETTINGS_ENV])
    assert settings["machine"]["device"] == "cuda:1"  # the worker's GPU, with its index
    assert settings["recipe"] == RECIPE.to_dict()  # the recipe as it is, no machine setting
    assert settings["search"]["seed"] == 8
    own_device("cpu")  # a CPU worker leaves CUDA alone (no context on GPU 0)
    assert not torch.cuda.is_initialized()


def test_workers_on_a_gpu_that_is_not_there_are_one_sentence_and_exit_2(tmp_path, capsys):
    import torch

    if torch.cuda.device_count() > 1:
        pytest.skip("this machine has cuda:1")
    store = tmp_path / "s.db"
    # the last --device wins over FAST's cpu
    argv = [*FAST, "--workers", "2", "--device", "cuda:1", "--storage", f"sqlite:///{store}"]
    status = search_main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2
    expected = (
        "device cuda:1 does not exist: 1 GPU is visible (cuda:0)"
        if torch.cuda.is_available()
        else "device cuda:1 was asked for but no CUDA GPU is visible; use cpu"
    )
    assert err.splitlines() == [f"error: {expected}"]
    assert not store.exists()
