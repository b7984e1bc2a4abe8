"""Owns the search: study creation (sampler, pruner, records; the store itself is nas.storage),
the budget gate, the objective, stop rules and resume.

Claims:
- Feasibility first: a space whose smallest architecture is over the budget is refused before
  any trial exists.
- The budget gate counts a candidate's parameters analytically from the sampled values before
  any model, tensor or data is touched; an over-budget candidate becomes a PRUNED trial with
  `params` and `over_budget_by` set and no intermediate values, and its excess is handed to the
  sampler as a constraint (`constraints_func`; values <= 0 are feasible).
- `--trials` counts trained candidates over the whole study (every run, every worker); a run
  asks for no new trial once trained + running trials reach the target.
- An architecture already trained in the study is not trained again: the trial reuses the
  earlier result and records `duplicate_of`.
- A study remembers its budget, space text, dataset, recipe and tool version; resuming with a
  different budget or space is refused. Trials left RUNNING by a killed process are failed by
  Optuna's heartbeat check and their parameters retried.
- A non-finite loss or a CUDA out-of-memory error prunes that trial with the reason recorded.
- Several workers (processes, machines) may run the same study against one store: each asks for
  a trial only while trained + running trials are under the target, and a trial that lost a
  race for the last places (a lower-numbered trial got there first) is pruned as "not needed"
  before training, so the study ends with exactly `trials` trained candidates.
- `should_stop()` (e.g. set by SIGTERM) is checked after every epoch and before every new trial:
  the running trial is failed with `StopRequested` after its epoch. A trial interrupted that way
  or by Ctrl-C has its parameters enqueued, so the next run retries it first.
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from nas import __version__
from nas.arch import Architecture, count_flops, count_params
from nas.data import DataConfig, Splits, load_splits
from nas.errors import UserError
from nas.model import build_model
from nas.space import SearchSpace
from nas.storage import DEFAULT_STORAGE, fail_stale_trials, make_storage
from nas.train import NonFiniteLossError, TrainConfig, fit, resolve_device, set_seed

DEFAULT_STUDY = "nas"
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")
METRIC = "val_accuracy"


class StopRequested(Exception):
    """Raised at a safe point (after an epoch, between trials) when a stop was asked for."""

    def __init__(self, epoch: int | None = None):
        self.epoch = epoch  # the last finished epoch, when stopped inside a training run
        where = f" after epoch {epoch}" if epoch is not None else ""
        super().__init__(f"stop requested{where}")


@dataclass(frozen=True)
class SearchConfig:
    """How a search runs; the budget and space are recorded with the study."""

    budget: int = 5_000_000  # most parameters a candidate may have
    trials: int = 50  # trained candidates the study should hold, counted over every run
    space_file: str = "search_spaces/resnet.yaml"  # the YAML search space
    study: str = DEFAULT_STUDY  # study name inside the storage
    storage: str = DEFAULT_STORAGE  # any Optuna storage URL
    sampler: str = "tpe"  # tpe | random | nsga2
    pruner: str = "median"  # median | hyperband | none
    seed: int = 0  # sampler seed (each worker offsets it)
    max_rejections: int = (
        500  # consecutive untrained candidates (over budget, duplicates) before giving up
    )
    heartbeat: int = 30  # seconds between a running trial's heartbeats (RDB storages)
    grace: int = 90  # seconds without a heartbeat after which a RUNNING trial is stale
    poll: float = 5.0  # seconds between checks while other workers' trials are running


@dataclass
class TrialOutcome:
    """What the search reports about each finished trial (for progress lines)."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    params: int
    val_accuracy: float | None
    seconds: float
    note: str  # why it was pruned, or which trial it duplicates


# ---- storage and study -------------------------------------------------------------------------


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=budget_constraint)
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,  # widths and block counts interact through the budget
        group=True,  # 4- and 5-layer candidates have different parameters
        constraints_func=budget_constraint,
        n_startup_trials=10,
    )


