"""Owns what one trial of the search does: gate the candidate on the budgets, reuse an identical
architecture's result, or train it, recording each step under the keys of `nas.records`.

Claims:
- The budget gate (`nas.costs.budgets.Gate`) checks every budget before any training: parameters and
  MACs analytically from the sampled values, latency and CUDA memory measured once per
  architecture. An over-budget candidate becomes a PRUNED trial with its costs, `excess` and
  `over_budget_by` (the budgets it broke) set, a reason naming them, and no intermediate values;
  its excesses are the trial's constraints (values <= 0 are feasible). One whose measurement ran
  out of device memory is rejected the same way, with the reason "does not fit on <device>" and
  `records.OUT_OF_MEMORY` naming the device.
- In a Pareto study (`pareto_cost` set) a trained trial's values are (validation accuracy, that
  cost); its per-epoch accuracy is recorded as `records.CURVE` (Optuna keeps no intermediate
  values, and prunes nothing, with several objectives).
- An architecture already trained in the study is not trained again: the trial reuses the
  earlier result and records `duplicate_of`. One that a lower-numbered trial is training right
  now (another worker) is pruned as its duplicate, so two workers never train it side by side.
- A trial that lost the race for the study's last places (a lower-numbered trial got there
  first) is pruned as not needed before training, so the study ends with exactly its target.
- A non-finite loss, or running out of device memory while training (CUDA out-of-memory, or no
  cuDNN algorithm that fits: `nas.data.device_memory.memory_failure`), prunes the trial with the
  reason recorded (it is then FAILED in `trial_view.classify`: no model worth ranking) and the
  search goes on; a memory failure also records the device as `records.OUT_OF_MEMORY`. cuDNN
  refusing a layer (`CUDNN_STATUS_NOT_SUPPORTED`) and pinned host memory running out are pruned
  the same way with their own reason, and record no `records.OUT_OF_MEMORY`.
- `should_stop()` is checked after every epoch: the trial then fails with `StopRequested`, and
  `Objective.training` still names it, so the search can enqueue its parameters again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import TrialState

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.arch.space import SearchSpace
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.costs.budgets import Budgets, Gate, record_verdict
from nas.data.device_memory import MemoryFailure, memory_failure, release_memory
from nas.data.loading import Splits
from nas.errors import StopRequested
from nas.search.reaper import worker_record
from nas.search.samplers import record_constraints
from nas.train.devices import resolve_device
from nas.train.fit import NonFiniteLossError, fit, set_seed
from nas.train.model import build_model
from nas.train.state import EpochRow


def find_trained(study: optuna.Study, architecture: str) -> optuna.trial.FrozenTrial | None:
    """An earlier trial that trained this exact architecture, if any."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if (
            trial_view.is_trained(trial)
            and trial.user_attrs.get(records.ARCHITECTURE) == architecture
        ):
            return trial
    return None


