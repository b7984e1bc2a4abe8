"""Owns what the search counts and says as it goes, and what ends or holds its loop besides
its target: the study's trained and running trials (`trial_counts`: `SearchConfig.trials`
counts trained ones over the whole study, every run and worker), each finished trial's outcome
for the progress lines (`TrialOutcome`, `outcome_of`, read from the one trial classification,
`trial_view.classify`), a streak of untrained candidates (`RejectionStreak`), the bounded wait
for other workers' trials (`WaitWatch`), a sleep that wakes when a stop is requested, and the
parent of several workers reporting each of their trials once (`NewTrials`).

Claims:
- `max_rejections` untrained candidates in a row end the search with a sentence saying why: over
  the budgets (or already trained), or, when every one of them ran out of device memory
  (`records.OUT_OF_MEMORY`), that they did not fit in that device's memory.
- A search waiting for other processes' trials gives up with a sentence naming them once they
  have reported no new epoch for `max_wait` seconds; a new epoch restarts the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import records, trial_view
from nas.config.search import SearchConfig
from nas.costs.budgets import Budgets
from nas.errors import UserError


@dataclass
class TrialOutcome:
    """What the search reports about each finished trial (for progress lines)."""

    number: int
    kind: trial_view.TrialKind
    params: int
    val_accuracy: float | None
    seconds: float
    note: str  # why it was pruned, or which trial it duplicates


def trial_counts(study: optuna.Study) -> tuple[int, int]:
    """(trained trials, running trials) over the whole study."""
    trials = study.get_trials(deepcopy=False)
    trained = sum(trial_view.is_trained(t) for t in trials)
    running = sum(  # a confirmation's claim is RUNNING too, but trains no candidate
        t.state == TrialState.RUNNING and trial_view.classify(t) == trial_view.TrialKind.RUNNING
        for t in trials
    )
    return trained, running


def outcome_of(trial: FrozenTrial) -> TrialOutcome:
    kind = trial_view.classify(trial)
    attrs = trial.user_attrs
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if (trial.datetime_complete and trial.datetime_start)
        else 0.0
    )
    note = attrs.get(records.PRUNE_REASON, "")
    if kind == trial_view.TrialKind.DUPLICATE and not note:
        note = f"duplicate of trial {attrs[records.DUPLICATE_OF]}"
    if kind == trial_view.TrialKind.DUPLICATE:
        accuracy = attrs.get(records.BEST_VAL_ACCURACY)  # the earlier trial's, copied
    else:
        accuracy = trial_view.accuracy(trial)
    params = trial_view.params_of(trial) or 0
    return TrialOutcome(trial.number, kind, params, accuracy, seconds, note)


class RejectionStreak:
    """Untrained candidates in a row, and how many of them ran out of device memory: the
    search ends with a sentence saying why once `config.max_rejections` are reached."""

    def __init__(self, config: SearchConfig, batch_size: int):
        self.config, self.batch_size = config, batch_size
        self.untrained = 0
        self.unfit = 0  # of those, the ones that ran out of device memory
        self.device: str | None = None  # the device the last of them ran out of memory on

    def record(self, trial: FrozenTrial) -> None:
        self.untrained = 0 if trial_view.is_trained(trial) else self.untrained + 1
        self.device = trial.user_attrs.get(records.OUT_OF_MEMORY)
        self.unfit = self.unfit + 1 if self.device is not None else 0

    def check(self) -> None:
        """A UserError once the streak is `max_rejections` long: for memory when every one of
        them ran out of it, else for the budgets."""
        if self.untrained < self.config.max_rejections:
            return
        if self.unfit == self.untrained:
            raise UserError(
                f"the last {self.unfit} candidates did not fit in the memory of {self.device} "
                f"(at a batch of {self.batch_size}); lower --batch-size, use a space with "
                "smaller widths, or use a device with more memory"
            )
        advice = "raise a budget, widen the space, or lower --trials"
        if self.config.sampler == "gp":  # it models COMPLETE trials only: no rejection teaches it
            advice = f"use --sampler tpe, which learns from rejected candidates, or {advice}"
        raise UserError(
            f"the last {self.untrained} candidates were all over the budgets "
            f"({Budgets.of(self.config).describe()}) or already trained; {advice}"
        )


class WaitWatch:
    """Bounds the wait for other workers' trials: the search gives up, with a message, once
    they have reported no epoch and none has finished for `max_wait` seconds."""

    def __init__(self, max_wait: float):
        self.max_wait = max_wait
        self.since: float | None = None  # when the running trials were last seen to progress
        self.last: tuple = ()

    def reset(self) -> None:
        self.since, self.last = None, ()

    def check(self, study: optuna.Study) -> None:
        running = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if trial_view.classify(t) == trial_view.TrialKind.RUNNING  # not a confirmation claim
        ]
        progress = tuple((t.number, len(trial_view.curve(t))) for t in running)
        now = time.monotonic()
        if self.since is None or progress != self.last:
            self.since, self.last = now, progress
            return
        if now - self.since >= self.max_wait:
            numbers = ", ".join(str(t.number) for t in running)
            raise UserError(
                f"waited {(now - self.since) / 60:.0f} minutes for trial(s) {numbers}, which "
                "other processes are running, without a new epoch; if those processes are "
                "gone, their trials are failed once their heartbeats are stale (rerun then), "
                "else rerun when they finish or raise --trials"
            )


def sleep_unless_stopped(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep, waking early when a stop is requested."""
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


class NewTrials:
    """Reports each trial of the study once, when it is first seen finished (the parent of
    several workers, which reads their trials from the store)."""

    def __init__(self, study, on_trial: Callable[[TrialOutcome, int], None] | None):
        self.study = study
        self.on_trial = on_trial
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def report(self) -> None:
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in self.seen:
                self.seen.add(trial.number)
                if trial_view.classify(trial) == trial_view.TrialKind.CONFIRMATION:
                    continue  # a confirmation's claim: bookkeeping, not a candidate
                if self.on_trial is not None:
                    self.on_trial(outcome_of(trial), trial_counts(self.study)[0])
