"""SIGTERM (what a scheduler or `kill` sends) stops a search or a retrain at the next safe point:
exit status 143, nothing finished lost, and the same command resumes.

Real signals to real `python -m nas` processes; stores are real SQLite files watched through
Optuna while the process runs; the tiny space and small synthetic data keep it quick on a CPU.
The reruns are the same command lines run in this process (a fresh interpreter would only add
its ~7 s of imports: what the rerun must prove is the resume, not the process).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.arch.architecture import Architecture
from nas.cli.main import retrain_main, search_main
from nas.train.checkpoint import load_checkpoint
from nas.trial_view import is_trained

from helpers import epoch_time, run_in_process, running_with_an_epoch, wait_for_trials

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "search_spaces" / "tiny.yaml"
STUDY = "t"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny nets on a shared 2-core machine
FAST = [
    "--dataset", "synthetic", "--subset", "64", "--augment", "none", "--device", "cpu",
    "--batch-size", "16", "--space", str(TINY), "--seed", "0",
]  # fmt: skip


def _search_command(store: Path, trials: int, epochs: int) -> list[str]:
    # seed 0 samples two over-budget candidates (7,586 and 21,162 parameters), then trains one
    return [
        sys.executable, "-m", "nas", "search", *FAST, "--budget", "7000",
        "--trials", str(trials), "--epochs", str(epochs), "--pruner", "none",
        "--heartbeat", "1", "--storage", f"sqlite:///{store}", "--study", STUDY,
    ]  # fmt: skip


def _wait_for_epoch(process: subprocess.Popen, store: Path, timeout: float = 90.0) -> int:
    """Watch the store until a RUNNING trial has reported an epoch; return its number."""
    return wait_for_trials(process, store, STUDY, running_with_an_epoch, timeout)


@pytest.mark.slow
def test_sigterm_stops_a_search_after_the_epoch_and_the_rerun_retries_the_trial(
    tmp_path, monkeypatch
):
    store = tmp_path / "s.db"
    command = _search_command(store, trials=1, epochs=4)
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        stopped = _wait_for_epoch(process, store)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{store}")
    trial = study.trials[stopped]
    assert trial.state == TrialState.FAIL
    # stopped at a safe point: right after a whole epoch was reported
    epoch = trial.user_attrs["stopped_after_epoch"]
    assert 1 <= epoch <= 4
    assert sorted(trial.intermediate_values) == list(range(1, epoch + 1))
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    # enqueued for the rerun (a waiting trial keeps its parameters as Optuna's fixed_params)
    assert [t.system_attrs["fixed_params"] for t in waiting] == [trial.params]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert sum(is_trained(t) for t in study.trials) == 0

    monkeypatch.chdir(tmp_path)
    assert command[1:4] == ["-m", "nas", "search"]
    status, _, err = run_in_process(search_main, command[4:])  # the same command, in this process
    assert status == 0, err
    trials = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{store}").trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (retried,) = [t for t in trials if t.user_attrs.get("retry_of") == stopped]
    assert retried.params == trial.params
    assert is_trained(retried) and retried.state == TrialState.COMPLETE
    assert sorted(retried.intermediate_values) == [1, 2, 3, 4]
    assert [t.number for t in trials if is_trained(t)] == [retried.number]  # the target, exactly


TINY_ARCH = Architecture(channels=(8, 8), blocks=(1, 1), conv_kernel=3, skip_kernel=1, stem=8)


@pytest.mark.slow
def test_sigterm_stops_a_retrain_after_a_checkpoint_and_the_rerun_finishes_it(
    tmp_path, monkeypatch
):
    arch_file = tmp_path / "tiny.json"
    arch_file.write_text(TINY_ARCH.to_json())
    out = tmp_path / "run"
    epochs = 25  # far more than the time to the signal; the rerun trains only what is left
    command = [
        sys.executable, str(REPO / "scripts" / "retrain_best.py"), "--arch", str(arch_file),
        "--dataset", "synthetic", "--subset", "32", "--device", "cpu",
        "--epochs", str(epochs), "--out", str(out),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    checkpoint = out / "checkpoint.ckpt"
    try:
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, err
    first = load_checkpoint(checkpoint)["history"]
    stopped_at = len(first)
    assert 1 <= stopped_at < epochs
    assert err.strip().splitlines()[-1] == (
        f"stopped by SIGTERM after epoch {stopped_at}; rerun the same command to resume"
    )
    assert "Traceback" not in err
    assert not (out / "metrics.json").exists()

    monkeypatch.chdir(tmp_path)
    status, _, err = run_in_process(retrain_main, command[2:])  # the same command, in this process
    assert status == 0, err
    with (out / "history.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))
    # the epochs before the stop were kept, not trained again (their timings are unchanged)
    for before, row in zip(first, rows):
        assert epoch_time(row) == pytest.approx(epoch_time(before))
        assert float(row["val_loss"]) == pytest.approx(before["val_loss"])
    assert json.loads((out / "metrics.json").read_text())["epochs_completed"] == epochs
