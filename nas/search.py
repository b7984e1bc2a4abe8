"""Owns the search: study creation (sampler, pruner, the study's records; the store itself is
nas.storage), stop rules and resume. What one trial does is nas.objective.

Claims:
- Feasibility first: a space whose smallest architecture is over the budget is refused before
  any trial exists.
- `trials` counts trained candidates (`records.TrialKind.trained`) over the whole study (every
  run, every worker); a run asks for no new trial once trained + running trials reach it.
- A study remembers its budget, space text, dataset, recipe and tool version; resuming with a
  different budget, space, or any setting declared `kept` on `DataConfig`/`TrainConfig` is
  refused. Trials left RUNNING by a killed process are failed by Optuna's heartbeat check and
  their parameters retried.
- `should_stop()` (e.g. set by SIGTERM) is checked after every epoch and before every new trial:
  the running trial is failed with `StopRequested` after its epoch. A trial interrupted that way
  or by Ctrl-C has its parameters enqueued, so the next run retries it first.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import __version__, records
from nas.arch import PRESET_RECIPES, PRESETS, REPORTED_ACCURACY, count_params
from nas.data import DataConfig, Splits, load_splits
from nas.errors import StopRequested, UserError
from nas.objective import Objective
from nas.samplers import make_pruner, make_sampler
from nas.settings import kept_values
from nas.space import SearchSpace
from nas.storage import DEFAULT_STORAGE, StaleTrialReaper, check_url, open_storage
from nas.train import TrainConfig, resolve_device

DEFAULT_STUDY = "nas"
SEARCH_EPOCHS = 40  # epochs per candidate: the reference study's block-size sweep (README)
MAX_STUDY_NAME = 200  # characters: the report is written to a file named after the study


@dataclass(frozen=True)
class SearchConfig:
    """How a search runs; the budget and space are recorded with the study."""

    budget: int = 5_000_000  # most parameters a candidate may have
    trials: int = 50  # trained candidates the study should hold, counted over every run
    space: str = "resnet"  # a built-in space's name (nas space --list) or a YAML file's path
    study: str = DEFAULT_STUDY  # study name inside the storage
    storage: str = DEFAULT_STORAGE  # any Optuna storage URL
    sampler: str = "tpe"  # tpe | random | nsga2
    pruner: str = "median"  # median | hyperband | none
    seed: int = 0  # sampler seed (each worker offsets it)
    max_rejections: int = 500  # untrained candidates in a row (over budget, duplicates) before
    # giving up: the space is then almost all over the budget
    heartbeat: int = 30  # seconds between a running trial's heartbeats (RDB storages)
    grace: int = 90  # seconds without a heartbeat after which a RUNNING trial is stale
    poll: float = 5.0  # seconds between checks while other workers' trials are running
    max_wait: float = 3600.0  # seconds to wait for other workers' trials that report no epoch
    warm_start: bool = True  # a new study first trains the reference models the space holds

    def __post_init__(self) -> None:
        if not self.study.strip():
            raise UserError("the study name must not be empty; pass --study NAME")
        if len(self.study) > MAX_STUDY_NAME:
            raise UserError(
                f"the study name is {len(self.study):,} characters long; "
                f"use at most {MAX_STUDY_NAME}"
            )
        if self.seed < 0:
            raise UserError(f"the seed must be 0 or more, got {self.seed}")
        if self.trials < 0:  # 0 creates and records the study, and trains nothing
            raise UserError(f"trials must be 0 or more, got {self.trials}")
        if self.heartbeat < 1:
            raise UserError(f"the heartbeat must be 1 second or more, got {self.heartbeat}")


@dataclass
class TrialOutcome:
    """What the search reports about each finished trial (for progress lines)."""

    number: int
    kind: records.TrialKind
    params: int
    val_accuracy: float | None
    seconds: float
    note: str  # why it was pruned, or which trial it duplicates


# ---- the study ---------------------------------------------------------------------------


def open_study(
    config: SearchConfig,
    space: SearchSpace,
    data: DataConfig,
    recipe: TrainConfig,
    announce: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Create the study or resume it, refusing a resume whose trials would not compare."""
    storage = open_storage(config.storage, heartbeat=config.heartbeat, grace=config.grace)
    study = optuna.create_study(
        study_name=config.study,
        storage=storage,
        sampler=make_sampler(config.sampler, config.seed, config.trials),
        pruner=make_pruner(config.pruner, recipe.epochs),
        direction="maximize",
        load_if_exists=True,
    )
    recorded = study.user_attrs
    if records.BUDGET not in recorded:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([records.METRIC_NAME])
        for key, value in study_record(config, space, data, recipe).items():
            study.set_user_attr(key, value)
        if config.warm_start:
            queued = enqueue_reference_models(study, space, config.budget)
            if announce is not None:
                announce(
                    f"warm start: {', '.join(queued)} (the reference study's models) train "
                    "first; --no-warm-start turns this off"
                    if queued
                    else f"warm start: the space {space.name} holds none of the reference "
                    "study's models within the budget; starting from sampled candidates"
                )
        return study
    check_resume(config, recorded, space, data, recipe)
    return study


