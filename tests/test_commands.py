"""The commands the tool prints (nas.commands) run as printed, and a study keeps the report path
its search was given: a retrain refreshes that file, not a second one at the default path."""

from __future__ import annotations

import html
import re
import shlex

import optuna
import pytest

from nas.cli.main import main
from nas.commands import dashboard_command, retrain_command
from nas.config.search import DEFAULT_STORAGE

from helpers import one_torch_thread, run_in_process

STUDY = "my study"


def test_a_retrain_command_splits_back_into_its_words(monkeypatch):
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    command = retrain_command(STUDY, 3, "sqlite:///a folder/s.db", ["--out", "runs/x y"])
    assert shlex.split(command) == [
        "nas", "retrain", "--study", STUDY, "--trial", "3",
        "--storage", "sqlite:///a folder/s.db", "--out", "runs/x y",
    ]  # fmt: skip
    # the store a command uses without the flag is not named
    assert shlex.split(retrain_command(STUDY, storage=DEFAULT_STORAGE)) == [
        "nas", "retrain", "--study", STUDY
    ]  # fmt: skip
    monkeypatch.setenv("NAS_STORAGE", "sqlite:///elsewhere.db")
    assert "--storage" not in retrain_command(STUDY, storage="sqlite:///elsewhere.db")
    assert "sqlite:///studies/nas.db" in retrain_command(STUDY, storage=DEFAULT_STORAGE)


def test_a_printed_command_masks_the_password():
    url = "postgresql://nas:secret@db:5432/nas"
    for command in (retrain_command(STUDY, 1, url), dashboard_command(url, "art facts")):
        assert "secret" not in command and "nas:***@db" in command
    assert shlex.split(dashboard_command(url, "art facts"))[2:] == ["--artifact-dir", "art facts"]


SEARCH = ["search", "--smoke", "--subset", "48", "--augment", "none", "--epochs", "1"]
SEARCH += ["--trials", "2", "--study", STUDY]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A smoke-sized search of a study named with a space, given its own report path."""
    folder = tmp_path_factory.mktemp("commands")
    store = f"sqlite:///{folder}/s.db"
    argv = [*SEARCH, "--storage", store, "--report", str(folder / "my.html")]
    with one_torch_thread():
        status, out, err = run_in_process(main, argv)
    assert status == 0, err
    return folder, store, out


def test_the_summarys_next_commands_run_as_printed(searched, monkeypatch):
    folder, store, out = searched
    monkeypatch.chdir(folder)
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("next:"))
    dashboard = shlex.split(lines[start].removeprefix("next:"))
    assert dashboard == ["optuna-dashboard", store]
    retrain = shlex.split(lines[start + 1])
    assert retrain == ["nas", "retrain", "--study", STUDY, "--storage", store]
    before = (folder / "my.html").read_text()
    # as printed, with one epoch so the test stays quick
    with one_torch_thread():
        status, printed, err = run_in_process(main, [*retrain[1:], "--epochs", "1"])
    assert status == 0, err
    # the retrain refreshed the report the search was given, and wrote no second one
    assert f"report:     {(folder / 'my.html').resolve()}" in printed
    after = (folder / "my.html").read_text()
    assert after != before and "test accuracy (retrain)" in after
    study = optuna.load_study(study_name=STUDY, storage=store)
    trial = next(key for key in study.user_attrs if key.startswith("retrain_trial_"))
    assert f"{100 * study.user_attrs[trial]['test_accuracy']:.2f} %" in after
    assert sorted(p.name for p in folder.glob("*.html")) == ["my.html"]
    assert not (folder / "studies").exists()
    # nas report without --out refreshes the same file
    status, printed, err = run_in_process(main, ["report", "--study", STUDY, "--storage", store])
    assert status == 0, err
    assert printed.strip() == f"report: {(folder / 'my.html').resolve()}"
    assert not (folder / "studies").exists()


def test_the_reports_retrain_commands_run_as_printed(searched, monkeypatch):
    folder, store, _ = searched
    monkeypatch.chdir(folder)
    report = (folder / "my.html").read_text()
    listed = [html.unescape(code) for code in re.findall(r"<code>(nas retrain .*?)</code>", report)]
    assert listed, "the report lists no retrain command"
    words = shlex.split(listed[0])
    assert words[:4] == ["nas", "retrain", "--study", STUDY] and words[-2:] == ["--storage", store]
    with one_torch_thread():
        status, _, err = run_in_process(main, [*words[1:], "--epochs", "1", "--out", "front-run"])
    assert status == 0, err
    assert (folder / "front-run" / "model.safetensors").exists()


def test_a_resumed_search_without_report_rewrites_the_kept_report(searched, monkeypatch):
    folder, store, _ = searched
    monkeypatch.chdir(folder)
    (folder / "my.html").write_text("stale")
    with one_torch_thread():
        status, out, err = run_in_process(main, [*SEARCH, "--storage", store])
    assert status == 0, err
    assert f"report: {(folder / 'my.html').resolve()}" in out
    assert (folder / "my.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert sorted(p.name for p in folder.glob("*.html")) == ["my.html"]
    assert not (folder / "studies").exists()  # no second report at the default path
