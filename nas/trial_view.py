"""Owns a trial read back from its records (`nas.records`): the one classification of a trial
that the search, its summary, the report and the retrain share, its accuracy, curve and costs,
and a study's budgets and objective as it recorded them.

Claims:
- `classify(trial)` puts every trial in exactly one `TrialKind`. "Trained" means the candidate
  was trained and produced a model that ranks: to the end (COMPLETE) or until the pruner
  stopped it. A trial whose training broke (a non-finite loss, out of memory), even after some
  epochs, is FAILED: it produced no model worth ranking and does not count toward `--trials`.
  A confirmation run's claim (a trial carrying `records.CONFIRMS`, `nas.search.confirm`) is
  CONFIRMATION in any state: never a candidate, never counted as running or trained.
- Studies written by earlier versions of the tool read the same (MACs recorded as "flops").

Imports of `nas` only the foundations (`nas.records`, `nas.config.costs`), and of Optuna only
its trial types.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from nas.config.costs import COSTS
from nas.config.fields import is_finite
from nas.records import (
    BEST_VAL_ACCURACY,
    BUDGET,
    BUDGETS,
    CONFIRMS,
    CURVE,
    DUPLICATE_OF,
    MACS,
    NOT_NEEDED,
    OBJECTIVE,
    OBJECTIVE_KIND,
    OBJECTIVE_MINIMIZE,
    OVER_BUDGET_BY,
    PARAMS,
    PRUNE_REASON,
    TRAINED,
)


class TrialKind(Enum):
    """What became of a trial. Every trial is exactly one kind."""

    TRAINED = "trained to the end"
    STOPPED = "stopped early by the pruner"  # trained some epochs: it ranks with its best epoch
    DUPLICATE = "reused an earlier identical architecture"
    REJECTED = "rejected (over budget)"
    NOT_NEEDED = "not needed (other workers filled the target)"
    FAILED = "failed or broke"  # Optuna FAIL, or training broke: non-finite loss, out of memory
    RUNNING = "running"
    WAITING = "waiting to be trained (queued, or the retry of a stopped trial)"
    CONFIRMATION = "claim of a confirmation run"  # bookkeeping: no candidate (nas.search.confirm)

    @property
    def trained(self) -> bool:
        """Counts toward `--trials`, is plotted and ranked."""
        return self in (TrialKind.TRAINED, TrialKind.STOPPED)


def classify(trial: FrozenTrial) -> TrialKind:
    """The one answer to "what became of this trial" (see `TrialKind`)."""
    attrs = trial.user_attrs
    if CONFIRMS in attrs:  # checked first: a claim is RUNNING while its run trains
        return TrialKind.CONFIRMATION
    if trial.state == TrialState.RUNNING:
        return TrialKind.RUNNING
    if trial.state == TrialState.WAITING:
        return TrialKind.WAITING
    if trial.state == TrialState.FAIL:
        return TrialKind.FAILED
    if OVER_BUDGET_BY in attrs:
        return TrialKind.REJECTED
    if DUPLICATE_OF in attrs:
        return TrialKind.DUPLICATE
    if attrs.get(NOT_NEEDED) or str(attrs.get(PRUNE_REASON, "")).startswith("not needed"):
        return TrialKind.NOT_NEEDED  # the second test reads studies of the earlier version
    if trial.state == TrialState.COMPLETE:
        return TrialKind.TRAINED
    if attrs.get(TRAINED):
        return TrialKind.STOPPED
    return TrialKind.FAILED  # pruned without a usable model: its training broke


def is_trained(trial: FrozenTrial) -> bool:
    return classify(trial).trained


def is_rejected(trial: FrozenTrial) -> bool:
    """Rejected over budget: it never trained."""
    return classify(trial) == TrialKind.REJECTED


def accuracy(trial: FrozenTrial) -> float | None:
    """The validation accuracy a trained trial is ranked by, None for any other kind.

    A complete trial's value; for one the pruner stopped, the best accuracy of its epochs."""
    kind = classify(trial)
    if kind == TrialKind.TRAINED and trial.values:
        return float(trial.values[0])  # a Pareto study's first objective is the accuracy
    if kind == TrialKind.STOPPED:
        recorded = trial.user_attrs.get(BEST_VAL_ACCURACY)
        if is_finite(recorded):
            return float(recorded)
        finite = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
        return max(finite) if finite else None
    return None


def curve(trial: FrozenTrial) -> dict[int, float]:
    """Validation accuracy by epoch: Optuna's intermediate values, or, in a Pareto study (where
    Optuna keeps none: it cannot prune several objectives), the recorded `CURVE`."""
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    recorded = trial.user_attrs.get(CURVE)
    if isinstance(recorded, list):
        return {epoch: float(v) for epoch, v in enumerate(recorded, start=1) if is_finite(v)}
    return {}


def params_of(trial: FrozenTrial) -> int | None:
    value = trial.user_attrs.get(PARAMS)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def macs_of(trial: FrozenTrial) -> int | None:
    """Multiply-accumulates per image; studies of the earlier version stored them as `flops`."""
    for key in (MACS, "flops"):
        value = trial.user_attrs.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def cost_of(trial: FrozenTrial, name: str) -> float | None:
    """A trial's recorded cost `name` (a `nas.config.costs` name), None where it was not
    measured."""
    if name == "params":
        return params_of(trial)
    if name == "macs":
        return macs_of(trial)
    value = trial.user_attrs.get(COSTS[name].key)
    return float(value) if is_finite(value) else None


def over_budget(trial: FrozenTrial) -> dict[str, float]:
    """{budget: excess} of the budgets a rejected trial broke ({} for any other trial)."""
    recorded = trial.user_attrs.get(OVER_BUDGET_BY)
    if is_finite(recorded):
        return {"params": recorded}  # the earlier version had one budget
    return dict(recorded) if isinstance(recorded, dict) else {}


def budget_of(study_attrs: dict[str, Any]) -> int | None:
    value = study_attrs.get(BUDGET)
    return int(value) if is_finite(value) else None


def budget_limits(study_attrs: dict[str, Any]) -> dict[str, float]:
    """{cost: limit} of every budget a study has (only parameters in older studies)."""
    limits: dict[str, float] = {}
    params = budget_of(study_attrs)
    if params is not None:
        limits["params"] = params
    recorded = study_attrs.get(BUDGETS)
    if isinstance(recorded, dict):
        for name, cost in COSTS.items():
            if name != "params" and is_finite(recorded.get(cost.key)):
                limits[name] = recorded[cost.key]
    return limits


def objective_of(study_attrs: dict[str, Any]) -> tuple[str, str]:
    """(objective, the cost a Pareto search lowers): ("accuracy", "params") for older studies
    and single-objective ones, whose front is drawn over parameters."""
    recorded = study_attrs.get(OBJECTIVE)
    if isinstance(recorded, dict) and recorded.get(OBJECTIVE_MINIMIZE) in COSTS:
        return str(recorded.get(OBJECTIVE_KIND, "accuracy")), recorded[OBJECTIVE_MINIMIZE]
    return "accuracy", "params"
