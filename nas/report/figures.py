"""Owns the report's figures: plotly figures of a study's trials, each built from the one
trial classification (`trial_view.classify`), with integer trial and epoch axes, accuracy axes
fitted to the data, and rejected candidates apart from the accuracy scale. A point's hover
text is `nas.report.trials`'.

`build_figures(study)` returns them by key; `sections(study, trials)` pairs each with its
heading and any note (why it is missing, or a caution) for `nas.report.page`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import accumulate

import optuna
import plotly.graph_objects as go
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)
from optuna.trial import FrozenTrial, TrialState

from nas import trial_view
from nas.config.costs import COSTS, cost_label
from nas.report.trials import architecture_summary, hover_text
from nas.search.front import front

# Trace names are part of the report's interface: tests and readers find traces by them.
TRAINED_TRACE = "trained trials"
PARETO_TRACE = "Pareto front"
REJECTED_TRACE = "rejected (over budget)"
BUDGET_TRACE = "budget"
NO_FINISHED_TRIAL = "No trial has finished yet."


_ACCURACY_AXIS = {"yaxis_title": "validation accuracy", "yaxis_tickformat": ".0%"}
IMPORTANCE_MIN_TRIALS = 10  # complete trials below which importances come with a caution


def _integer_axis(values: list[int]) -> dict:
    """Ticks on whole numbers only (trials, epochs): never 0.5 or 1.2."""
    span = max(values, default=1) - min(values, default=0)
    return {"tickmode": "linear", "tick0": 0, "dtick": max(1, math.ceil(span / 10))}


def _fitted(values: list[float]) -> list[float]:
    """An accuracy axis range around the data, with a margin, kept within 0..1."""
    low, high = min(values), max(values)
    margin = max(0.02, 0.1 * (high - low))
    return [max(0.0, low - margin), min(1.0, high + margin)]


@dataclass
class _Section:
    """One part of the report: a figure, or a note saying why there is none."""

    key: str
    title: str
    figure: go.Figure | None
    note: str = ""


def _scatter(trials: list[FrozenTrial], x: list, y: list, name: str, **style) -> go.Scatter:
    """A scatter trace whose hover text describes each trial."""
    return go.Scatter(
        x=x, y=y, name=name, text=[hover_text(t) for t in trials], hoverinfo="text", **style
    )


def _state_symbols(trials: list[FrozenTrial]) -> list[str]:
    # Open markers for trials the pruner stopped: their accuracy is from fewer epochs.
    return ["circle" if t.state == TrialState.COMPLETE else "circle-open" for t in trials]


def _history_section(trained: list[FrozenTrial]) -> _Section:
    title = "Optimisation history"
    if not trained:
        return _Section("history", title, None, NO_FINISHED_TRIAL)
    numbers, accuracies = [t.number for t in trained], [trial_view.accuracy(t) for t in trained]
    markers = {"symbol": _state_symbols(trained), "size": 8}
    figure = go.Figure(
        _scatter(trained, numbers, accuracies, "trial", mode="markers", marker=markers)
    )
    # Best so far over complete trials only: a pruned trial is never the one retrained.
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    best_so_far = list(accumulate((trial_view.accuracy(t) for t in complete), max))
    if complete:
        x = [t.number for t in complete]
        figure.add_trace(
            _scatter(complete, x, best_so_far, "best so far", mode="lines", line_shape="hv")
        )
    figure.update_layout(xaxis_title="trial", xaxis=_integer_axis(numbers), **_ACCURACY_AXIS)
    figure.update_yaxes(range=_fitted(accuracies))
    return _Section("history", title, figure)


def _front_section(
    trained: list[FrozenTrial], rejected: list[FrozenTrial], cost: str, limit: float | None
) -> _Section:
    """Trained trials on the accuracy scale against the study's cost, with the Pareto front and
    the cost's budget line; rejected candidates in a strip of their own below it (they never
    trained: they have no accuracy), on the same cost axis."""
    from plotly.subplots import make_subplots

    label = cost_label(cost)
    title = f"{label[0].upper()}{label[1:]} vs validation accuracy, and the Pareto front"
    key = f"{cost}_vs_accuracy"
    # A trial without a recorded cost cannot be placed on this figure.
    placed = [t for t in trained if trial_view.cost_of(t, cost) is not None]
    rejected = [t for t in rejected if trial_view.cost_of(t, cost) is not None]
    if not placed and not rejected:
        what = "parameter count" if cost == "params" else label
        note = f"No trained trial has a recorded {what}." if trained else NO_FINISHED_TRIAL
        return _Section(key, title, None, note)
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.82, 0.18], vertical_spacing=0.04
    )
    _add_trained(figure, placed, cost)
    if rejected:
        x = [trial_view.cost_of(t, cost) for t in rejected]
        cross = {"symbol": "x", "color": "grey", "size": 8}
        figure.add_trace(
            _scatter(rejected, x, [""] * len(x), REJECTED_TRACE, mode="markers", marker=cross),
            row=2,
            col=1,
        )
    accuracies = [trial_view.accuracy(t) for t in placed]
    accuracy_range = _fitted(accuracies) if accuracies else [0.0, 1.0]
    if limit is not None:
        line = {"dash": "dash", "color": "red"}
        figure.add_trace(
            go.Scatter(
                x=[limit, limit], y=accuracy_range, mode="lines", line=line, name=BUDGET_TRACE
            ),
            row=1,
            col=1,
        )
        figure.add_vline(x=limit, line=line, row=2, col=1)
    # Log scale: candidates span orders of magnitude, rejected ones especially.
    figure.update_xaxes(type="log", row=1, col=1)
    figure.update_xaxes(type="log", title_text=COSTS[cost].axis, row=2, col=1)
    figure.update_yaxes(
        title_text="validation accuracy", tickformat=".0%", range=accuracy_range, row=1, col=1
    )
    figure.update_yaxes(showticklabels=False, title_text="rejected", row=2, col=1)
    return _Section(key, title, figure)


def _add_trained(figure: go.Figure, placed: list[FrozenTrial], cost: str) -> None:
    """The trained trials and the Pareto front through them, on the accuracy row."""
    costs = [trial_view.cost_of(t, cost) for t in placed]
    accuracies = [trial_view.accuracy(t) for t in placed]
    markers = {"symbol": _state_symbols(placed), "size": 8}
    figure.add_trace(
        _scatter(placed, costs, accuracies, TRAINED_TRACE, mode="markers", marker=markers),
        row=1,
        col=1,
    )
    on_front = front(placed, cost)
    if on_front:
        x = [trial_view.cost_of(t, cost) for t in on_front]
        y = [trial_view.accuracy(t) for t in on_front]
        # A staircase: accuracy only rises at the next point of the front.
        style = {"mode": "lines+markers", "line_shape": "hv"}
        figure.add_trace(_scatter(on_front, x, y, PARETO_TRACE, **style), row=1, col=1)


def _importance_evaluator() -> tuple[BaseImportanceEvaluator, str]:
    """Seeded fANOVA (optuna's default) if scikit-learn, not one of our dependencies, is
    installed; else PED-ANOVA, which needs nothing beyond optuna. Both are deterministic."""
    try:
        return FanovaImportanceEvaluator(seed=0), "fANOVA"
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return PedAnovaImportanceEvaluator(), "PED-ANOVA"


def _importance_section(study: optuna.Study, trials: list[FrozenTrial]) -> _Section:
    title = "Parameter importances"
    complete = [t for t in trials if trial_view.classify(t) == trial_view.TrialKind.TRAINED]
    if len(complete) < 2:
        return _Section("importances", title, None, "Needs at least two complete trials.")
    evaluator, method = _importance_evaluator()
    try:
        with warnings.catch_warnings():  # e.g. "importances will be equal" on tiny studies
            warnings.simplefilter("ignore")
            # a Pareto study has two objectives: importances for its accuracy
            target = trial_view.accuracy if len(study.directions) > 1 else None
            importances = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=target
            )
    except Exception as error:  # optuna raises several types for degenerate studies
        return _Section("importances", title, None, f"Not computed: {error}")
    if not importances:
        return _Section("importances", title, None, "No parameter is shared by the trials.")
    names = list(importances)[::-1]  # most important at the top of a horizontal bar chart
    figure = go.Figure(
        go.Bar(x=[importances[n] for n in names], y=names, orientation="h", name="importance")
    )
    figure.update_layout(xaxis_title=f"importance ({method})", yaxis_title="parameter")
    caution = ""
    if len(complete) < IMPORTANCE_MIN_TRIALS:
        caution = (
            f"Caution: computed from {len(complete)} trained trials; below "
            f"{IMPORTANCE_MIN_TRIALS} these importances are mostly noise."
        )
    return _Section("importances", title, figure, caution)


def _intermediate_section(trained: list[FrozenTrial]) -> _Section:
    title = "Validation accuracy per epoch"
    curves = {t.number: trial_view.curve(t) for t in trained}
    curves = {number: curve for number, curve in curves.items() if curve}
    if not curves:
        return _Section("intermediate", title, None, "No trial has reported an epoch yet.")
    figure = go.Figure()
    by_number = {t.number: t for t in trained}
    for number, curve in curves.items():
        epochs = sorted(curve)
        figure.add_trace(
            go.Scatter(
                x=epochs,
                y=[curve[e] for e in epochs],
                mode="lines+markers",
                name=f"trial {number}",
                hovertext=architecture_summary(by_number[number]),
            )
        )
    epochs = sorted({e for curve in curves.values() for e in curve})
    values = [v for curve in curves.values() for v in curve.values() if math.isfinite(v)]
    figure.update_layout(xaxis_title="epoch", xaxis=_integer_axis(epochs), **_ACCURACY_AXIS)
    if values:
        figure.update_yaxes(range=_fitted(values))
    return _Section("intermediate", title, figure)


def sections(study: optuna.Study, trials: list[FrozenTrial]) -> list[_Section]:
    trained = [t for t in trials if trial_view.is_trained(t)]
    cost = trial_view.objective_of(study.user_attrs)[1]
    limit = trial_view.budget_limits(study.user_attrs).get(cost)
    return [
        _history_section(trained),
        _front_section(trained, [t for t in trials if trial_view.is_rejected(t)], cost, limit),
        _importance_section(study, trials),
        _intermediate_section(trained),
        _fidelity_section(study, trials),
    ]


def _fidelity_section(study: optuna.Study, trials: list[FrozenTrial]) -> _Section:
    """Would fewer epochs have ranked the candidates the same? (nas.search.fidelity)"""
    from nas.search.fidelity import fidelity_figure, rank_fidelity, recipe_epochs

    title = "Rank fidelity: epoch k vs the last epoch"
    result = rank_fidelity(trials, recipe_epochs(study.user_attrs))
    if not result.enough_trials:
        return _Section("fidelity", title, None, result.advice())
    return _Section("fidelity", title, fidelity_figure(result), result.advice())


def build_figures(study: optuna.Study) -> dict[str, go.Figure]:
    """The report's figures by key (`history`, `<cost>_vs_accuracy` for the study's cost, e.g.
    `params_vs_accuracy`, `importances`, `intermediate`, `fidelity`); a figure the study has no
    data for is left out."""
    parts = sections(study, study.get_trials(deepcopy=False))
    return {part.key: part.figure for part in parts if part.figure is not None}