def budget_constraint(trial: FrozenTrial) -> tuple[float]:
    """Parameters over the budget (<= 0 is feasible), as recorded by the gate."""
    return (float(trial.user_attrs.get("constraint", 0.0)),)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs))
    # compare with the median only after a few full trials and a third of the epochs
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 3))


# Settings that make trials comparable: a resume must keep them. Devices, workers, folders and
# the seed may change between runs (each machine of a shared study passes its own --seed).
COMPARED_DATA = (
    "dataset", "image_size", "val_fraction", "split_seed", "subset", "synthetic_size",
    "synthetic_classes",
)  # fmt: skip
COMPARED_RECIPE = (
    "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "lr_factor",
    "lr_patience", "augment",
)  # fmt: skip


def open_study(
    config: SearchConfig, space: SearchSpace, data: DataConfig, recipe: TrainConfig
) -> optuna.Study:
    """Create the study or resume it, refusing a resume with another budget or space."""
    storage = make_storage(config.storage, config.heartbeat, config.grace)
    study = optuna.create_study(
        study_name=config.study,
        storage=storage,
        sampler=make_sampler(config.sampler, config.seed),
        pruner=make_pruner(config.pruner, recipe.epochs),
        direction="maximize",
        load_if_exists=True,
    )
    recorded = study.user_attrs
    if "budget" not in recorded:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC])
        for key, value in study_record(config, space, data, recipe).items():
            study.set_user_attr(key, value)
        return study
    how = f"pass --study NEW_NAME to start a new study (the store keeps {config.study!r})"
    if recorded["budget"] != config.budget:
        raise UserError(
            f"study {config.study!r} was created with a budget of {recorded['budget']:,} "
            f"parameters, not {config.budget:,}; {how}"
        )
    if recorded.get("space_text") != space.text:
        raise UserError(
            f"study {config.study!r} was created with another search space "
            f"({recorded.get('space_file')}); {how}"
        )
    # trials trained on other data or with another recipe would not be comparable
    for what, now, keys in (
        ("dataset", data.to_dict(), COMPARED_DATA),
        ("recipe", recipe.to_dict(), COMPARED_RECIPE),
    ):
        before = recorded.get(what, {})
        for key in keys:
            if key in before and before[key] != now.get(key):
                raise UserError(
                    f"study {config.study!r} was created with {key} = {before[key]!r}, not "
                    f"{now.get(key)!r}; repeat the original flags to resume, or {how}"
                )
    return study


def study_record(
    config: SearchConfig, space: SearchSpace, data: DataConfig, recipe: TrainConfig
) -> dict[str, Any]:
    """Everything a retrain needs besides the study name."""
    return {
        "budget": config.budget,
        "space_file": config.space_file,
        "space_text": space.text,
        "dataset": data.to_dict(),
        "recipe": recipe.to_dict(),
        "search": {"sampler": config.sampler, "pruner": config.pruner, "seed": config.seed},
        "tool_version": __version__,
    }


# ---- counting ----------------------------------------------------------------------------------


def is_trained(trial: FrozenTrial) -> bool:
    """Trials whose candidate was really trained (to the end or until the pruner stopped it)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and bool(
        trial.user_attrs.get("trained")
    )


def trial_counts(study: optuna.Study) -> tuple[int, int]:
    """(trained trials, running trials) over the whole study."""
    trials = study.get_trials(deepcopy=False)
    trained = sum(is_trained(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return trained, running


def find_trained(study: optuna.Study, architecture: str) -> FrozenTrial | None:
    """An earlier trial that trained this exact architecture, if any."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if is_trained(trial) and trial.user_attrs.get("architecture") == architecture:
            return trial
    return None


# ---- the objective -----------------------------------------------------------------------------