def check_resume(
    config: SearchConfig,
    recorded: dict[str, Any],
    space: SearchSpace,
    data: DataConfig,
    recipe: TrainConfig,
) -> None:
    """Refuse settings under which the study's trials would not be comparable."""
    how = f"pass --study NEW_NAME to start a new study (the store keeps {config.study!r})"
    if recorded[records.BUDGET] != config.budget:
        raise UserError(
            f"study {config.study!r} was created with a budget of "
            f"{recorded[records.BUDGET]:,} parameters, not {config.budget:,}; {how}"
        )
    if recorded.get(records.SPACE_TEXT) != space.text:
        raise UserError(
            f"study {config.study!r} was created with another search space "
            f"({recorded.get(records.SPACE_FILE)}); {how}"
        )
    for what, now in ((records.DATASET, kept_values(data)), (records.RECIPE, kept_values(recipe))):
        before = recorded.get(what, {})
        for key, value in now.items():
            # a setting the earlier version did not record compares equal to its default
            if key in before and before[key] != value:
                raise UserError(
                    f"study {config.study!r} was created with {key} = {before[key]!r}, not "
                    f"{value!r}; repeat the original flags to resume, or {how}"
                )


def warm_start_models(space: SearchSpace, budget: int) -> list[tuple[str, dict[str, int]]]:
    """The reference study's models that `space` can express within `budget`, best reported
    accuracy first, each architecture once, with the trial parameters that build it."""
    chosen: list[tuple[str, dict[str, int]]] = []
    # the search trains with its own recipe: presets that differ only in theirs are left out
    names = [name for name in REPORTED_ACCURACY if name not in PRESET_RECIPES]
    for name in sorted(names, key=lambda n: -REPORTED_ACCURACY[n]):
        params = space.params_for(PRESETS[name])
        if params is None or count_params(PRESETS[name]) > budget:
            continue
        chosen.append((name, params))
    return chosen


def enqueue_reference_models(study: optuna.Study, space: SearchSpace, budget: int) -> list[str]:
    """Queue the reference models first (`records.WARM_START` names each): a search then
    starts from what the reference study found by hand instead of from random candidates.
    Returns their names."""
    models = warm_start_models(space, budget)
    for name, params in models:
        study.enqueue_trial(params, user_attrs={records.WARM_START: name})
    return [name for name, _ in models]


def study_record(
    config: SearchConfig, space: SearchSpace, data: DataConfig, recipe: TrainConfig
) -> dict[str, Any]:
    """Everything a retrain needs besides the study name."""
    return {
        records.BUDGET: config.budget,
        records.SPACE_FILE: config.space,
        records.SPACE_TEXT: space.text,
        records.DATASET: data.to_dict(),
        records.RECIPE: recipe.to_dict(),
        records.SEARCH: {"sampler": config.sampler, "pruner": config.pruner, "seed": config.seed},
        records.TOOL_VERSION: __version__,
    }


# ---- counting ----------------------------------------------------------------------------


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


