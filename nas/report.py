"""Owns the study report: plotly figures of a search and one self-contained HTML file.

`write_report(study, path)` reads a study through Optuna's public API and the records contract
(`nas.records`: the trial and study keys, `classify`, the retrain results recorded on the
study; per-epoch validation accuracy as intermediate values) and writes one HTML file
with plotly.js embedded once, so it opens offline. It holds the optimisation history, parameters
against validation accuracy with the budget line, the Pareto front and the rejected over-budget
candidates, parameter importances, per-epoch curves, and a table of the top trials.

Claims: every figure and count is built from the one trial classification
(`records.classify`, the same the search and the retrain use), the params figure has exactly
one point per trained trial, and a study with no finished trial, or with trials missing
attributes, still gets a report instead of an error.
"""

from __future__ import annotations

import html
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from nas import records
from nas.arch import Architecture
from nas.files import write_atomic

# Trace names are part of the report's interface: tests and readers find traces by them.
TRAINED_TRACE = "trained trials"
PARETO_TRACE = "Pareto front"
REJECTED_TRACE = "rejected (over budget)"
BUDGET_TRACE = "budget"
NO_FINISHED_TRIAL = "No trial has finished yet."


def trial_accuracy(trial: FrozenTrial) -> float | None:
    """Validation accuracy a trained trial ranks by (`records.accuracy`), None otherwise."""
    return records.accuracy(trial)


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that trained (to the end, or until the pruner stopped them), by number.

    A duplicate repeats an earlier trial's result without training, so each trained
    architecture appears once."""
    return [t for t in study.get_trials(deepcopy=False) if records.is_trained(t)]


def rejected_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Candidates rejected over the budget, by number."""
    return [t for t in study.get_trials(deepcopy=False) if _is_rejected(t)]


def _is_rejected(trial: FrozenTrial) -> bool:
    return records.classify(trial) == records.TrialKind.REJECTED


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (parameters, accuracy) points no other point dominates, fewest params first.

    A point is dominated when another has no more parameters and no less accuracy and differs in
    one of them. Of identical points only the first is kept, so the front line has no repeats.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best_accuracy = -math.inf
    for index in order:
        # Sorted by params, then accuracy descending: a point is on the front exactly when it
        # beats the accuracy of everything with fewer (or equal) parameters seen before it.
        if points[index][1] > best_accuracy:
            front.append(index)
            best_accuracy = points[index][1]
    return front


def architecture_summary(trial: FrozenTrial) -> str:
    """The one-line `Architecture.describe()` of a trial, or a dash when it is missing or bad."""
    text = trial.user_attrs.get(records.ARCHITECTURE)
    if not isinstance(text, str):
        return "-"
    try:
        return Architecture.from_json(text).describe()
    except (ValueError, TypeError):
        return "unreadable architecture"


_params = records.params_of


def _budget(study: optuna.Study) -> int | None:
    return records.budget_of(study.user_attrs)


_ACCURACY_AXIS = {"yaxis_title": "validation accuracy", "yaxis_tickformat": ".0%"}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _hover(trial: FrozenTrial) -> str:
    params = _params(trial)
    lines = [
        f"trial {trial.number} ({trial.state.name.lower()})",
        architecture_summary(trial),
        f"{params:,} params" if params is not None else "params unknown",
        f"val accuracy {_percent(trial_accuracy(trial))}",
    ]
    if _is_rejected(trial):
        excess = trial.user_attrs[records.OVER_BUDGET_BY]
        lines[-1] = f"rejected: {excess:,} over budget" if isinstance(excess, int) else "rejected"
    if records.DUPLICATE_OF in trial.user_attrs:
        lines.append(f"same architecture as trial {trial.user_attrs[records.DUPLICATE_OF]}")
    return "<br>".join(lines)


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
        x=x, y=y, name=name, text=[_hover(t) for t in trials], hoverinfo="text", **style
    )


def _state_symbols(trials: list[FrozenTrial]) -> list[str]:
    # Open markers for trials the pruner stopped: their accuracy is from fewer epochs.
    return ["circle" if t.state == TrialState.COMPLETE else "circle-open" for t in trials]


