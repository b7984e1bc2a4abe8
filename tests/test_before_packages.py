"""What the release before the package move wrote still works: its study store resumes, its
finished run loads with the same weights, and its interrupted run resumes to the history the old
release's own resume gave.

The files in `tests/fixtures/before-packages/` were written by commit d5c6630 (the last flat
`nas/`), as that folder's README says; the expected values there (logits, the resumed history) were
computed by that release too, never by the code under test.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import nas
from nas.cli.main import main

from helpers import run_in_process

FIXTURES = Path(__file__).parent / "fixtures" / "before-packages"


@pytest.fixture
def old_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The old release's study store, loaded from its SQL text into a fresh SQLite file."""
    monkeypatch.chdir(tmp_path)
    connection = sqlite3.connect(tmp_path / "old.db")
    connection.executescript((FIXTURES / "study.sql").read_text())
    connection.close()
    return f"sqlite:///{tmp_path / 'old.db'}"


def states(storage: str) -> list[TrialState]:
    return [t.state for t in optuna.load_study(study_name="smoke", storage=storage).trials]


def test_the_old_study_resumes_to_a_larger_target(old_store: str) -> None:
    before = states(old_store)
    assert before.count(TrialState.COMPLETE) == 4 and len(before) == 5
    status, out, err = run_in_process(
        main, ["search", "--smoke", "--storage", old_store, "--trials", "5"]
    )
    assert status == 0, err
    after = states(old_store)
    assert after[:5] == before  # the old trials are kept as they were
    assert after.count(TrialState.COMPLETE) == 5
    assert "winner: trial 4" in out  # the old confirmation still names the old winner


def test_the_old_finished_run_loads_with_its_weights() -> None:
    expected = json.loads((FIXTURES / "run-finished-logits.json").read_text())
    model = nas.load_model(FIXTURES / "run-finished")
    images = torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), rtol=0, atol=1e-5)


def test_the_old_interrupted_run_resumes_as_the_old_release_resumed_it(
    old_store: str, tmp_path: Path
) -> None:
    run = tmp_path / "interrupted"
    shutil.copytree(FIXTURES / "run-interrupted", run)
    status, out, err = run_in_process(
        main,
        ["retrain", "--study", "smoke", "--storage", old_store, "--epochs", "6", "--out", str(run)],
    )
    assert status == 0, err
    assert "epoch   1/6" not in out and "epoch   3/6" in out  # resumed after epoch 2
    with (
        open(run / "history.csv") as resumed,
        open(FIXTURES / "run-resumed-history.csv") as reference,
    ):
        rows = list(csv.DictReader(resumed))
        expected = list(csv.DictReader(reference))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # the reference is the old release resuming the same checkpoint on one thread (as conftest
    # runs every test); a resume that lost the weights or Adam's state misses by far more
    for row, want in zip(rows, expected, strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            assert float(row[key]) == pytest.approx(float(want[key]), abs=1e-6), (row, key)
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] == 0.745  # old: 74.50%
