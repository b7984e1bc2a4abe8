"""Owns rank fidelity: would fewer epochs per candidate have ranked a study's candidates the
same? Read from the per-epoch validation accuracies every trial already stores.

What it claims:

- It compares the trained trials that ran every epoch of the study (`trial_view.classify` says
  TRAINED, and there is a finite validation accuracy for each epoch 1..E, E being the recipe's
  `epochs`, or the most epochs any trained trial reported where the study has no recipe).
  Pruned, short, rejected, duplicate and failed trials are left out: they have no epoch E.
- For each epoch k = 1..E it gives Kendall's tau-b (ties counted as ties, not as agreement)
  between the candidates' scores at epoch k and at epoch E. By default a candidate's score at
  epoch k is its best validation accuracy over epochs 1..k: that is exactly what a search with
  `--epochs k` would have ranked it by (the objective is the best epoch's accuracy, and the
  recipe's schedule does not depend on the number of epochs, so the first k epochs of a longer
  run are that shorter run). `running_best=False` compares the accuracy of epoch k itself.
- Below `MIN_TRIALS` full-length trials it says so rather than guess: with fewer than five
  candidates one swapped pair already moves tau by 0.2 or more.
- Under a pruner the full-length trials are the ones it let finish, the better part of the
  study; the correlation is among those, which is the ranking a search cares about (its top).

Imports of `nas` only `nas.records`; of Optuna only its trial types; no torch. Plotly is
imported by `fidelity_figure` alone, so the search summary can use `advice()` without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.trial import FrozenTrial

from nas import records, trial_view

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

MIN_TRIALS = 5  # full-length trials needed before giving advice: below that one swap is noise
THRESHOLD = 0.9  # tau at which a shorter ranking counts as agreeing with the full-length one


@dataclass(frozen=True)
class RankFidelity:
    """Kendall's tau-b between each epoch's ranking and the last epoch's, over `trials`."""

    epochs: int  # E: the study's epochs per candidate
    taus: tuple[float | None, ...]  # taus[k - 1]: epoch k against epoch E; None: undefined
    # (every compared trial scored the same at epoch k or at epoch E)
    trials: int  # full-length trained trials compared
    trial_numbers: tuple[int, ...]  # which ones
    running_best: bool = True  # True: scores are the best accuracy so far (the search's view)
    threshold: float = THRESHOLD  # tau counted as agreement
    min_trials: int = MIN_TRIALS  # fewer full-length trials: no advice

    def tau_at(self, epoch: int) -> float | None:
        """Tau between epoch `epoch` (from 1) and the last epoch."""
        if not 1 <= epoch <= self.epochs:
            raise ValueError(f"epoch must lie in 1..{self.epochs}, got {epoch}")
        return self.taus[epoch - 1]

    @property
    def enough_trials(self) -> bool:
        return self.trials >= self.min_trials

    def agreeing_epoch(self) -> int | None:
        """The earliest epoch k < E from which every later epoch's ranking agrees with epoch E
        at tau >= threshold; None if none does, or if there are too few trials to say."""
        if not self.enough_trials or self.epochs < 2:
            return None
        earliest = None
        for epoch in range(self.epochs - 1, 0, -1):  # walk back while the agreement holds
            tau = self.taus[epoch - 1]
            if tau is None or tau < self.threshold:
                break
            earliest = epoch
        return earliest

    def advice(self) -> str:
        """One line: from which epoch the ranking already agrees, or why it cannot say."""
        count, last = self.trials, self.epochs
        if not self.enough_trials:
            return (
                f"not enough trials to say ({self.min_trials} full-length trials needed, "
                f"{count} so far)"
            )
        if last < 2:
            return f"the {count} full-length trials ran a single epoch: no shorter run to compare"
        if self.taus[last - 1] is None:
            return (
                f"all {count} full-length trials end with the same validation accuracy at epoch "
                f"{last}: there is no ranking to compare"
            )
        epoch = self.agreeing_epoch()
        if epoch is not None:
            return (
                f"ranking at epoch {epoch} already agrees with epoch {last} at tau >= "
                f"{self.threshold:g} (tau {self.taus[epoch - 1]:.2f}) over {count} trials: "
                f"--epochs {epoch} would have ranked these candidates the same"
            )
        before = self.taus[last - 2]
        shown = "undefined" if before is None else f"{before:.2f}"
        return (
            f"no ranking before epoch {last} agrees with epoch {last} at tau >= "
            f"{self.threshold:g} over {count} trials (epoch {last - 1}: tau {shown}): "
            f"fewer epochs would have ranked these candidates differently"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "taus": list(self.taus),
            "trials": self.trials,
            "trial_numbers": list(self.trial_numbers),
            "running_best": self.running_best,
            "threshold": self.threshold,
            "agreeing_epoch": self.agreeing_epoch(),
            "advice": self.advice(),
        }


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two equally long sequences; None where it is undefined (fewer than
    two values, or every value of x or of y equal).

    tau-b = (concordant - discordant) / sqrt((pairs untied in x) * (pairs untied in y)):
    a pair tied in x or in y counts as neither concordant nor discordant."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} and {len(y)})")
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    concordance = 0  # concordant minus discordant pairs
    untied_x = untied_y = 0
    for i in range(len(xs) - 1):  # row by row: memory stays linear in the number of trials
        sign_x = np.sign(xs[i + 1 :] - xs[i])
        sign_y = np.sign(ys[i + 1 :] - ys[i])
        concordance += int(np.sum(sign_x * sign_y))
        untied_x += int(np.count_nonzero(sign_x))
        untied_y += int(np.count_nonzero(sign_y))
    if untied_x == 0 or untied_y == 0:
        return None
    return concordance / math.sqrt(untied_x * untied_y)