def _history_section(trained: list[FrozenTrial]) -> _Section:
    title = "Optimisation history"
    if not trained:
        return _Section("history", title, None, NO_FINISHED_TRIAL)
    numbers, accuracies = [t.number for t in trained], [trial_accuracy(t) for t in trained]
    markers = {"symbol": _state_symbols(trained), "size": 8}
    figure = go.Figure(
        _scatter(trained, numbers, accuracies, "trial", mode="markers", marker=markers)
    )
    # Best so far over complete trials only: a pruned trial is never the one retrained.
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    best_so_far = list(accumulate((trial_accuracy(t) for t in complete), max))
    if complete:
        x = [t.number for t in complete]
        figure.add_trace(
            _scatter(complete, x, best_so_far, "best so far", mode="lines", line_shape="hv")
        )
    figure.update_layout(title=title, xaxis_title="trial", **_ACCURACY_AXIS)
    return _Section("history", title, figure)


def _params_section(
    trained: list[FrozenTrial], rejected: list[FrozenTrial], budget: int | None
) -> _Section:
    title = "Parameters vs validation accuracy"
    # A trial without a recorded parameter count cannot be placed on this figure.
    placed = [t for t in trained if _params(t) is not None]
    rejected = [t for t in rejected if _params(t) is not None]
    if not placed and not rejected:
        note = "No trained trial has a recorded parameter count." if trained else NO_FINISHED_TRIAL
        return _Section("params_vs_accuracy", title, None, note)
    params = [_params(t) for t in placed]
    accuracies = [trial_accuracy(t) for t in placed]
    markers = {"symbol": _state_symbols(placed), "size": 8}
    figure = go.Figure(
        _scatter(placed, params, accuracies, TRAINED_TRACE, mode="markers", marker=markers)
    )
    front = pareto_front(list(zip(params, accuracies)))
    if front:
        on_front = [placed[i] for i in front]
        x, y = [params[i] for i in front], [accuracies[i] for i in front]
        # A staircase: accuracy only rises at the next point of the front.
        style = {"mode": "lines+markers", "line_shape": "hv"}
        figure.add_trace(_scatter(on_front, x, y, PARETO_TRACE, **style))
    if rejected:
        # Rejected candidates never trained, so they sit on the floor of the accuracy axis.
        x = [_params(t) for t in rejected]
        cross = {"symbol": "x", "color": "grey"}
        figure.add_trace(
            _scatter(rejected, x, [0.0] * len(x), REJECTED_TRACE, mode="markers", marker=cross)
        )
    if budget is not None:
        line = {"dash": "dash", "color": "red"}
        figure.add_trace(
            go.Scatter(x=[budget, budget], y=[0.0, 1.0], mode="lines", line=line, name=BUDGET_TRACE)
        )
    # Log scale: candidates span orders of magnitude, rejected ones especially.
    figure.update_layout(title=title, xaxis_title="parameters", xaxis_type="log", **_ACCURACY_AXIS)
    return _Section("params_vs_accuracy", title, figure)


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
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return _Section("importances", title, None, "Needs at least two complete trials.")
    evaluator, method = _importance_evaluator()
    try:
        with warnings.catch_warnings():  # e.g. "importances will be equal" on tiny studies
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as error:  # optuna raises several types for degenerate studies
        return _Section("importances", title, None, f"Not computed: {error}")
    if not importances:
        return _Section("importances", title, None, "No parameter is shared by the trials.")
    names = list(importances)[::-1]  # most important at the top of a horizontal bar chart
    figure = go.Figure(
        go.Bar(x=[importances[n] for n in names], y=names, orientation="h", name="importance")
    )
    figure.update_layout(title=title, xaxis_title=f"importance ({method})", yaxis_title="parameter")
    return _Section("importances", title, figure)


def _intermediate_section(trained: list[FrozenTrial]) -> _Section:
    title = "Validation accuracy per epoch"
    curves = [t for t in trained if t.intermediate_values]
    if not curves:
        return _Section("intermediate", title, None, "No trial has reported an epoch yet.")
    figure = go.Figure()
    for trial in curves:
        epochs = sorted(trial.intermediate_values)
        figure.add_trace(
            go.Scatter(
                x=epochs,
                y=[trial.intermediate_values[e] for e in epochs],
                mode="lines+markers",
                name=f"trial {trial.number}",
                hovertext=architecture_summary(trial),
            )
        )
    figure.update_layout(title=title, xaxis_title="epoch", **_ACCURACY_AXIS)
    return _Section("intermediate", title, figure)


