"""A disk that fills: a retrain whose run folder sits on a full filesystem
(nas.files.write_atomic), and a search whose SQLite store does (nas.store.steady), each end
with one sentence naming the path and exit 2, leave no half-written or temporary file and an
intact store, and the same command resumes once space is freed.
The filesystem is a real tmpfs mounted small for the test (skipped, with the reason, where
mounting is not allowed)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.arch.architecture import Architecture
from nas.cli.main import main
from nas.trial_view import is_trained

from helpers import one_torch_thread, run_in_process


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        # lazily: a store the in-process search opened may still hold a pooled connection
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.mark.slow
def test_a_retrain_on_a_full_disk_is_one_sentence_and_finishes_once_space_is_freed(
    small_disk, tmp_path
):
    arch = tmp_path / "arch.json"
    arch.write_text(Architecture((8,), (1,), stem=8).to_json())
    run = small_disk / "run"
    argv = ["retrain", "--arch", str(arch), "--dataset", "synthetic", "--subset", "40",
            "--epochs", "1", "--augment", "none", "--device", "cpu", "--out", str(run)]  # fmt: skip
    with one_torch_thread():  # 1 MiB holds the checkpoint, not the curves page (plotly.js)
        status, _, err = run_in_process(main, argv)
    assert status == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device to write ") and str(run) in last
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]  # no temp file
    assert (run / "checkpoint.ckpt").is_file() and not (run / "metrics.json").exists()

    checkpoint = (run / "checkpoint.ckpt").read_bytes()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # freed
    with one_torch_thread():
        status, out, err = run_in_process(main, argv)
    assert status == 0, err
    # resumed from the checkpoint the full disk left intact: its one epoch not trained again
    assert (run / "checkpoint.ckpt").read_bytes() == checkpoint
    assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]


TINY = Path(__file__).resolve().parent.parent / "search_spaces" / "tiny.yaml"


def _fill(folder: Path) -> Path:
    """Write zeros into `folder` until its filesystem is full; the file written."""
    ballast = folder / "ballast"
    with ballast.open("wb") as out:
        try:
            while True:
                out.write(bytes(65536))
                out.flush()
        except OSError:
            pass
    return ballast


@pytest.mark.slow
def test_a_search_whose_store_fills_its_disk_is_one_sentence_and_resumes(small_disk):
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)  # a report
    store = small_disk / "s.db"
    argv = [
        "search", "--dataset", "synthetic", "--subset", "48", "--augment", "none",
        "--device", "cpu", "--batch-size", "16", "--space", str(TINY), "--pruner", "none",
        "--budget", "8000", "--study", "s", "--confirm", "0", "--epochs", "1",
        "--storage", f"sqlite:///{store}", "--report", str(small_disk / "report.html"),
    ]  # fmt: skip
    with one_torch_thread():
        assert run_in_process(main, [*argv, "--trials", "1"])[0] == 0
        ballast = _fill(small_disk)
        status, _, err = run_in_process(main, [*argv, "--trials", "3", "--store-wait", "1"])
    assert status == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # the seconds it tried: 1 or a little more
    assert re.fullmatch(
        rf"error: the study store sqlite:///{store} could not be reached or written for \d+ s "
        r"\(database or disk is full\); nothing stored is lost: run the same command again "
        r"once the store is back \(or has free space\) and it resumes",
        last,
    ), last
    with sqlite3.connect(store) as connection:  # the store is intact
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]

    ballast.unlink()  # space freed: the same command resumes and finishes
    with one_torch_thread():
        status, _, err = run_in_process(main, [*argv, "--trials", "3", "--store-wait", "1"])
    assert status == 0, err
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{store}").trials
    assert sum(is_trained(t) for t in trials) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
