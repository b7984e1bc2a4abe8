"""Owns the Pareto front of a study: "the best model at every size", and the retrain picks
that read it (`--pick best`, `--pick smallest-within PCT`).

The front is drawn over the study's cost (`trial_view.objective_of`: what a Pareto search lowers;
parameters for an accuracy search) from the trials trained to the end (`TrialKind.TRAINED`): a
trial the pruner stopped ranks on fewer epochs, so it is neither on the front nor picked, as
`nas retrain` never picks it by default either. A trial is on the front when no other trial
is at least as accurate and at most as costly, and better in one of the two; of identical
points the earliest trial stays. Cheapest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from nas import trial_view


@dataclass(frozen=True)
class Pick:
    """Which trained trial a retrain takes: the most accurate, or the cheapest within `points`
    percentage points of the most accurate."""

    how: str = "best"
    points: float = 0.0  # percentage points below the best accuracy (smallest-within)

    def describe(self) -> str:
        if self.how == "best":
            return "the most accurate trial"
        unit = "point" if self.points == 1 else "points"
        return f"the cheapest trial within {self.points:g} accuracy {unit} of the most accurate"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, accuracy) points no other point dominates, cheapest first.

    A point is dominated when another has no more cost and no less accuracy and differs in
    one of them. Of identical points only the first is kept, so the front line has no repeats.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best_accuracy = -math.inf
    for index in order:
        # Sorted by cost, then accuracy descending: a point is on the front exactly when it
        # beats the accuracy of everything as cheap or cheaper seen before it.
        if points[index][1] > best_accuracy:
            front.append(index)
            best_accuracy = points[index][1]
    return front


def ranked_trials(trials: Sequence[FrozenTrial], cost: str) -> list[FrozenTrial]:
    """Trials trained to the end that recorded `cost`, by number."""
    return [
        t
        for t in trials
        if trial_view.classify(t) == trial_view.TrialKind.TRAINED
        and trial_view.accuracy(t) is not None
        and trial_view.cost_of(t, cost) is not None
    ]


def front(trials: Sequence[FrozenTrial], cost: str) -> list[FrozenTrial]:
    """The trials on the Pareto front of accuracy against `cost`, cheapest first."""
    candidates = ranked_trials(trials, cost)
    points = [(trial_view.cost_of(t, cost), trial_view.accuracy(t)) for t in candidates]
    return [candidates[i] for i in pareto_front(points)]


def pick_trial(trials: Sequence[FrozenTrial], cost: str, pick: Pick) -> FrozenTrial | None:
    """The trial `pick` names (None when no trial was trained to the end).

    best: the highest validation accuracy (the earliest of equals). smallest-within: of the
    trials within `pick.points` percentage points of that accuracy, the one with the least
    `cost` (the more accurate, then the earliest, of equals)."""
    complete = [t for t in trials if trial_view.classify(t) == trial_view.TrialKind.TRAINED]
    if not complete:
        return None
    best = max(complete, key=lambda t: (trial_view.accuracy(t), -t.number))
    if pick.how == "best":
        return best
    floor = trial_view.accuracy(best) - pick.points / 100
    # a float margin, so "within 1 point" keeps 0.93 against 0.94 despite binary rounding
    near = [t for t in ranked_trials(trials, cost) if trial_view.accuracy(t) >= floor - 1e-12]
    if not near:
        return best  # the best recorded no cost (a study of the earlier version)
    return min(near, key=lambda t: (trial_view.cost_of(t, cost), -trial_view.accuracy(t), t.number))
