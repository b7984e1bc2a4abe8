"""The real optuna-dashboard, served over loopback against a store the search wrote, shows the
study: its trials, params, user attributes and per-epoch intermediate values (through the same
HTTP API its web page reads). The store is a SQLite file or a journal file, and the dashboard is
started with the command the tool prints for it (`nas.commands.dashboard_command`)."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request

import optuna
import pytest

from nas import records
from nas.cli.main import search_main
from nas.commands import dashboard_command as printed_dashboard_command
from nas.search.samplers import HAS_SET_CONSTRAINT
from nas.store.opening import open_storage
from nas.trial_view import is_trained

from helpers import dashboard_command, free_port, get, one_torch_thread

# the search and its stores use Optuna features it still marks experimental
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(params=["sqlite:///{}/s.db", "journal:///{}/s.log"], ids=["sqlite", "journal"])
def store(tmp_path, request) -> str:
    """The URL of a store written by a (trimmed) smoke search."""
    url = request.param.format(tmp_path)
    argv = ["--smoke", "--subset", "48", "--augment", "none", "--trials", "2", "--epochs", "2"]
    argv += ["--storage", url]
    with one_torch_thread():  # tiny nets on a shared 2-core machine: one thread is much faster
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert search_main(argv) == 0
    return url


@pytest.fixture()
def dashboard(store):
    """The optuna-dashboard server on a free loopback port, started with the words of the
    command the tool prints for the store; yields its base URL."""
    program, *words = shlex.split(printed_dashboard_command(store))
    assert program == "optuna-dashboard"
    port = free_port()
    server = subprocess.Popen(
        [*dashboard_command(), *words, "--host", "127.0.0.1"] + ["--port", str(port), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited: {server.communicate()[0]!r}")
            try:
                get(f"{base}/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise AssertionError("optuna-dashboard did not answer within 60 s") from None
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def test_dashboard_serves_the_study_with_trials_params_attrs_and_curves(store, dashboard):
    study = optuna.load_study(study_name="smoke", storage=open_storage(store, create=False))

    summaries = get(f"{dashboard}/api/studies")["study_summaries"]
    (summary,) = [s for s in summaries if s["study_name"] == "smoke"]
    assert summary["directions"] == ["maximize"]
    study_attrs = {a["key"]: a["value"] for a in summary["user_attrs"]}
    assert study_attrs["budget"] == "20000"
    assert "space_text" in study_attrs and "recipe" in study_attrs

    detail = get(f"{dashboard}/api/studies/{summary['study_id']}")
    assert detail["name"] == "smoke"
    assert detail["objective_names"] == ["val_accuracy"]
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == [t.number for t in study.trials]
    assert sum(is_trained(t) for t in study.trials) == 2
    assert any("over_budget_by" in t.user_attrs for t in study.trials)  # seed 0 meets one

    for trial in study.trials:
        if records.CONFIRMS in trial.user_attrs:  # a confirmation's claim: no candidate
            continue
        got = served[trial.number]
        assert got["state"] == trial.state.name.capitalize()
        assert {p["name"]: p["param_external_value"] for p in got["params"]} == {
            name: str(value) for name, value in trial.params.items()
        }
        attrs = {a["key"]: a["value"] for a in got["user_attrs"]}
        assert attrs["params"] == str(trial.user_attrs["params"])
        assert attrs["architecture"] == trial.user_attrs["architecture"]
        curve = {v["step"]: v["value"] for v in got["intermediate_values"]}
        assert curve == trial.intermediate_values
        if is_trained(trial):
            assert sorted(curve) == [1, 2]
            assert attrs["best_val_accuracy"] == str(trial.user_attrs["best_val_accuracy"])
            assert got["values"] == [trial.value]
        if "over_budget_by" in trial.user_attrs:
            assert curve == {}
            assert got["state"] == "Pruned"
            if not HAS_SET_CONSTRAINT:  # optuna-dashboard 0.21 shows only 4.x's constraints
                assert got["constraints"] == [trial.user_attrs["constraint"]]  # all budgets
    assert detail["has_intermediate_values"] is True
    assert detail["best_trials"][0]["number"] == study.best_trial.number
