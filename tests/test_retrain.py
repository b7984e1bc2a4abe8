"""The retrain: outputs of a run folder, resume after SIGKILL, presets, errors, the report."""

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

import nas
from nas import records
from nas.cli.main import main, retrain_main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.data.loading import load_splits
from nas.run.retrain import history_csv, read_history_csv
from nas.search.loop import run_search
from nas.train.fit import evaluate
from nas.train.state import EpochRow

from helpers import epoch_time, run_in_process

ROOT = Path(__file__).resolve().parents[1]
RETRAIN = [sys.executable, str(ROOT / "scripts" / "retrain_best.py")]
DATA = {"dataset": "synthetic", "synthetic_size": 300, "synthetic_classes": 4}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished two-trial study on tiny synthetic data, written by the real search."""
    folder = tmp_path_factory.mktemp("store")
    url = f"sqlite:///{folder}/nas.db"
    config = SearchConfig(
        budget=20_000,
        trials=2,
        space=str(ROOT / "search_spaces" / "tiny.yaml"),
        study="s",
        storage=url,
        pruner="none",
    )
    recipe = Recipe(epochs=1, augment="basic")
    run_search(config, DataConfig(**DATA), recipe, Machine(device="cpu", workers=0))
    return url, folder


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def retrain(*args, cwd):
    """`scripts/retrain_best.py ARGS` from the folder `cwd`, in this process (a real process
    is the kill test's point, below; a fresh interpreter costs seconds of torch import)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return Ran(*run_in_process(retrain_main, list(args)))


def test_retrain_best_writes_a_complete_run_folder(store, tmp_path):
    url, folder = store
    result = retrain("--storage", url, "--study", "s", "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    study = optuna.load_study(study_name="s", storage=url)
    best = study.best_trial
    run_dir = tmp_path / "runs" / "s" / f"trial-{best.number}"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [
            "MODEL.md",
            "architecture.json",
            "checkpoint.ckpt",
            "curves.html",
            "history.csv",
            "metrics.json",
            "model.safetensors",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "params",
        "epochs_completed",
        "best_epoch",
        "best_val_loss",
        "seconds",
        "device",
        "config",
    ):
        assert key in metrics, key
    assert metrics["epochs_completed"] == 2 and metrics["config"]["epochs"] == 2
    assert nas.Architecture.from_json((run_dir / "architecture.json").read_text()) == (
        nas.Architecture.from_json(best.user_attrs["architecture"])
    )
    assert metrics["params"] == best.user_attrs["params"]
    with (run_dir / "history.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    # the name says what it is: the validation accuracy of the epoch whose weights were kept
    best_row = rows[metrics["best_epoch"] - 1]
    assert metrics["best_val_accuracy"] == pytest.approx(float(best_row["val_accuracy"]))
    assert metrics["highest_val_accuracy"] == max(float(row["val_accuracy"]) for row in rows)
    curves = (run_dir / "curves.html").read_text()
    assert "plotly" in curves[:200_000].lower()
    assert f"study s, trial {best.number}" in curves and "test accuracy" in curves
    # teammates can read the model: the user's umask, not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    assert (run_dir / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask

    # the exported model reproduces the recorded test accuracy
    model = nas.load_model(run_dir)
    assert not model.training
    splits = load_splits(DataConfig(**DATA))
    loss, accuracy = evaluate(model, splits.test, splits, Machine(), torch.device("cpu"))
    assert accuracy == pytest.approx(metrics["test_accuracy"])
    assert loss == pytest.approx(metrics["test_loss"], rel=1e-4)

    # recorded on the study (public API: a finished trial stays as the search left it) and
    # attached as study artifacts for the dashboard
    study = optuna.load_study(study_name="s", storage=url)
    record = records.retrain_record(study.user_attrs, study.trials[best.number])
    stored = study.user_attrs[f"retrain_trial_{best.number}"]
    assert list(stored) == ["test_accuracy", "test_loss", "run_dir", "epochs", "artifacts"]
    assert record.test_accuracy == pytest.approx(metrics["test_accuracy"])
    assert record.run_dir == str(Path("runs") / "s" / f"trial-{best.number}")
    assert study.trials[best.number].user_attrs == best.user_attrs
    assert len(list((folder / "artifacts").iterdir())) == 3
    assert "--artifact-dir" in result.stdout
    # the study's report is refreshed: the retrained trial's test accuracy and run folder
    page = (folder / "s.html").read_text()
    assert f"{100 * metrics['test_accuracy']:.2f} %" in page
    assert str(Path("runs") / "s" / f"trial-{best.number}") in page

    # a finished run is not redone
    again = retrain("--storage", url, "--study", "s", "--epochs", "2", cwd=tmp_path)
    assert again.returncode == 0
    assert "already holds a finished run" in again.stdout
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert len(list((folder / "artifacts").iterdir())) == 3  # nothing uploaded twice


BEFORE_PACKAGES = ROOT / "tests" / "fixtures" / "before-packages"


def test_a_history_csv_of_the_release_before_the_packages_reads_into_its_rows():
    rows = read_history_csv((BEFORE_PACKAGES / "run-finished" / "history.csv").read_text())
    # the file's two lines, copied by hand
    assert rows == [
        EpochRow(
            epoch=1, train_loss=2.2790511067708334, train_accuracy=0.16777777777777778,
            val_loss=2.1989617919921876, val_accuracy=0.41, lr=0.001, seconds=0.5460468640000045,
        ),
        EpochRow(
            epoch=2, train_loss=2.12980224609375, train_accuracy=0.3511111111111111,
            val_loss=1.933181610107422, val_accuracy=0.49, lr=0.001, seconds=0.494831400999999,
        ),
    ]  # fmt: skip


def test_history_csv_writes_the_old_columns_and_reads_back_the_same_rows():
    rows = [
        EpochRow(1, 2.5, 0.25, 0.1 + 0.2, 0.375, 1e-3, 0.5),
        EpochRow(2, 1 / 3, 0.5, 1.0, 0.5, 1e-4, 0.75),
    ]
    text = history_csv(rows)
    assert text.splitlines() == [
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds",
        "1,2.5,0.25,0.30000000000000004,0.375,0.001,0.5",
        "2,0.3333333333333333,0.5,1.0,0.5,0.0001,0.75",
    ]
    assert read_history_csv(text) == rows


@pytest.mark.slow  # a real process killed mid-run; tests/test_best_weights.py resumes one fast
def test_a_killed_retrain_resumes_without_redoing_epochs(store, tmp_path):
    url, _ = store
    out = tmp_path / "run"
    args = ["--storage", url, "--study", "s", "--epochs", "3", "--out", str(out)]
    process = subprocess.Popen(
        [*RETRAIN, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = out / "checkpoint.ckpt"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    from nas.train.checkpoint import load_checkpoint

    first = load_checkpoint(checkpoint)["history"]
    assert 1 <= len(first) < 3
    assert not (out / "metrics.json").exists()

    result = retrain(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with (out / "history.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    # the epochs before the kill were kept, not trained again (their timings are unchanged)
    for before, row in zip(first, rows):
        assert epoch_time(row) == pytest.approx(epoch_time(before))


def test_a_preset_with_zero_epochs_is_evaluated_and_exported(tmp_path):
    data = ["--dataset", "synthetic", "--subset", "50"]
    result = retrain("--arch", "paper-model5", "--epochs", "0", *data, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "paper-model5"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 0 and metrics["params"] == 4_970_154
    state = nas.load_model(run_dir).state_dict()
    assert (
        sum(t.numel() for n, t in state.items() if "running" not in n and "num_batches" not in n)
        == 4_970_154
    )
    assert torch.isfinite(torch.tensor(metrics["test_loss"]))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--study", "nope"], "no study named 'nope'"),
        (["--study", "s", "--trial", "99"], "has no trial 99"),
        (["--arch", "paper-model9"], "unknown preset"),
        (["--arch", "missing.json"], "cannot read architecture file"),
        (["--study", "s", "--epochs", "-1"], "--epochs: '-1' must be 0 or more"),
        (["--study", "s", "--device", "cuda:3"], "cuda"),
    ],
)
def test_retrain_errors_are_one_sentence_with_exit_2(
    store, tmp_path, monkeypatch, capsys, args, fragment
):
    # in-process for speed: tests/test_faults.py proves "no traceback" in real processes too
    url, _ = store
    monkeypatch.chdir(tmp_path)
    before = [(t.number, t.state) for t in optuna.load_study(study_name="s", storage=url).trials]
    assert retrain_main(["--storage", url, *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    after = [(t.number, t.state) for t in optuna.load_study(study_name="s", storage=url).trials]
    assert after == before
    assert list(tmp_path.iterdir()) == []  # no run folder left behind


def test_a_study_without_finished_trials_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/empty.db"
    optuna.create_study(study_name="empty", storage=url)
    assert retrain_main(["--storage", url, "--study", "empty"]) == 2
    assert "has no trial trained to the end yet" in capsys.readouterr().err


def test_report_command_writes_one_point_per_trained_trial(store, tmp_path):
    url, _ = store
    out = tmp_path / "report.html"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        status, _, err = run_in_process(
            main, ["report", "--study", "s", "--storage", url, "--out", str(out)]
        )
    result = Ran(status, "", err)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert '<script src="http' not in html
    study = optuna.load_study(study_name="s", storage=url)
    trained = [t for t in study.trials if t.user_attrs.get(records.TRAINED)]
    assert len(trained) == 2
    traces = [trace for _, figure in plotly_figures(html) for trace in figure]
    points = [trace for trace in traces if trace.get("name") == "trained trials"]
    assert len(points) == 1  # the params figure's one trace of trained trials
    drawn = sorted(zip(plotly_array(points[0]["x"]), plotly_array(points[0]["y"])))
    assert drawn == sorted((t.user_attrs[records.PARAMS], t.value) for t in trained)


def plotly_figures(html: str) -> list[tuple[str, list[dict]]]:
    """Each figure a written report draws, read from its `Plotly.newPlot(id, traces, ...)`
    call: (the section heading above it, its traces)."""
    figures = []
    decoder = json.JSONDecoder()
    for section in html.split("<h2>")[1:]:
        heading = section.split("</h2>")[0]
        for call in section.split("Plotly.newPlot(")[1:]:
            after_id = call[call.index(",") + 1 :].lstrip()
            traces, _ = decoder.raw_decode(after_id)
            figures.append((heading, traces))
    return figures


def plotly_array(values) -> list[float]:
    """A trace's coordinates as written: a JSON list, or plotly's typed array (base64 bytes)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)