class Objective:
    """Gate, deduplicate, train. Raises TrialPruned for rejected and stopped candidates."""

    def __init__(
        self,
        space: SearchSpace,
        splits: Splits,
        recipe: TrainConfig,
        budget: int,
        *,
        target: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        self.space = space
        self.splits = splits
        self.recipe = recipe
        self.training: tuple[int, dict[str, Any]] | None = None  # (number, params) while training
        self.budget = budget
        self.target = target  # trained candidates the study should hold (None: no limit)
        self.should_stop = should_stop
        self.device = resolve_device(recipe.device)

    def __call__(self, trial: optuna.Trial) -> float:
        self.training = None
        arch = self.space.suggest(trial, num_classes=self.splits.num_classes)
        params = count_params(arch)
        architecture = json.dumps(arch.to_dict(), separators=(",", ":"))
        trial.set_user_attr("params", params)
        trial.set_user_attr("architecture", architecture)
        trial.set_user_attr("flops", count_flops(arch, self.splits.image_shape[-1]))
        trial.set_user_attr("constraint", params - self.budget)
        if params > self.budget:
            return self._prune(trial, "over budget", over_budget_by=params - self.budget)

        earlier = find_trained(trial.study, architecture)
        if earlier is not None:
            trial.set_user_attr("duplicate_of", earlier.number)
            for key in ("best_val_loss", "best_val_accuracy", "seconds_per_epoch", "device"):
                if key in earlier.user_attrs:
                    trial.set_user_attr(key, earlier.user_attrs[key])
            if earlier.state == TrialState.COMPLETE:
                return earlier.value
            return self._prune(trial, f"duplicate of trial {earlier.number}, which was pruned")
        if self.target is not None and _places_taken_before(trial) >= self.target:
            # another worker asked at the same moment and got a lower number: it trains, not us
            return self._prune(trial, "not needed: other workers' trials fill the target")
        return self._train(trial, arch)

    def _prune(self, trial: optuna.Trial, reason: str, **attrs: Any):
        trial.set_user_attr("prune_reason", reason)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        raise optuna.TrialPruned(reason)

    def _train(self, trial: optuna.Trial, arch: Architecture) -> float:
        trial.set_user_attr("device", str(self.device))
        # kept when an interrupt or a stop request escapes, so run_search can enqueue a retry
        self.training = (trial.number, dict(trial.params))
        try:
            value = self._fit(trial, arch)
        except optuna.TrialPruned:
            self.training = None
            raise
        self.training = None
        return value

    def _fit(self, trial: optuna.Trial, arch: Architecture) -> float:

        history: list[dict[str, Any]] = []

        def report(row: dict[str, Any]) -> bool:
            history.append(row)
            trial.report(row["val_accuracy"], row["epoch"])
            if self.should_stop is not None and self.should_stop():
                trial.set_user_attr("stopped_after_epoch", row["epoch"])
                # Optuna marks the trial FAIL; run_search enqueues its parameters again
                raise StopRequested(row["epoch"])
            if trial.should_prune():
                _record_training(trial, history)  # a stopped trial keeps what it measured
                self._prune(trial, f"stopped by the pruner after epoch {row['epoch']}")
            return False

        model = None
        out_of_memory = False
        try:
            set_seed(self.recipe.seed)
            model = build_model(arch)
            result = fit(model, self.splits, self.recipe, callback=report, progress=False)
        except NonFiniteLossError as error:
            return self._prune(trial, f"non-finite loss: {error}")
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True  # handled below: the traceback still holds the tensors here
        finally:
            del model
        if out_of_memory:
            _free_memory()
            return self._prune(trial, f"out of memory on {self.device}")
        _record_training(trial, result.history)
        return result.best_val_accuracy


def _places_taken_before(trial: optuna.Trial) -> int:
    """Trained or still running trials numbered before `trial`: they have first claim on the
    target's places."""
    return sum(
        t.number < trial.number and (t.state == TrialState.RUNNING or is_trained(t))
        for t in trial.study.get_trials(deepcopy=False)
    )


def _record_training(trial: optuna.Trial, history: list[dict[str, Any]]) -> None:
    """Mark a trial trained and record its best validation loss/accuracy and epoch time."""
    seconds = [row["seconds"] for row in history]
    trial.set_user_attr("trained", True)
    trial.set_user_attr("epochs", len(history))
    trial.set_user_attr("best_val_loss", min((row["val_loss"] for row in history), default=None))
    trial.set_user_attr(
        "best_val_accuracy", max((row["val_accuracy"] for row in history), default=0.0)
    )
    trial.set_user_attr("seconds_per_epoch", sum(seconds) / max(1, len(seconds)))


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the loop ----------------------------------------------------------------------------------


def check_feasible(space: SearchSpace, budget: int, num_classes: int = 10) -> None:
    smallest = count_params(space.smallest(num_classes))
    if smallest > budget:
        raise UserError(
            f"the smallest architecture in {space.source} has {smallest:,} parameters, over the "
            f"budget of {budget:,}; raise --budget or use a space with smaller widths"
        )


def outcome_of(trial: FrozenTrial) -> TrialOutcome:
    attrs = trial.user_attrs
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if (trial.datetime_complete and trial.datetime_start)
        else 0.0
    )
    note = attrs.get("prune_reason", "")
    if "duplicate_of" in attrs and not note:
        note = f"duplicate of trial {attrs['duplicate_of']}"
    accuracy = (
        attrs.get("best_val_accuracy") if attrs.get("trained") or "duplicate_of" in attrs else None
    )
    return TrialOutcome(
        trial.number, trial.state.name, attrs.get("params", 0), accuracy, seconds, note
    )