def _sections(study: optuna.Study, trials: list[FrozenTrial]) -> list[_Section]:
    trained = [t for t in trials if records.is_trained(t)]
    return [
        _history_section(trained),
        _params_section(trained, [t for t in trials if _is_rejected(t)], _budget(study)),
        _importance_section(study, trials),
        _intermediate_section(trained),
    ]


def build_figures(study: optuna.Study) -> dict[str, go.Figure]:
    """The report's figures by key (`history`, `params_vs_accuracy`, `importances`,
    `intermediate`); a figure the study has no data for is left out."""
    sections = _sections(study, study.get_trials(deepcopy=False))
    return {s.key: s.figure for s in sections if s.figure is not None}


def _ranked(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    trained = [t for t in trials if records.is_trained(t)]
    return sorted(trained, key=lambda t: (-trial_accuracy(t), t.number))


def top_trials(study: optuna.Study, count: int = 10) -> list[FrozenTrial]:
    """The `count` trained trials with the highest validation accuracy, best first."""
    return _ranked(study.get_trials(deepcopy=False))[:count]


def _header_html(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    budget = _budget(study)
    counts = Counter(records.classify(t) for t in trials)
    trained = [t for t in trials if records.is_trained(t)]
    rows: list[tuple[str, object]] = [
        ("study", study.study_name),
        ("budget", f"{budget:,} parameters" if budget is not None else "not recorded"),
        ("dataset", study.user_attrs.get(records.DATASET, "not recorded")),
        ("trained", len(trained)),
        *((kind.value, counts[kind]) for kind in records.TrialKind),
    ]
    # The best complete trial, as optuna's `study.best_trial` (the one a retrain picks).
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (trial_accuracy(t), -t.number), default=None)
    best_text = NO_FINISHED_TRIAL if best is None else _hover(best).replace("<br>", ", ")
    rows.append(("best trial", best_text))
    body = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in rows
    )
    return f"<table class='summary'>{body}</table>"


def _top_table_html(study: optuna.Study, trials: list[FrozenTrial], count: int) -> str:
    ranked = _ranked(trials)[:count]
    if not ranked:
        return f"<p>{NO_FINISHED_TRIAL}</p>"
    columns = (
        "rank|trial|state|best val accuracy (any epoch)|params|architecture|s / epoch"
        "|test accuracy (retrain)|run folder"
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns.split("|"))
    rows = []
    for rank, trial in enumerate(ranked, start=1):
        params = _params(trial)
        seconds = trial.user_attrs.get(records.SECONDS_PER_EPOCH)
        retrained = records.retrain_record(study.user_attrs, trial)
        test = retrained["test_accuracy"] if retrained else None
        cells = [
            str(rank),
            str(trial.number),
            trial.state.name.lower(),
            _percent(trial_accuracy(trial)),
            f"{params:,}" if params is not None else "-",
            architecture_summary(trial),
            f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "-",
            _percent(test) if isinstance(test, (int, float)) else "-",
            str(retrained.get("run_dir") or "-") if retrained else "-",
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table class='top'><tr>{head}</tr>{''.join(rows)}</table>"


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
p.note { color: #555; font-style: italic; }
"""


def render_report(study: optuna.Study, top: int = 10) -> str:
    """The whole report as one HTML document with plotly.js embedded once."""
    trials = study.get_trials(deepcopy=False)  # read once: every part describes the same trials
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>NAS report: {html.escape(study.study_name)}</title>",
        f"<style>{_STYLE}</style>",
        # Embedded, never a CDN link: the report must open on a machine without internet.
        f"<script type='text/javascript'>{get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>NAS report: {html.escape(study.study_name)}</h1>",
        _header_html(study, trials),
    ]
    for section in _sections(study, trials):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.figure is None:
            parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
        else:
            # A fixed height: "100%" of a page-flow div can collapse to nothing.
            figure_html = section.figure.to_html(
                full_html=False, include_plotlyjs=False, default_height="480px"
            )
            parts.append(figure_html)
    parts.append(f"<h2>Top {top} trials by validation accuracy</h2>")
    parts.append(_top_table_html(study, trials, top))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(study: optuna.Study, path: str | Path, top: int = 10) -> Path:
    """Write the report of `study` to `path` (parents created) and return the path.

    Written atomically (`nas.files`), so a reader (or a crash) never sees half a report.
    """
    return write_atomic(path, render_report(study, top))