# ---- the loop ----------------------------------------------------------------------------


def check_feasible(space: SearchSpace, budget: int, num_classes: int = 10) -> None:
    smallest = count_params(space.smallest(num_classes))
    if smallest > budget:
        raise UserError(
            f"the smallest architecture in {space.source} has {smallest:,} parameters, over the "
            f"budget of {budget:,}; raise --budget or use a space with smaller widths"
        )


def prepare_study(
    config: SearchConfig,
    data: DataConfig,
    recipe: TrainConfig,
    splits: Splits | None = None,
    announce: Callable[[str], None] | None = None,
) -> tuple[SearchSpace, optuna.Study, Splits]:
    """Check the space, device and data, then open (or create) the study and fail its stale
    trials: what a search does first, and what a parent of several workers does once. The data
    is loaded before the study is touched, so a missing dataset leaves the store as it was."""
    check_url(config.storage)
    space = SearchSpace.resolve(config.space)
    check_feasible(space, config.budget)
    resolve_device(recipe.device)  # refuse an unusable device before anything is stored
    splits = splits or load_splits(data)
    check_feasible(space, config.budget, splits.num_classes)
    study = open_study(config, space, data, recipe, announce)
    # a trial whose worker died while another reached the target must not stay RUNNING
    StaleTrialReaper(config.grace)(study)
    return space, study, splits


def run_search(
    config: SearchConfig,
    data: DataConfig,
    recipe: TrainConfig,
    *,
    on_trial: Callable[[TrialOutcome, int], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
    splits: Splits | None = None,
    should_stop: Callable[[], bool] | None = None,
    announce: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Run (or resume) the study until it holds `config.trials` trained candidates.

    With `should_stop`, raises `StopRequested` at the next safe point once it returns True:
    after the running trial's epoch (that trial is failed and its parameters enqueued for the
    next run) or before asking for a new trial.
    """
    stop = should_stop or (lambda: False)
    space, study, splits = prepare_study(config, data, recipe, splits, announce)
    if trial_counts(study)[0] >= config.trials:
        return study
    objective = Objective(
        space, splits, recipe, config.budget, target=config.trials, should_stop=stop
    )
    untrained_in_a_row = 0
    finished: list[FrozenTrial] = []  # filled by Optuna's callback after each trial
    reap = StaleTrialReaper(config.grace)
    waiting = WaitWatch(config.max_wait)
    while True:
        reap(study)
        trained, running = trial_counts(study)
        if trained >= config.trials:
            return study
        if stop():
            raise StopRequested()
        if trained + running >= config.trials:
            waiting.check(study)  # a UserError once other workers' trials stop progressing
            if on_wait is not None:
                on_wait(running)
            _sleep(config.poll, stop)  # another worker's trial may finish the study, or go stale
            continue
        waiting.reset()
        try:
            study.optimize(
                objective,
                n_trials=1,
                gc_after_trial=False,  # collected below, after trained trials only
                callbacks=[lambda _study, trial: finished.append(trial)],
            )
        except (StopRequested, KeyboardInterrupt):
            # Optuna has marked the interrupted trial FAIL; the next run (any worker) retries
            # its candidate first, so the work resumes where it stopped
            if objective.training is not None:
                number, params = objective.training
                study.enqueue_trial(params, user_attrs={records.RETRY_OF: number})
            raise
        trial = finished[-1]
        trained_now = records.is_trained(trial)
        if trained_now:
            gc.collect()  # a trained model's tensors; ~0.6 s, so not after every rejection
        untrained_in_a_row = 0 if trained_now else untrained_in_a_row + 1
        if on_trial is not None:
            on_trial(outcome_of(trial), trial_counts(study)[0])
        if untrained_in_a_row >= config.max_rejections:
            raise UserError(
                f"the last {untrained_in_a_row} candidates were all over the budget of "
                f"{config.budget:,} or already trained; raise --budget, widen the space, or "
                "lower --trials"
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
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        progress = tuple((t.number, len(t.intermediate_values)) for t in running)
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


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep, waking early when a stop is requested."""
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
