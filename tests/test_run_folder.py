"""A run folder (nas.run.folder) read back by `nas export`, `nas predict` and `nas retrain`: a
damaged or truncated file is one sentence naming it and exit status 2 in all three, never a
traceback from the reader underneath; RunMetrics round-trips through metrics.json."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas.arch.architecture import Architecture
from nas.cli.main import main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.errors import UserError
from nas.run.folder import (
    METRICS,
    WEIGHTS,
    RunMetrics,
    finished_metrics,
    read_metrics,
    write_metrics,
)
from nas.run.retrain import retrain

from helpers import fresh_python, run_in_process

pytestmark = pytest.mark.usefixtures("one_thread")
EPOCHS = 1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run of a tiny architecture on synthetic data, as `nas retrain` writes it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    data = DataConfig(dataset="synthetic", synthetic_size=120, data_dir=str(run_dir.parent))
    recipe = Recipe(epochs=EPOCHS, augment="none", batch_size=32)
    machine = Machine(device="cpu")
    retrain(Architecture((8, 16), (1, 1), stem=8), data, recipe, machine, run_dir, progress=False)
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A copy of the finished run to damage, and an image to predict."""
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "image.png")
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def commands(run: Path) -> dict[str, list[str]]:
    """Each command that reads the run folder; the retrain repeats the finished one (a resume)."""
    data = ["--dataset", "synthetic", "--data-dir", str(run.parent)]
    return {
        "export": ["export", str(run), "--format", "torchscript"],
        "predict": ["predict", str(run), str(run.parent / "image.png")],
        "retrain": ["retrain", "--arch", str(run / "architecture.json"), *data,
                    "--epochs", str(EPOCHS), "--device", "cpu", "--out", str(run)],
    }  # fmt: skip


def assert_one_sentence_naming(name: str, path: Path, argv: list[str]) -> None:
    status, _, err = run_in_process(main, argv)
    assert status == 2, (argv[0], err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv[0], err)
    assert str(path) in lines[0], (argv[0], err)
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["export", "predict", "retrain"])
def test_a_truncated_weights_file_is_one_sentence_naming_it(run_copy, command):
    weights = run_copy / WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert_one_sentence_naming(WEIGHTS, weights, commands(run_copy)[command])


@pytest.mark.parametrize("command", ["export", "predict", "retrain"])
def test_metrics_that_are_not_json_are_one_sentence_naming_the_file(run_copy, command):
    metrics = run_copy / METRICS
    metrics.write_text(metrics.read_text()[:40])  # cut mid-object
    assert_one_sentence_naming(METRICS, metrics, commands(run_copy)[command])


def _damage_metrics(metrics: Path, how: str) -> str:
    """Rewrite metrics.json as `how` says; returns the words the sentence must hold."""
    data = json.loads(metrics.read_text())
    if how == "latin-1":  # a class name saved in Latin-1 by an editor: not UTF-8
        data["classes"][0] = "caf\u00e9"
        metrics.write_bytes(json.dumps(data, ensure_ascii=False).encode("latin-1"))
        return "not UTF-8"
    changes = {
        "dataset null": ("dataset", None, "dataset is not an object"),
        "classes a string": ("classes", "cat,dog", "classes is not a list of names"),
        "accuracy a string": ("test_accuracy", "high", "test_accuracy is not a number"),
        "epochs a float": ("epochs_completed", 1.5, "epochs_completed is not a whole number"),
        "no std": ("normalization", {"mean": [0.5] * 3}, "normalization lacks mean or std"),
        "image size text": ("dataset", {"image_size": "32"}, "dataset.image_size"),
    }
    key, value, words = changes[how]
    data[key] = value
    metrics.write_text(json.dumps(data))
    return words


@pytest.mark.parametrize("command", ["export", "predict", "retrain"])
@pytest.mark.parametrize("how", ["latin-1", "dataset null"])
def test_metrics_not_utf8_or_of_wrong_types_are_one_sentence_naming_the_file(
    run_copy, command, how
):
    metrics = run_copy / METRICS
    words = _damage_metrics(metrics, how)
    assert_one_sentence_naming(METRICS, metrics, commands(run_copy)[command])
    assert words in run_in_process(main, commands(run_copy)[command])[2]


@pytest.mark.parametrize(
    "how",
    ["classes a string", "accuracy a string", "epochs a float", "no std", "image size text"],
)
def test_every_field_of_the_wrong_type_is_named(run_copy, how):
    metrics = run_copy / METRICS
    words = _damage_metrics(metrics, how)
    with pytest.raises(UserError, match=re.escape(words)) as refused:
        read_metrics(run_copy)
    assert str(metrics) in str(refused.value)
    assert_one_sentence_naming(METRICS, metrics, commands(run_copy)["predict"])


def test_the_undamaged_run_is_reused_by_the_same_retrain(run_copy):
    status, out, err = run_in_process(main, commands(run_copy)["retrain"])
    assert status == 0, err
    assert "already holds a finished run" in out


def test_run_metrics_round_trip_through_metrics_json(finished_run, tmp_path):
    metrics = read_metrics(finished_run)
    assert metrics is not None and metrics.epochs_completed == EPOCHS
    assert metrics.epochs_planned == EPOCHS and len(metrics.classes) == 10
    write_metrics(tmp_path, metrics)
    assert read_metrics(tmp_path) == metrics
    assert json.loads((tmp_path / METRICS).read_text()) == metrics.to_dict()
    assert read_metrics(tmp_path / "elsewhere") is None  # no metrics: not finished


def test_metrics_lacking_a_finished_runs_results_name_what_they_lack(tmp_path):
    (tmp_path / METRICS).write_text(json.dumps({"test_accuracy": 0.5, "params": 10}))
    with pytest.raises(UserError, match="lacks test_loss, epochs_completed, best_epoch;"):
        read_metrics(tmp_path)
    # the five results every version recorded are enough to read (older runs lack the rest)
    oldest = {"test_accuracy": 0.5, "test_loss": 1.0, "params": 10, "epochs_completed": 2}
    (tmp_path / METRICS).write_text(json.dumps({**oldest, "best_epoch": 1}))
    assert read_metrics(tmp_path) == RunMetrics(**oldest, best_epoch=1)
    with pytest.raises(UserError, match=str(tmp_path / METRICS)):
        RunMetrics.from_dict([1, 2], tmp_path / METRICS)


def test_a_missing_or_unreadable_file_is_a_user_error_naming_it(run_copy):
    import nas

    (run_copy / "architecture.json").write_text('{"channels": [8, 16]')  # cut short
    with pytest.raises(UserError, match=re.escape(str(run_copy / "architecture.json"))):
        nas.load_model(run_copy)
    (run_copy / WEIGHTS).unlink()
    (run_copy / "architecture.json").unlink()
    with pytest.raises(UserError, match="architecture.json is missing"):
        nas.load_model(run_copy)
    (run_copy / METRICS).unlink()
    with pytest.raises(UserError, match=f"not a finished run folder: {METRICS} is missing"):
        finished_metrics(run_copy)


def test_the_run_folder_module_imports_neither_torch_nor_optuna():
    code = (
        "import sys, nas.run.folder; "
        "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))"
    )
    assert fresh_python(code) == "[]"
