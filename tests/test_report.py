"""Tests of nas.report.page on real SQLite studies filled with hand-made trials (no training)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from plotly.offline import get_plotlyjs

from nas import trial_view
from nas.arch.architecture import Architecture
from nas.report import figures as report_figures
from nas.report import page as report
from nas.search.front import pareto_front

from helpers import unavailable

BUDGET = 250_000
DISTRIBUTIONS = {"width": IntDistribution(8, 128), "blocks": IntDistribution(1, 4)}


def _attrs(width: int, blocks: int, params: int) -> dict:
    arch = Architecture(channels=(width, 2 * width), blocks=(blocks, blocks))
    return {
        "params": params,
        "architecture": arch.to_json(),
        "seconds_per_epoch": 1.5,
        "flops": 1000,
        "device": "cpu",
    }


def _study(tmp_path, name: str = "report-test") -> optuna.Study:
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/s.db", study_name=name, direction="maximize"
    )
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["val_accuracy"])  # as the search does
    study.set_user_attr("budget", BUDGET)
    return study


def _add_trained(study, params: int, accuracy: float, width: int, blocks: int, **extra) -> None:
    curve = {1: accuracy / 2, 2: accuracy}
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=accuracy,
            params={"width": width, "blocks": blocks},
            distributions=DISTRIBUTIONS,
            user_attrs={**_attrs(width, blocks, params), **extra},
            intermediate_values=curve,
        )
    )


def _add_rejected(study, params: int, width: int) -> None:
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"width": width, "blocks": 4},
            distributions=DISTRIBUTIONS,
            user_attrs={
                **_attrs(width, 4, params),
                "over_budget_by": params - BUDGET,
                "prune_reason": "over budget",
            },
        )
    )


@pytest.fixture(scope="module")
def full_study(tmp_path_factory) -> optuna.Study:
    """Four complete trials (the hand-made Pareto example), one trial stopped by the pruner,
    two rejected over-budget candidates and one failed trial; built once, only read by tests."""
    study = _study(tmp_path_factory.mktemp("full"))
    _add_trained(study, 100_000, 0.5, 16, 1)
    _add_trained(study, 200_000, 0.7, 32, 2, test_accuracy=0.69)
    _add_trained(study, 150_000, 0.4, 24, 1)
    _add_trained(study, 240_000, 0.65, 48, 3)
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"width": 20, "blocks": 2},
            distributions=DISTRIBUTIONS,
            user_attrs={
                **_attrs(20, 2, 120_000),
                "trained": True,  # as the search records a candidate the pruner stopped
                "best_val_accuracy": 0.45,
                "prune_reason": "stopped by the pruner after epoch 3",
            },
            intermediate_values={1: 0.2, 2: 0.45, 3: 0.3},
        )
    )
    _add_rejected(study, 400_000, 100)
    _add_rejected(study, 900_000, 128)
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"prune_reason": "bug"}))
    return study


def _trace(figure, name: str):
    matches = [trace for trace in figure.data if trace.name == name]
    assert len(matches) == 1, f"expected one trace named {name!r}, got {len(matches)}"
    return matches[0]


def test_classification_helpers(full_study):
    trials = full_study.get_trials()
    trained = [t for t in trials if trial_view.is_trained(t)]
    assert [t.number for t in trained] == [0, 1, 2, 3, 4]
    assert [t.number for t in trials if trial_view.is_rejected(t)] == [5, 6]
    # The pruned trial's accuracy is its best epoch, not its last one.
    assert trial_view.accuracy(trained[4]) == pytest.approx(0.45)


def test_header_counts_every_kind_of_trial(full_study, tmp_path):
    text = report.write_report(full_study, tmp_path / "r.html").read_text(encoding="utf-8")
    header = text[text.index("<table class='summary'>") :]
    header = header[: header.index("</table>")]
    counts = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", header))
    assert counts["trained"] == "5"
    assert counts["trained to the end"] == "4"
    assert counts["stopped early by the pruner"] == "1"
    assert counts["rejected (over budget)"] == "2"
    assert counts["failed or broke"] == "1"
    assert counts["winner"].startswith("trial 1 (complete)")  # what --pick best takes


def test_params_figure_has_one_point_per_trained_trial_and_rejects_apart(full_study):
    figure = report_figures.build_figures(full_study)["params_vs_accuracy"]
    trained = _trace(figure, report_figures.TRAINED_TRACE)
    assert len(trained.x) == 5
    assert sorted(trained.x) == [100_000, 120_000, 150_000, 200_000, 240_000]
    rejected = _trace(figure, report_figures.REJECTED_TRACE)
    assert list(rejected.x) == [400_000, 900_000]
    budget = _trace(figure, report_figures.BUDGET_TRACE)
    assert list(budget.x) == [BUDGET, BUDGET]


def test_pareto_front_of_hand_made_points():
    points = [(100_000, 0.5), (200_000, 0.7), (150_000, 0.4), (300_000, 0.65)]
    assert pareto_front(points) == [0, 1]
    # Identical points appear once; equal params keep only the more accurate one.
    assert pareto_front([(10, 0.5), (10, 0.5), (10, 0.6), (5, 0.1)]) == [3, 2]
    assert pareto_front([]) == []


def test_pareto_trace_in_study_figure(full_study):
    figure = report_figures.build_figures(full_study)["params_vs_accuracy"]
    front = _trace(figure, report_figures.PARETO_TRACE)
    # The pruned trial (120k, 0.45) is dominated by (100k, 0.5), so the front stays the two
    # points of the hand-made example.
    assert list(zip(front.x, front.y)) == [(100_000, 0.5), (200_000, 0.7)]


def test_write_report_is_self_contained_and_complete(full_study, tmp_path):
    path = report.write_report(full_study, tmp_path / "out" / "report.html")
    assert path.is_file()
    text = path.read_text(encoding="utf-8")
    assert "plotly.js v" in text  # the library itself, embedded
    assert not re.search(r"<script[^>]*src=[\"']https?:", text)
    assert len(text) > 1_000_000  # the embedded library is megabytes; a CDN link is not
    for needle in (
        report_figures.TRAINED_TRACE,
        report_figures.REJECTED_TRACE,
        report_figures.PARETO_TRACE,
        "Parameter importances",
        "Validation accuracy per epoch",
        "report-test",
        "250,000 parameters",
    ):
        assert needle in text
    assert set(report_figures.build_figures(full_study)) == {
        "history",
        "params_vs_accuracy",
        "importances",
        "intermediate",
    }


def test_plotly_library_embedded_once(full_study, tmp_path):
    text = report.write_report(full_study, tmp_path / "r.html").read_text(encoding="utf-8")
    library_start = get_plotlyjs()[:200]
    assert text.count(library_start) == 1


def test_top_table_lists_trials_by_descending_accuracy(full_study, tmp_path):
    text = report.write_report(full_study, tmp_path / "r.html", top=3).read_text(encoding="utf-8")
    table = text[text.index("<table class='top'>") :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]  # skip the header row
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    assert [row[1] for row in cells] == ["1", "3", "0"]  # trial numbers
    accuracies = [float(row[3].rstrip(" %")) for row in cells]
    assert accuracies == sorted(accuracies, reverse=True) == [70.0, 65.0, 50.0]
    assert cells[0][7] == "69.00 %"  # the retrained trial's test accuracy
    assert cells[1][7] == "-"
    assert cells[0][5] == Architecture(channels=(32, 64), blocks=(2, 2)).describe()


def test_study_without_finished_trials_still_gets_a_report(tmp_path):
    study = _study(tmp_path, name="empty")
    _add_rejected(study, 300_000, 90)
    study.add_trial(create_trial(state=TrialState.FAIL))
    path = report.write_report(study, tmp_path / "empty.html")
    text = path.read_text(encoding="utf-8")
    assert report_figures.NO_FINISHED_TRIAL in text
    figures = report_figures.build_figures(study)
    assert "history" not in figures and "importances" not in figures
    # The rejected candidate is still shown, with no trained points beside it.
    params_figure = figures["params_vs_accuracy"]
    assert len(_trace(params_figure, report_figures.TRAINED_TRACE).x) == 0
    assert len(_trace(params_figure, report_figures.REJECTED_TRACE).x) == 1


def test_trials_missing_attributes_do_not_break_the_report(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/bare.db", direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.3))
    study.add_trial(
        create_trial(state=TrialState.COMPLETE, value=0.6, user_attrs={"architecture": "{not json"})
    )
    text = report.write_report(study, tmp_path / "bare.html").read_text(encoding="utf-8")
    assert "budgets</th><td>not recorded" in text
    assert "unreadable architecture" in text
    # No parameter counts, so no point can be placed, and the note says why.
    assert "params_vs_accuracy" not in report_figures.build_figures(study)
    assert "No trained trial has a recorded parameter count." in text
    assert "Not computed" in text or "No parameter is shared" in text


def test_importances_skipped_with_a_single_complete_trial(tmp_path):
    study = _study(tmp_path)
    _add_trained(study, 100_000, 0.5, 16, 1)
    text = report.write_report(study, tmp_path / "one.html").read_text(encoding="utf-8")
    assert "Needs at least two complete trials." in text
    assert "importances" not in report_figures.build_figures(study)


def test_duplicates_are_neither_points_nor_top_rows(tmp_path):
    study = _study(tmp_path, "dups")
    _add_trained(study, 100_000, 0.5, 16, 1)
    _add_trained(study, 200_000, 0.7, 32, 2)
    study.add_trial(  # reuses trial 1's result without training: no intermediate values
        create_trial(
            state=TrialState.COMPLETE,
            value=0.7,
            params={"width": 32, "blocks": 2},
            distributions=DISTRIBUTIONS,
            user_attrs={**_attrs(32, 2, 200_000), "duplicate_of": 1},
        )
    )
    assert [t.number for t in study.get_trials() if trial_view.is_trained(t)] == [0, 1]
    assert [t.number for t in report.top_trials(study.get_trials())] == [1, 0]
    trained = [
        trace
        for trace in report_figures.build_figures(study)["params_vs_accuracy"].data
        if trace.name == report_figures.TRAINED_TRACE
    ][0]
    assert len(trained.x) == 2


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render(page: Path) -> tuple[str, str]:
    """The DOM after the page's scripts ran in headless Chromium, and the console's log."""
    result = subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    return result.stdout, "\n".join(console)


def test_a_missing_browser_or_server_skips_here_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        unavailable("no Chromium here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no Chromium here .CI must run this test"):
        unavailable("no Chromium here")


def test_the_report_and_the_curves_render_their_charts_in_a_real_browser(full_study, tmp_path):
    if _browser() is None:
        unavailable("no Chromium here (apt-get install chromium)")
    from nas.report.curves import curves_html
    from nas.train.state import EpochRow

    page = report.write_report(full_study, tmp_path / "r.html")
    dom, console = _render(page)
    assert console == ""  # no error, no warning from the page's scripts
    # every figure drew its SVG (plotly draws one "main-svg" pair per figure)
    assert dom.count('class="main-svg"') >= 2 * len(report_figures.build_figures(full_study))
    assert "Caution: computed from 4 trained trials" in dom

    history = [
        EpochRow(
            epoch=e,
            train_loss=2 / e,
            train_accuracy=0.2 * e,
            val_loss=2.1 / e,
            val_accuracy=0.18 * e,
            lr=1e-3,
            seconds=1.0,
        )  # fmt: skip
        for e in range(1, 5)
    ]
    curves = tmp_path / "curves.html"
    curves.write_text(curves_html(history, title="study s, trial 3: 8,8 / 1,1 / k3 / s1"))
    dom, console = _render(curves)
    assert console == ""
    assert dom.count('class="main-svg"') >= 2
    assert "study s, trial 3" in dom and "72" in dom  # accuracy shown in percent (0.72 -> 72 %)


def test_the_report_shows_rank_fidelity_once_five_trials_ran_every_epoch(tmp_path):
    study = _study(tmp_path, "fidelity")
    study.set_user_attr("recipe", {"epochs": 3, "optimizer": "adam", "lr": 0.001})
    finals = [0.50, 0.60, 0.55, 0.70, 0.65, 0.40]
    for index, final in enumerate(finals):  # epoch 2 already ranks them as epoch 3 does
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=final,
                params={"width": 16 + index, "blocks": 1},
                distributions=DISTRIBUTIONS,
                user_attrs={**_attrs(16 + index, 1, 100_000 + index), "trained": True},
                intermediate_values={1: 0.3 + 0.01 * (index % 2), 2: final - 0.05, 3: final},
            )
        )
    text = report.write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Rank fidelity" in text
    assert "fidelity" in report_figures.build_figures(study)
    assert "ranking at epoch 2 already agrees with epoch 3" in text
    assert "over 6 trials" in text
