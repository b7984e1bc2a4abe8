"""Study names a user can type (nas.commands, nas.files.safe_file_name): every printed command
parses back, through nas's own argparse parser, to the name it was built from; a study's report
and run folders stay inside their folders; two studies never share a file; a name that was
already a safe file name keeps its file (existing studies' reports do not move)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from nas.cli.main import build_parser, main
from nas.commands import retrain_command
from nas.files import safe_file_name
from nas.report.page import default_report_path

from helpers import one_torch_thread, run_in_process

HOSTILE = [
    "-x", "--trial", "-", "my study", "my_study", "../evil", "a/b", "/abs", "..", ".", "x=y",
    "it's \"q\"", "naïve", " lead", "*", "$(touch pwned)", "a" * 300, "a/../../b", "tab\there",
]  # fmt: skip
SAFE = ["smoke", "my_study", "cifar10-resnet.v2", "-x", "A1"]  # kept as they are


@pytest.mark.parametrize("name", HOSTILE)
def test_a_printed_retrain_command_parses_back_to_its_study(name):
    store = "sqlite:///-odd folder/s.db"  # a store whose text could be taken for a flag too
    words = shlex.split(retrain_command(name, 3, store, ["--out", "runs/x y"]))
    assert words[:2] == ["nas", "retrain"]
    args = build_parser().parse_args(words[1:])
    assert (args.study, args.trial, args.storage, args.out) == (name, 3, store, "runs/x y")


def test_safe_names_keep_their_file_names_and_report_paths(tmp_path):
    for name in SAFE:
        assert safe_file_name(name) == name
        path = default_report_path(f"sqlite:///{tmp_path}/s.db", name)
        assert path == tmp_path / f"{name}.html"
    assert default_report_path("postgresql://h/db", "smoke") == Path("studies/smoke.html")


def test_no_name_leaves_its_folder_and_no_two_names_share_a_file(tmp_path):
    files = {}
    for name in HOSTILE:
        file_name = safe_file_name(name)
        assert "/" not in file_name and file_name not in (".", "..", "")
        assert len(file_name.encode()) <= 200
        report = default_report_path(f"sqlite:///{tmp_path}/s.db", name)
        assert report.parent == tmp_path and report.name == f"{file_name}.html"
        run = Path("runs") / file_name / "trial-1"
        assert Path("runs").resolve() in (Path.cwd() / run).resolve().parents
        files.setdefault(file_name, []).append(name)
    assert all(len(names) == 1 for names in files.values()), files
    # the pair that shared a report before: "my study" and "my_study"
    assert default_report_path("sqlite:///s.db", "my study") != default_report_path(
        "sqlite:///s.db", "my_study"
    )


@pytest.mark.slow
def test_a_study_named_like_a_flag_and_a_path_searches_and_retrains_inside_its_folders(
    tmp_path, monkeypatch
):
    name = "-../up and/out"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    store = f"sqlite:///{tmp_path}/work/s.db"
    search = ["search", "--smoke", "--subset", "48", "--augment", "none", "--epochs", "1",
              "--trials", "1", f"--study={name}", "--storage", store]  # fmt: skip
    with one_torch_thread():
        status, out, err = run_in_process(main, search)
    assert status == 0, err
    printed = next(line for line in out.splitlines() if "nas retrain" in line).strip()
    words = shlex.split(printed)
    assert build_parser().parse_args(words[1:]).study == name
    with one_torch_thread():
        status, out, err = run_in_process(main, [*words[1:], "--epochs", "1"])
    assert status == 0, err
    runs = [path.parent for path in tmp_path.rglob("model.safetensors")]
    assert runs == [tmp_path / "work" / "runs" / safe_file_name(name) / "trial-0"]
    reports = sorted(tmp_path.rglob("*.html"))
    assert tmp_path / "work" / f"{safe_file_name(name)}.html" in reports
    assert all(tmp_path / "work" in path.parents for path in reports)
