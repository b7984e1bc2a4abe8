"""Owns how the report and the search summary describe one trial in words: its architecture
on one line (`Architecture.describe()`, or why there is none), an accuracy as a percentage, and
the hover text of the trial's points in the report's figures (its state, architecture, costs,
accuracy or the budgets it broke, and whether it was a warm start or a duplicate).
"""

from __future__ import annotations

from optuna.trial import FrozenTrial

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.config.costs import COSTS, cost_label, format_cost


def architecture_summary(trial: FrozenTrial) -> str:
    """The one-line `Architecture.describe()` of a trial, or a dash when it is missing or bad."""
    text = trial.user_attrs.get(records.ARCHITECTURE)
    if not isinstance(text, str):
        return "-"
    try:
        return Architecture.from_json(text).describe()
    except (ValueError, TypeError):
        return "unreadable architecture"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def hover_text(trial: FrozenTrial) -> str:
    """The lines shown on hovering over a trial's point, joined with `<br>` as plotly wants."""
    params = trial_view.params_of(trial)
    lines = [
        f"trial {trial.number} ({trial.state.name.lower()})",
        architecture_summary(trial),
        f"{params:,} params" if params is not None else "params unknown",
        f"val accuracy {percent(trial_view.accuracy(trial))}",
    ]
    costs = [(name, trial_view.cost_of(trial, name)) for name in COSTS if name != "params"]
    lines[3:3] = [format_cost(name, value) for name, value in costs if value is not None]
    if trial_view.is_rejected(trial):
        broken = trial_view.over_budget(trial).items()
        over = ", ".join(f"{cost_label(name)} +{format_cost(name, v)}" for name, v in broken)
        lines[-1] = f"rejected, over budget: {over}" if over else "rejected"
    if records.WARM_START in trial.user_attrs:
        lines.append(f"warm start: {trial.user_attrs[records.WARM_START]}")
    if records.DUPLICATE_OF in trial.user_attrs:
        lines.append(f"same architecture as trial {trial.user_attrs[records.DUPLICATE_OF]}")
    return "<br>".join(lines)
