"""Tests of the Pareto search and the front (issue 14: `--objective pareto`, nas.search.front, the
report's "best model at every size", `nas retrain --pick`), on real SQLite stores with real
Optuna multi-objective studies, the tiny space and synthetic data on the CPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from pathlib import Path

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from nas import records, trial_view
from nas.arch.counts import count_macs, count_params
from nas.arch.space import SearchSpace
from nas.cli.main import main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.costs.budgets import Budgets
from nas.report.figures import PARETO_TRACE, build_figures
from nas.report.page import render_report
from nas.search.front import Pick, front, pick_trial
from nas.search.loop import run_search
from nas.search.warm_start import size_ladder

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.usefixtures("one_thread"),  # conftest.py: one torch thread for the module
]

DATA = DataConfig(dataset="synthetic", subset=48, synthetic_size=60)
RECIPE = Recipe(epochs=2, batch_size=16, augment="none")
MACHINE = Machine(device="cpu")


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def trained(number: int, accuracy: float, params: int, state=TrialState.COMPLETE):
    """A trial as the search records a trained one (value: the accuracy)."""
    attrs = {records.PARAMS: params, records.TRAINED: True, records.ARCHITECTURE: f"a{number}"}
    if state == TrialState.PRUNED:
        return create_trial(state=state, user_attrs=attrs, intermediate_values={1: accuracy})
    return create_trial(value=accuracy, user_attrs=attrs)


def numbered(trials):
    """FrozenTrials numbered as a study numbers them (create_trial numbers them all 0)."""
    study = optuna.create_study(direction="maximize")
    for trial in trials:
        study.add_trial(trial)
    return study.trials


# ---- the front and the picks -----------------------------------------------------------------


def test_the_front_is_exactly_the_non_dominated_trials_cheapest_first():
    rng = random.Random(0)
    for _ in range(30):
        points = [(rng.randint(1, 8) * 1000, rng.randint(1, 8) / 10) for _ in range(12)]
        trials = numbered([trained(i, a, p) for i, (p, a) in enumerate(points)])
        on_front = front(trials, "params")
        dominated = {
            t.number
            for t, other in itertools.permutations(trials, 2)
            if trial_view.params_of(other) <= trial_view.params_of(t)
            and trial_view.accuracy(other) >= trial_view.accuracy(t)
            and (trial_view.params_of(other), trial_view.accuracy(other))
            != (trial_view.params_of(t), trial_view.accuracy(t))
        }
        expected = {t.number for t in trials if t.number not in dominated}
        # of identical points the earliest stays
        got = {t.number for t in on_front}
        assert {(trial_view.params_of(trials[n]), trial_view.accuracy(trials[n])) for n in got} == {
            (trial_view.params_of(trials[n]), trial_view.accuracy(trials[n])) for n in expected
        }
        assert len(got) == len(
            {(trial_view.params_of(t), trial_view.accuracy(t)) for t in on_front}
        )
        costs = [trial_view.params_of(t) for t in on_front]
        assert costs == sorted(costs) and len(set(costs)) == len(costs)


def test_smallest_within_takes_the_cheapest_within_the_points_and_ignores_stopped_trials():
    trials = numbered(
        [
            trained(0, 0.940, 9000),  # the best
            trained(1, 0.930, 5000),  # exactly 1 point below: within 1
            trained(2, 0.935, 7000),
            trained(3, 0.929, 1000),  # 1.1 points below: outside
            trained(4, 0.990, 100, state=TrialState.PRUNED),  # stopped: ranks on fewer epochs
        ]
    )
    assert pick_trial(trials, "params", Pick()).number == 0
    assert pick_trial(trials, "params", Pick("smallest-within", 1)).number == 1
    assert pick_trial(trials, "params", Pick("smallest-within", 0.5)).number == 2
    assert pick_trial(trials, "params", Pick("smallest-within", 0)).number == 0
    assert pick_trial(trials, "params", Pick("smallest-within", 2)).number == 3
    assert [t.number for t in front(trials, "params")] == [3, 1, 2, 0]


# ---- a Pareto search end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def pareto(tmp_path_factory) -> tuple[SearchConfig, optuna.Study]:
    store = tmp_path_factory.mktemp("pareto") / "p.db"
    config = SearchConfig(
        budget=20_000,
        trials=5,
        space="tiny",
        study="front",
        storage=url_of(store),
        sampler="random",
        objective="pareto",
        minimize="params",
        warm_start=False,
    )
    return config, run_search(config, DATA, RECIPE, MACHINE)


def test_a_pareto_study_has_two_objectives_and_every_trained_trial_its_curve(pareto):
    config, study = pareto
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "params"]
    assert study.user_attrs[records.OBJECTIVE] == {"objective": "pareto", "minimize": "params"}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sum(trial_view.is_trained(t) for t in complete) == 5
    for trial in complete:
        assert trial.values[1] == trial.user_attrs["params"] <= config.budget
        assert trial.intermediate_values == {}  # Optuna keeps none with two objectives...
        curve = trial.user_attrs[records.CURVE]  # ...so the search records the curve itself
        assert len(curve) == RECIPE.epochs
        if trial_view.is_trained(trial):
            assert trial.values[0] == max(curve) == trial_view.accuracy(trial)
    # the front the tool shows is Optuna's own Pareto front (same trials, no duplicates)
    ours = {t.number for t in front(study.trials, "params")}
    optunas = {
        t.number
        for t in study.best_trials
        if trial_view.is_trained(t)  # a duplicate repeats an earlier trial's values
    }
    assert ours == optunas or {tuple(study.trials[n].values) for n in ours} == {
        tuple(study.trials[n].values) for n in optunas
    }


def test_the_report_shows_the_front_its_budget_line_and_the_commands(pareto):
    config, study = pareto
    figures = build_figures(study)
    figure = figures["params_vs_accuracy"]
    traces = {trace.name: trace for trace in figure.data}
    on_front = front(study.trials, "params")
    assert list(traces[PARETO_TRACE].x) == [t.user_attrs["params"] for t in on_front]
    assert list(traces["budget"].x) == [20_000, 20_000]
    assert "intermediate" in figures  # per-epoch curves from the recorded curve
    text = render_report(study, storage="sqlite:///p.db")
    assert "The best model at every size" in text
    for trial in on_front:
        assert f"nas retrain --study front --trial {trial.number} --storage sqlite:///p.db" in text
    assert "Pareto: validation accuracy up, parameters down" in text


def test_retrain_pick_smallest_within_retrains_that_trial(pareto, tmp_path, capsys):
    config, study = pareto
    expected = pick_trial(study.trials, "params", Pick("smallest-within", 1))
    best = pick_trial(study.trials, "params", Pick())
    out = tmp_path / "run"
    status = main(
        ["retrain", "--study", config.study, "--storage", config.storage,
         "--pick", "smallest-within", "1", "--epochs", "1", "--out", str(out),
         "--device", "cpu", "--artifact-dir", str(tmp_path / "artifacts")]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0
    assert f"picked trial {expected.number}: the cheapest trial within 1 accuracy point" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] == expected.user_attrs["params"]
    assert metrics["source"]["trial"] == expected.number
    reloaded = optuna.load_study(study_name=config.study, storage=config.storage)
    assert records.retrain_key(expected.number) in reloaded.user_attrs
    assert trial_view.accuracy(expected) >= trial_view.accuracy(best) - 0.01
    assert trial_view.params_of(expected) <= trial_view.params_of(best)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pick", "smallest"], "--pick takes best or smallest-within PCT"),
        (["--pick", "smallest-within", "x"], "smallest-within takes accuracy points from 0"),
        (["--pick", "best", "--trial", "1"], "give either --pick or --trial, not both"),
    ],
)
def test_bad_picks_get_one_sentence_and_exit_2(pareto, capsys, argv, message):
    config, _ = pareto
    status = main(["retrain", "--study", config.study, "--storage", config.storage, *argv])
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err


def test_a_pareto_search_on_latency_minimises_the_latency_it_measured(tmp_path):
    # what the search optimises, not whether two random trials happen to lower it
    config = SearchConfig(
        budget=20_000,
        trials=2,
        space="tiny",
        study="lat",
        storage=url_of(tmp_path / "l.db"),
        sampler="random",
        objective="pareto",
        minimize="latency",
        warm_start=False,
    )
    study = run_search(config, DATA, dataclasses.replace(RECIPE, epochs=1), MACHINE)
    assert study.metric_names == ["val_accuracy", "latency"]
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    complete = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
    assert len(complete) == 2
    for trial in complete:  # the second objective is the latency measured for that trial
        assert trial.values[1] == trial.user_attrs["latency_ms"] > 0
        assert trial.user_attrs["latency"]["median_ms"] == trial.values[1]
    assert study.user_attrs[records.BUDGETS]["latency_device"] == "cpu"  # measured: recorded


def test_a_new_pareto_study_first_trains_a_ladder_of_sizes_across_the_budget(tmp_path):
    space = SearchSpace.resolve("tiny")
    rungs = size_ladder(space, Budgets(params=20_000), 10, 32)
    sizes = [int(name.split()[0].replace(",", "")) for name, _ in rungs]
    assert len(rungs) == 3 and sizes == sorted(sizes)
    assert sizes[0] == count_params(space.smallest(10))  # the front's cheap end
    assert 15_000 < sizes[-1] <= 20_000  # its large end: near the budget, never over it
    macs_bound = size_ladder(space, Budgets(params=20_000, macs=4_000_000), 10, 32)
    assert macs_bound
    for _, params in macs_bound:
        arch = space.decide(lambda n, lo, hi, p=params: p[n], lambda n, c, p=params: p[n], 10)
        assert count_macs(arch, 32) <= 4_000_000
    config = SearchConfig(
        budget=20_000, trials=0, space="tiny", study="ladder", storage=url_of(tmp_path / "l.db"),
        objective="pareto",
    )  # fmt: skip
    notes: list[str] = []
    study = run_search(config, DATA, RECIPE, MACHINE, announce=notes.append)
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[records.WARM_START] for t in queued] == [
        f"size ladder, {name}" for name, _ in rungs
    ]
    assert notes[0].startswith("warm start: a ladder of 3 sizes (1,490 params, ")


@pytest.mark.slow  # the acceptance as a user runs it: ~1 minute on 2 cores
def test_the_pareto_smoke_run_yields_a_front_of_three_and_retrains_from_it(tmp_path, capsys):
    store = url_of(tmp_path / "smoke.db")
    report = tmp_path / "smoke.html"
    argv = ["--smoke", "--objective", "pareto", "--storage", store, "--report", str(report)]
    assert main(["search", *argv]) == 0
    printed = capsys.readouterr().out
    listed = printed.split("The best model at every size")[1].split("\n\n")[0]
    commands = [line for line in listed.splitlines() if "nas retrain --study smoke --trial" in line]
    assert len(commands) >= 3, printed  # the ladder anchors the front's ends
    study = optuna.load_study(study_name="smoke", storage=store)
    on_front = front(study.trials, "params")
    assert len(on_front) == len(commands)
    text = report.read_text(encoding="utf-8")
    assert text.count("nas retrain --study smoke --trial") == len(on_front)
    expected = pick_trial(study.trials, "params", Pick("smallest-within", 1))
    out = tmp_path / "run"
    retrain = [
        "retrain", "--study", "smoke", "--storage", store, "--pick", "smallest-within", "1",
        "--epochs", "1", "--out", str(out), "--artifact-dir", str(tmp_path / "a"),
    ]  # fmt: skip
    assert main(retrain) == 0
    assert f"picked trial {expected.number}:" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["source"]["trial"] == expected.number
