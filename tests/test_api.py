"""The Python API (`nas.search(...)`, `nas.load_search`, `nas.retrain`): `nas.search` callable in
any import order, the documented example run as written, and the winner it names the same as
`nas search`'s for the same store. Real stores, the smoke settings on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import nas
from nas import records
from nas.cli.main import search_main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.trial_view import TrialKind, classify, is_trained

from helpers import fresh_python, run_in_process

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize(
    "first", ["import nas", "import nas.search.loop", "from nas.search import winner"]
)
def test_nas_search_is_the_search_function_whatever_was_imported_first(first):
    # a function stored as nas.search would be replaced by the subpackage once it is imported
    code = (
        f"{first}\nimport nas\nimport nas.search.loop\nfrom nas.config.search import SearchConfig\n"
        "from nas.errors import UserError\n"
        "assert nas.search.loop.run_search and nas.search.winner.winner\n"
        "try:\n    nas.search(SearchConfig(storage='nonsense'))\n"
        "except UserError as error:\n    print(error)\n"
    )
    assert fresh_python(code).endswith("'nonsense' is not a storage URL; write one like "
        "sqlite:///studies/nas.db, journal:///studies/nas.log or "
        "postgresql+psycopg2://USER@HOST/DB")  # fmt: skip


@pytest.mark.slow
def test_the_documented_example_runs_as_written(tmp_path):
    example = REPO / "examples" / "notebook_example.py"
    run = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    store = f"sqlite:///{tmp_path}/studies/example.db"
    study = optuna.load_study(study_name="example", storage=store)
    assert sum(is_trained(t) for t in study.trials) == 4
    (number,) = re.findall(r"^winner: trial (\d+),", run.stdout, re.MULTILINE)
    assert (tmp_path / "runs" / "example" / "metrics.json").is_file()
    assert records.retrain_key(int(number)) in study.user_attrs  # the winner was retrained
    assert "logits: (1, 10)" in run.stdout


@pytest.mark.slow
def test_the_api_names_the_winner_nas_search_names_for_the_same_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"journal:///{tmp_path}/s.log"
    argv = ["--smoke", "--subset", "48", "--augment", "none", "--storage", url]
    status, out, err = run_in_process(search_main, argv)
    assert status == 0, err
    (named,) = re.findall(r"^winner: trial (\d+) ", out, re.MULTILINE)

    assert nas.load_search("smoke", url).winner.number == int(named)
    before = len(nas.load_search("smoke", url).trials)
    # the same search from Python: a resume of the full study, which trains nothing more
    config = SearchConfig(study="smoke", storage=url, space="tiny", budget=20_000, trials=4)
    result = nas.search(
        config,
        DataConfig(dataset="synthetic", subset=48),
        Recipe(epochs=2, batch_size=32, augment="none"),
        Machine(device="cpu"),
        progress=False,
    )
    assert len(result.trials) == before
    assert result.winner.number == int(named)
    full = [t for t in result.trials if classify(t) == TrialKind.TRAINED]
    undominated = [  # by hand: no other trial at most as big and at least as accurate
        t.number
        for t in full
        if not any(
            (o.user_attrs["params"], -o.value) < (t.user_attrs["params"], -t.value)
            and o.user_attrs["params"] <= t.user_attrs["params"]
            and o.value >= t.value
            for o in full
        )
    ]
    assert sorted(t.number for t in result.front) == sorted(undominated)
    assert {"history", "params_vs_accuracy"} <= set(result.figures())
