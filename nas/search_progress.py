"""Owns what the search counts and says as it goes: the study's trained and running trials
(`trial_counts`: `SearchConfig.trials` counts trained ones over the whole study, every run and
worker) and each finished trial's outcome for the progress lines (`TrialOutcome`,
`outcome_of`), read from the one trial classification (`records.classify`).
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import records


@dataclass
class TrialOutcome:
    """What the search reports about each finished trial (for progress lines)."""

    number: int
    kind: records.TrialKind
    params: int
    val_accuracy: float | None
    seconds: float
    note: str  # why it was pruned, or which trial it duplicates


def trial_counts(study: optuna.Study) -> tuple[int, int]:
    """(trained trials, running trials) over the whole study."""
    trials = study.get_trials(deepcopy=False)
    trained = sum(records.is_trained(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return trained, running


def outcome_of(trial: FrozenTrial) -> TrialOutcome:
    kind = records.classify(trial)
    attrs = trial.user_attrs
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if (trial.datetime_complete and trial.datetime_start)
        else 0.0
    )
    note = attrs.get(records.PRUNE_REASON, "")
    if kind == records.TrialKind.DUPLICATE and not note:
        note = f"duplicate of trial {attrs[records.DUPLICATE_OF]}"
    if kind == records.TrialKind.DUPLICATE:
        accuracy = attrs.get(records.BEST_VAL_ACCURACY)  # the earlier trial's, copied
    else:
        accuracy = records.accuracy(trial)
    params = records.params_of(trial) or 0
    return TrialOutcome(trial.number, kind, params, accuracy, seconds, note)