def find_training(study: optuna.Study, architecture: str, number: int) -> int | None:
    """A lower-numbered trial of this architecture that is still running (another worker's),
    if any: two workers sampling the same candidate at once would otherwise both train it."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number < number and trial.user_attrs.get(records.ARCHITECTURE) == architecture:
            return trial.number
    return None


def find_measured(study: optuna.Study, architecture: str) -> dict[str, Any] | None:
    """The attributes of an earlier trial of this architecture that measured its latency or
    memory (any state: a rejected one measured it too), so the gate measures it once."""
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if attrs.get(records.ARCHITECTURE) == architecture and (
            records.LATENCY in attrs or records.MEMORY in attrs
        ):
            return attrs
    return None


class Objective:
    """Gate, deduplicate, train. Raises TrialPruned for rejected and stopped candidates."""

    def __init__(
        self,
        space: SearchSpace,
        splits: Splits,
        recipe: Recipe,
        machine: Machine,
        budgets: Budgets,
        *,
        pareto_cost: str | None = None,
        target: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        memory_meter: Callable[..., Any] | None = None,
    ):
        self.space = space
        self.splits = splits
        self.recipe = recipe
        self.machine = machine
        self.pareto_cost = pareto_cost  # the cost a Pareto study lowers (None: accuracy only)
        self.target = target  # trained candidates the study should hold (None: no limit)
        self.should_stop = should_stop
        self.device = resolve_device(machine.device)
        self.gate = Gate(
            budgets,
            splits.image_shape[-1],
            recipe,
            replace(machine, device=str(self.device)),
            memory_meter=memory_meter,
        )
        self.training: tuple[int, dict[str, Any]] | None = None  # (number, params) while training

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        # first: if this process dies from here on, other runs can tell (nas.search.reaper)
        trial.set_user_attr(records.WORKER, worker_record())
        self.training = None
        arch = self.space.suggest(trial, num_classes=self.splits.num_classes)
        # one line: the dashboard shows attributes on one line (and older studies compare it)
        architecture = json.dumps(arch.to_dict(), separators=(",", ":"))
        trial.set_user_attr(records.PARAMS, count_params(arch))
        trial.set_user_attr(records.ARCHITECTURE, architecture)
        trial.set_user_attr(records.ARCH_LINE, arch.describe())
        verdict = self.gate.check(arch, lambda: find_measured(trial.study, architecture))
        record_verdict(trial, verdict)  # costs and excesses
        record_constraints(trial, verdict.relative)  # the samplers learn every budget from these
        if verdict.rejected:
            attrs: dict[str, Any] = {records.OVER_BUDGET_BY: verdict.broken}
            own = verdict.unfit_on is not None and verdict.shared_by == 1  # not a shared GPU's
            if own and out_of_device_memory(verdict.failure):
                attrs[records.OUT_OF_MEMORY] = verdict.unfit_on
            return self._prune(trial, verdict.reason(self.gate.limits), **attrs)

        twin = find_training(trial.study, architecture, trial.number)
        if twin is not None:  # another worker trains it right now: its result will be the one
            return self._prune(
                trial,
                f"duplicate of trial {twin}, still training",
                **{records.DUPLICATE_OF: twin},
            )
        earlier = find_trained(trial.study, architecture)
        if earlier is not None:
            trial.set_user_attr(records.DUPLICATE_OF, earlier.number)
            for key in records.COPIED_BY_DUPLICATES:
                if key in earlier.user_attrs:
                    trial.set_user_attr(key, earlier.user_attrs[key])
            if earlier.state == TrialState.COMPLETE:
                return earlier.values if self.pareto_cost else earlier.value
            return self._prune(trial, f"duplicate of trial {earlier.number}, which was pruned")
        if self.target is not None and _places_taken_before(trial) >= self.target:
            # another worker asked at the same moment and got a lower number: it trains, not us
            return self._prune(
                trial,
                "not needed: other workers' trials fill the target",
                **{records.NOT_NEEDED: True},
            )
        cost = verdict.costs[self.pareto_cost] if self.pareto_cost else None
        return self._train(trial, arch, cost)

    def _prune(self, trial: optuna.Trial, reason: str, **attrs: Any):
        trial.set_user_attr(records.PRUNE_REASON, reason)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        raise optuna.TrialPruned(reason)

    def _train(
        self, trial: optuna.Trial, arch: Architecture, cost: float | None
    ) -> float | list[float]:
        """Train; the trial's value, or (accuracy, `cost`) in a Pareto study."""
        trial.set_user_attr(records.DEVICE, str(self.device))
        # kept when an interrupt or a stop request escapes, so the search can enqueue a retry
        self.training = (trial.number, dict(trial.params))
        try:
            value = self._fit(trial, arch)
        except optuna.TrialPruned:
            self.training = None
            raise
        self.training = None
        if self.pareto_cost:
            return [value, float(cost)]
        return value

    def _fit(self, trial: optuna.Trial, arch: Architecture) -> float:
        history: list[EpochRow] = []

        def report(row: EpochRow) -> bool:
            history.append(row)
            if self.pareto_cost:  # Optuna keeps no intermediate values with several objectives
                curve = [r.val_accuracy for r in history]
                trial.set_user_attr(records.CURVE, curve)
            else:
                trial.report(row.val_accuracy, row.epoch)
            if self.should_stop is not None and self.should_stop():
                trial.set_user_attr(records.STOPPED_AFTER_EPOCH, row.epoch)
                # Optuna marks the trial FAIL; the search enqueues its parameters again
                raise StopRequested(row.epoch)
            if not self.pareto_cost and trial.should_prune():
                record_training(trial, history)  # a stopped trial keeps what it measured
                self._prune(trial, f"stopped by the pruner after epoch {row.epoch}")
            return False

        model = None
        failure = None
        try:
            set_seed(self.recipe.seed)
            model = build_model(arch)
            result = fit(
                model, self.splits, self.recipe, self.machine, callback=report, progress=False
            )
        except NonFiniteLossError as error:
            return self._prune(trial, f"non-finite loss: {error}")
        except Exception as error:
            failure = memory_failure(error)
            if failure is None:
                raise
            # handled below: the traceback still holds the tensors here
        finally:
            del model
        if failure is not None:
            release_memory()
            device = str(self.device)
            attrs = {records.OUT_OF_MEMORY: device} if out_of_device_memory(failure) else {}
            return self._prune(trial, failure.reason(device), **attrs)
        record_training(trial, result.history)
        return result.best_val_accuracy


def out_of_device_memory(failure: MemoryFailure | None) -> bool:
    """Whether a failure is the device's memory running out (recorded as
    `records.OUT_OF_MEMORY`); a gate rejection without a failure is one (an older verdict)."""
    return failure is None or failure.device_memory


def _places_taken_before(trial: optuna.Trial) -> int:
    """Trained or still running trials numbered before `trial`: they have first claim on the
    target's places."""
    return sum(
        t.number < trial.number and (t.state == TrialState.RUNNING or trial_view.is_trained(t))
        for t in trial.study.get_trials(deepcopy=False)
    )


def record_training(trial: optuna.Trial, history: list[EpochRow]) -> None:
    """Mark a trial trained and record its best validation loss/accuracy and epoch time."""
    seconds = [row.seconds for row in history]
    trial.set_user_attr(records.TRAINED, True)
    trial.set_user_attr(records.EPOCHS, len(history))
    best_loss = min((row.val_loss for row in history), default=None)
    trial.set_user_attr(records.BEST_VAL_LOSS, best_loss)
    best_accuracy = max((row.val_accuracy for row in history), default=0.0)
    trial.set_user_attr(records.BEST_VAL_ACCURACY, best_accuracy)
    trial.set_user_attr(records.SECONDS_PER_EPOCH, sum(seconds) / max(1, len(seconds)))
