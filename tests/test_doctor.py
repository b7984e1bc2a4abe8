"""`nas doctor`: the report a user pastes into a bug report. It prints every promised line,
exits 0 on a healthy machine where nothing has been run yet (no dataset, no store), creates
nothing, and names the failing line with exit status 1."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

import nas.costs.doctor
from nas.cli.main import main
from nas.config.search import STORAGE_ENV
from nas.costs.doctor import training
from nas.store.opening import open_storage

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
PROMISED = (  # every line the issue promises, by the name in the first column
    "python", "torch", "CUDA", "cuDNN", "torchvision", "optuna", "optuna-dashboard", "plotly",
    "GPU", "precision", "dataset", "store", "disk", "training",
)  # fmt: skip


def doctor(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["doctor", *argv])
    return status, out.getvalue(), err.getvalue()


def rows(out: str) -> dict[str, tuple[str, str]]:
    """The report's table: first column -> (status, found)."""
    lines = out.splitlines()
    assert lines[0].split() == ["check", "status", "found"] and set(lines[1]) <= {"-", " "}
    table = {}
    for line in lines[2:]:
        if not line.startswith(("healthy", "unhealthy")):
            name, status, found = re.split(r"\s{2,}", line, maxsplit=2)
            table[name] = (status, found)
    return table


def check_promised(out: str) -> dict[str, tuple[str, str]]:
    table = rows(out)
    names = {name.split()[0] for name in table}  # "GPU 0", "GPU 1" on a machine with GPUs
    assert set(PROMISED) <= names, set(PROMISED) - names
    assert re.match(r"\d+\.\d+", table["python"][1])
    assert table["torch"][1].startswith(torch.__version__)
    assert re.search(r"[\d,]+ images/s", table["training"][1]), table["training"]
    assert re.search(r"GiB free", table["disk"][1])
    return table


def test_a_new_user_s_machine_is_healthy_and_nothing_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    status, out, err = doctor("--seconds", "0.3", "--device", "cpu")
    assert status == 0, out + err
    table = check_promised(out)
    assert table["dataset"][0] == "info" and "absent" in table["dataset"][1]
    assert table["store"][0] == "info" and "absent" in table["store"][1]
    # the precision a run would use here, and why: the CPU trains in float32
    assert table["precision"] == ("ok", "fp32 on cpu (auto: the cpu trains in fp32)")
    assert table["training"][1].startswith("cpu, fp32: ")
    assert out.rstrip().endswith("healthy") and not err
    assert list(tmp_path.iterdir()) == []  # no studies/, data/ or runs/


@pytest.mark.slow  # 10-20 s on a shared 2-core CPU: a fresh Python imports torch and the CLI
def test_python_m_nas_doctor_in_a_fresh_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != STORAGE_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "nas", "doctor", "--seconds", "0.5"],
        cwd=tmp_path,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check_promised(result.stdout)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_store_opens_read_only_and_shows_its_journal_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    optuna.create_study(study_name="a", storage=open_storage(url))
    before = path.read_bytes()
    monkeypatch.setenv(STORAGE_ENV, url)
    status, out, _ = doctor("--seconds", "0.1", "--device", "cpu")
    assert status == 0
    assert rows(out)["store"] == ("ok", f"{url} opens, 1 study, journal mode wal")
    assert path.read_bytes() == before


def test_a_store_that_does_not_open_is_the_named_failure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.db").write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv(STORAGE_ENV, "sqlite:///broken.db")
    status, out, err = doctor("--seconds", "0.1", "--device", "cpu")
    assert status == 1
    assert rows(out)["store"][0] == "FAILED"
    assert out.rstrip().endswith("unhealthy: store failed")
    assert err.strip() == "error: unhealthy: store failed"
    assert (tmp_path / "broken.db").read_bytes() == b"this is not a database" * 100


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_training_step_that_cannot_run_is_the_named_failure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    status, out, err = doctor("--seconds", "0.1", "--device", "cuda")
    assert status == 1
    status_, found = rows(out)["training"]
    assert status_ == "FAILED" and "no CUDA GPU" in found
    assert rows(out)["precision"][0] == "info"  # unknown, and the training line says why
    assert err.strip() == "error: unhealthy: training failed"


def test_a_bad_seconds_value_is_one_sentence():
    flag = "--seconds"
    status, _, err = doctor(flag, "0")
    assert status == 2 and flag in err and len(err.strip().splitlines()) == 1


def test_the_training_steps_leave_the_global_random_state_as_it_was():
    torch.manual_seed(11)
    before = torch.get_rng_state()
    check = training("cpu", seconds=0.05)
    assert check.status == "ok", check
    assert torch.equal(torch.get_rng_state(), before)


def test_a_failing_import_and_low_disk_are_the_named_failures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "plotly", None)  # Python's own "cannot import" marker
    free_gib = shutil.disk_usage(tmp_path).free / 2**30
    monkeypatch.setattr(
        nas.costs.doctor, "MIN_FREE_GIB", 2 * free_gib + 1
    )  # more than this disk has
    status, out, err = doctor("--seconds", "0.1", "--device", "cpu")
    assert status == 1
    table = rows(out)
    assert table["plotly"][0] == "FAILED" and "plotly" in table["plotly"][1]
    assert table["disk"][0] == "FAILED"
    assert {name for name, (state, _) in table.items() if state == "FAILED"} == {"plotly", "disk"}
    assert err.strip() == "error: unhealthy: plotly, disk failed"
