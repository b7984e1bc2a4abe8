"""Owns which RUNNING trials are stale, and failing them: a trial whose process is gone (this
machine's, by its process id), whose heartbeat stopped (any machine's, `nas.store.steady`), or whose
objective never started; each is failed and its candidate queued again, so no trial stays
RUNNING and nothing is lost. Also what a trial records first so that others can tell
(`worker_record`), and telling, in the process that trained it, a trial another process failed
meanwhile (`TrialWatch`).

Claims:
- A trial of a live process that another process failed while it trained (its heartbeat
  stalled past the grace period, e.g. the process was paused or the store was away) is known as
  lost once its objective ends or its next write is refused: `TrialWatch.lost` says so, and
  the search goes on without counting it (nas.search.loop); any other error is not taken for
  one.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from nas import records, trial_view
from nas.store.opening import stale_trial_callback
from nas.store.steady import SteadyStore, beat_age


class StaleTrialReaper:
    """Fails the RUNNING trials whose process is gone, and re-enqueues their candidates.

    Each call fails:
    - a trial whose objective recorded this machine's host and a process id that no longer
      exists (`records.WORKER`): at once;
    - a trial whose heartbeat (`nas.store.steady`, any machine, any store) is older than
      `grace`, once `store` (this process's view of the study store) has been steady for
      `grace` seconds: no beat lands while the store is away, so right after an outage every
      live trial's beat is late (a PostgreSQL restart must not fail the trials it paused);
    - a trial whose objective never started (no `records.WORKER`) and that this reaper has seen
      RUNNING for `grace` seconds: a live objective records its worker within milliseconds.
    Trials of live processes, and those of other machines (their heartbeats decide), are left.
    A failed candidate is queued again (its parameters, as Optuna's retry does); a failed
    confirmation claim (`nas.search.confirm`) is not: it holds no candidate, and a queued copy
    would be taken for a new candidate's trial that no count ever sees.
    """

    def __init__(self, grace: float, store: SteadyStore | None = None, max_retry: int = 2):
        self.grace, self.store = grace, store
        self.max_retry = max_retry
        self.first_seen: dict[int, float] = {}  # trial number -> when first seen without worker

    def __call__(self, study: optuna.Study) -> list[int]:
        """Fail stale trials; returns the numbers this call failed."""
        now, seen, reaped = time.monotonic(), {}, []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(records.WORKER)
            if isinstance(worker, dict):
                host, pid = worker.get(records.WORKER_HOST), worker.get(records.WORKER_PID)
                gone = host == socket.gethostname() and not _alive(pid)
                age = beat_age(trial)
                if not gone and (age is None or age < self.grace or self.just_back()):
                    continue
            else:
                seen[trial.number] = self.first_seen.get(trial.number, now)
                if now - seen[trial.number] < self.grace:
                    continue
            if self._fail(study, trial.number):
                reaped.append(trial.number)
        self.first_seen = seen
        return reaped

    def just_back(self) -> bool:
        """Whether the store came back from an outage less than a grace period ago."""
        return self.store is not None and self.store.steady_for() < self.grace

    def _fail(self, study: optuna.Study, number: int) -> bool:
        try:
            failed = study.tell(number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # finished meanwhile (Optuna's types vary by version)
            return False
        if trial_view.classify(failed) == trial_view.TrialKind.CONFIRMATION:
            return True  # a claim holds no candidate: failing it frees its trial to be claimed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            stale_trial_callback(self.max_retry)(study, failed)  # re-enqueue, as Optuna would
        return True


# what Optuna raises when the trial it tells was finished by another process: a ValueError
# ("Cannot tell a FAIL trial."), UpdateFinishedTrialError from the store, or, under Optuna 5,
# the AssertionError of its own "Should not reach." when a trial whose objective returned was
# found FAIL
TOLD_ELSEWHERE = (ValueError, AssertionError, optuna.exceptions.UpdateFinishedTrialError)


class TrialWatch:
    """An objective, watched: which trial it ran, and whether it ended (a result, pruned, or a
    write the store refused because the trial was finished), so that after Optuna's tell fails
    the search can tell a trial another process failed from a bug (`lost`)."""

    def __init__(self, objective: Callable[[optuna.Trial], Any]):
        self.objective = objective
        self.number: int | None = None
        self.ended = False

    def __call__(self, trial: optuna.Trial) -> Any:
        self.number, self.ended = trial.number, False
        try:
            value = self.objective(trial)
        except (optuna.TrialPruned, optuna.exceptions.UpdateFinishedTrialError):
            self.ended = True
            raise
        self.ended = True
        return value

    def lost(self, study: optuna.Study) -> str | None:
        """If another process finished the trial this process ran, the line that says so."""
        if self.number is None or not self.ended:
            return None
        for trial in study.get_trials(deepcopy=False):
            if trial.number == self.number and trial.state.is_finished():
                return (
                    f"trial {trial.number} was failed by another process while it trained here "
                    "(its heartbeat stalled past the grace period); its result is not counted "
                    "and its candidate is tried again"
                )
        return None


def worker_record() -> dict[str, Any]:
    """What a trial's objective records first (`records.WORKER`): where it runs."""
    return {records.WORKER_HOST: socket.gethostname(), records.WORKER_PID: os.getpid()}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