def recipe_epochs(study_attrs: dict[str, Any]) -> int | None:
    """The epochs per candidate the study was created with, if it recorded its recipe."""
    recipe = study_attrs.get(records.RECIPE)
    epochs = recipe.get("epochs") if isinstance(recipe, dict) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def full_length_curves(trials: Iterable[FrozenTrial], epochs: int) -> dict[int, list[float]]:
    """Trial number -> validation accuracy of epochs 1..`epochs`, for the trained trials that
    ran all of them (with a finite accuracy each)."""
    curves = {}
    for trial in trials:
        if trial_view.classify(trial) != trial_view.TrialKind.TRAINED:
            continue
        values = trial_view.curve(trial)
        if len(values) != epochs:
            continue
        curve = [values.get(epoch) for epoch in range(1, epochs + 1)]
        if all(v is not None and math.isfinite(v) for v in curve):
            curves[trial.number] = [float(v) for v in curve]
    return curves


def rank_fidelity(
    trials: Iterable[FrozenTrial], epochs: int | None = None, *, running_best: bool = True
) -> RankFidelity:
    """Tau between each epoch's ranking and the last epoch's over the full-length trials.

    `epochs`: the study's epochs per candidate (`recipe_epochs(study.user_attrs)`); None takes
    the most epochs any trained trial reported."""
    trials = list(trials)
    if epochs is None:
        epochs = max(
            (max(trial_view.curve(t), default=0) for t in trials if trial_view.is_trained(t)),
            default=0,
        )
    if epochs < 1:  # no trial has trained an epoch yet
        return RankFidelity(0, (), 0, (), running_best)
    curves = full_length_curves(trials, epochs)
    numbers = tuple(sorted(curves))
    scores = np.array([curves[n] for n in numbers], dtype=float).reshape(len(numbers), epochs)
    if running_best:
        scores = np.maximum.accumulate(scores, axis=1)
    taus = tuple(kendall_tau_b(scores[:, k], scores[:, -1]) for k in range(epochs))
    return RankFidelity(epochs, taus, len(numbers), numbers, running_best)


def study_fidelity(study: optuna.Study, *, running_best: bool = True) -> RankFidelity:
    """`rank_fidelity` of a study, with the epochs of its recorded recipe."""
    return rank_fidelity(
        study.get_trials(deepcopy=False),
        recipe_epochs(study.user_attrs),
        running_best=running_best,
    )


def fidelity_figure(result: RankFidelity) -> go.Figure:
    """Tau per epoch (x: epoch, y: tau in [-1, 1]) with the agreement threshold dashed; no
    title (the report's section heading names it)."""
    import plotly.graph_objects as go  # here only: the search summary needs no plotly

    epochs = list(range(1, result.epochs + 1))
    score = "best validation accuracy so far" if result.running_best else "validation accuracy"
    figure = go.Figure(
        go.Scatter(
            x=epochs,
            y=list(result.taus),  # None leaves a gap: tau undefined at that epoch
            mode="lines+markers",
            name="Kendall tau-b",
            hovertemplate="epoch %{x}: tau %{y:.3f}<extra></extra>",
        )
    )
    figure.add_hline(
        y=result.threshold,
        line_dash="dash",
        line_color="grey",
        annotation_text=f"tau {result.threshold:g}",
        annotation_position="bottom right",
    )
    figure.update_layout(
        xaxis={
            "title": "epoch",
            "tickmode": "linear",
            "tick0": 1,
            "dtick": max(1, math.ceil(result.epochs / 20)),  # integer ticks, at most ~20
            "range": [0.5, result.epochs + 0.5],
        },
        yaxis={
            "title": f"Kendall tau-b with epoch {result.epochs} ({score})",
            "range": [-1.05, 1.05],  # tau's whole range, with room for markers at +-1
            "tickvals": [-1, -0.5, 0, 0.5, 1],
        },
        showlegend=False,
    )
    return figure