def prepare_study(
    config: SearchConfig, data: DataConfig, recipe: TrainConfig, splits: Splits | None = None
) -> tuple[SearchSpace, optuna.Study, Splits]:
    """Check the space, device and data, then open (or create) the study and fail its stale
    trials: what a search does first, and what a parent of several workers does once. The data
    is loaded before the study is touched, so a missing dataset leaves the store as it was."""
    space = SearchSpace.load(config.space_file)
    check_feasible(space, config.budget)
    resolve_device(recipe.device)  # refuse an unusable device before anything is stored
    splits = splits or load_splits(data)
    check_feasible(space, config.budget, splits.num_classes)
    study = open_study(config, space, data, recipe)
    # a trial whose worker died while another reached the target must not stay RUNNING
    fail_stale_trials(study)
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
) -> optuna.Study:
    """Run (or resume) the study until it holds `config.trials` trained candidates.

    With `should_stop`, raises `StopRequested` at the next safe point once it returns True:
    after the running trial's epoch (that trial is failed and its parameters enqueued for the
    next run) or before asking for a new trial.
    """
    stop = should_stop or (lambda: False)
    space, study, splits = prepare_study(config, data, recipe, splits)
    if trial_counts(study)[0] >= config.trials:
        return study
    objective = Objective(
        space, splits, recipe, config.budget, target=config.trials, should_stop=stop
    )
    untrained_in_a_row = 0
    finished: list[FrozenTrial] = []  # filled by Optuna's callback after each trial
    while True:
        fail_stale_trials(study)
        trained, running = trial_counts(study)
        if trained >= config.trials:
            return study
        if stop():
            raise StopRequested()
        if trained + running >= config.trials:
            if on_wait is not None:
                on_wait(running)
            _sleep(config.poll, stop)  # another worker's trial may finish the study, or go stale
            continue
        try:
            study.optimize(
                objective,
                n_trials=1,
                gc_after_trial=True,
                callbacks=[lambda _study, trial: finished.append(trial)],
            )
        except (StopRequested, KeyboardInterrupt):
            # Optuna has marked the interrupted trial FAIL; the next run (any worker) retries
            # its candidate first, so the work resumes where it stopped
            if objective.training is not None:
                number, params = objective.training
                study.enqueue_trial(params, user_attrs={"retry_of": number})
            raise
        trial = finished[-1]
        untrained_in_a_row = 0 if is_trained(trial) else untrained_in_a_row + 1
        if on_trial is not None:
            on_trial(outcome_of(trial), trial_counts(study)[0])
        if untrained_in_a_row >= config.max_rejections:
            raise UserError(
                f"the last {untrained_in_a_row} candidates were all over the budget of "
                f"{config.budget:,} or already trained; raise --budget, widen the space, or "
                "lower --trials"
            )


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep, waking early when a stop is requested."""
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
