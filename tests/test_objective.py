"""What one trial of the search does (nas.search.objective), each claim through a real `Objective`
on a real SQLite store: what a trained trial records and returns, the gate's rejections, the
reuse of an architecture trained before or being trained by another worker, the race for the
target's last places, a Pareto study's values and curve, a stop request, the pruner, and a
training that breaks (a loss that diverges, a device that runs out of memory)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.arch.space import SearchSpace
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.costs.budgets import Budgets
from nas.costs.latency import Latency
from nas.data.device_memory import PinnedMemoryError
from nas.data.loading import TensorData, load_splits
from nas.errors import StopRequested, UserError
from nas.search.loop import run_search
from nas.search.objective import Objective
from nas.train.model import build_model

TINY = Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml"
DATA = DataConfig(dataset="synthetic", subset=48, synthetic_size=100)
RECIPE = Recipe(epochs=1, batch_size=16, augment="none")
MACHINE = Machine(device="cpu")  # 3 steps an epoch


def search(tmp_path: Path, recipe: Recipe, **kwargs) -> list[optuna.trial.FrozenTrial]:
    """Search until 2 candidates in a row went untrained; the trials the store then holds."""
    url = f"sqlite:///{tmp_path}/s.db"
    config = SearchConfig(
        space=str(TINY), budget=10**9, trials=1, storage=url, study="s", max_rejections=2
    )
    with pytest.raises(UserError):  # nothing trains, so the search gives up after 2
        run_search(config, DATA, recipe, MACHINE, **kwargs)
    return optuna.load_study(study_name="s", storage=url).trials


class ExhaustingImages(torch.Tensor):
    """Training images whose every slice fails the way a full device fails (torch's own
    OutOfMemoryError), as the batches of a candidate too large for the device would."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_running_out_of_memory_while_training_prunes_the_trial_with_its_reason(tmp_path):
    splits = load_splits(DATA)
    train = TensorData(splits.train.images.as_subclass(ExhaustingImages), splits.train.labels)
    trials = search(tmp_path, RECIPE, splits=dataclasses.replace(splits, train=train))
    assert len(trials) == 2
    for trial in trials:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs[records.PRUNE_REASON] == "out of memory on cpu"
        assert trial.user_attrs[records.OUT_OF_MEMORY] == "cpu"
        assert trial_view.classify(trial) == trial_view.TrialKind.FAILED


def test_only_a_failure_of_the_devices_own_memory_is_recorded_as_out_of_memory():
    from nas.data.device_memory import MemoryFailure
    from nas.search.objective import out_of_device_memory

    assert out_of_device_memory(MemoryFailure("out of memory", device_memory=True)) is True
    refused = MemoryFailure("cuDNN does not support this layer", device_memory=False)
    assert out_of_device_memory(refused) is False  # cuDNN refusing a layer, pinned host memory
    assert out_of_device_memory(None) is True  # a gate rejection of an older verdict


def test_a_trained_trial_records_its_epochs_best_loss_best_accuracy_and_pace(tmp_path):
    from nas.search.objective import record_training
    from nas.train.state import EpochRow

    def row(epoch, val_loss, val_accuracy, seconds):
        return EpochRow(epoch, 1.0, 0.4, val_loss, val_accuracy, 1e-3, seconds)

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}", direction="maximize")
    # the lowest loss (epoch 2) and the highest accuracy (epoch 3) are different epochs
    record_training(
        study.ask(), [row(1, 0.9, 0.5, 2.0), row(2, 0.7, 0.55, 3.0), row(3, 0.8, 0.6, 4.0)]
    )
    record_training(study.ask(), [row(1, 0.9, 0.5, 2.0)])
    record_training(study.ask(), [])  # stopped before its first epoch ended
    recorded = [
        {key: trial.user_attrs.get(key) for key in (
            records.TRAINED, records.EPOCHS, records.BEST_VAL_LOSS, records.BEST_VAL_ACCURACY,
            records.SECONDS_PER_EPOCH,
        )}
        for trial in study.get_trials()
    ]  # fmt: skip
    assert [list(attrs.values()) for attrs in recorded] == [
        [True, 3, 0.7, 0.6, 3.0],
        [True, 1, 0.9, 0.5, 2.0],
        [True, 0, None, 0.0, 0.0],
    ]


# ---- one trial, driven directly: a real Objective on a real SQLite study --------------------

SPACE = SearchSpace.resolve("tiny")
CPU = Machine(device="cpu")
TWO_EPOCHS = Recipe(epochs=2, batch_size=16, augment="none")
ANY_SIZE = Budgets(params=10**6)  # every tiny candidate is within it
ARCH = Architecture((8, 12), (1, 1), conv_kernel=3, skip_kernel=1, stem=8)
OTHER = Architecture((8, 16), (1, 1), conv_kernel=3, skip_kernel=1, stem=8)


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataConfig(dataset="synthetic", subset=16, synthetic_size=40))


def new_study(tmp_path: Path, **kwargs) -> optuna.Study:
    if "directions" not in kwargs:
        kwargs["direction"] = "maximize"
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", **kwargs)


def ask(study: optuna.Study, arch: Architecture = ARCH) -> optuna.Trial:
    """A trial that will sample `arch` (as a warm start or a retry enqueues one)."""
    study.enqueue_trial(SPACE.params_for(arch))
    return study.ask()


def compact(arch: Architecture) -> str:
    """The architecture as a trial records it: JSON without spaces."""
    return json.dumps(arch.to_dict(), separators=(",", ":"))


def untrained_keys(trial: optuna.trial.FrozenTrial) -> set[str]:
    """The records only a training writes, that `trial` has."""
    keys = {records.TRAINED, records.EPOCHS, records.DEVICE, records.STOPPED_AFTER_EPOCH}
    return keys & set(trial.user_attrs)


def params_of(arch: Architecture) -> int:
    """The built model's parameter count, as torch counts it."""
    return sum(p.numel() for p in build_model(arch).parameters())


def test_a_trained_trial_records_its_candidate_and_device_and_returns_its_best_epoch(
    tmp_path, splits, capsys
):
    study = new_study(tmp_path)
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, ANY_SIZE)
    assert objective.training is None  # no trial to retry if the search stops before one
    trial = ask(study)
    value = objective(trial)
    # quiet: the search shows a line per finished trial and its bar; no epoch bar within it
    assert capsys.readouterr() == ("", "")
    study.tell(trial, value)
    done = study.trials[0]
    attrs = done.user_attrs
    assert attrs[records.WORKER] == {"host": socket.gethostname(), "pid": os.getpid()}
    assert attrs[records.PARAMS] == params_of(ARCH)
    assert json.loads(attrs[records.ARCHITECTURE]) == ARCH.to_dict()
    assert " " not in attrs[records.ARCHITECTURE]  # one line, as the dashboard shows it
    assert attrs[records.ARCH_LINE] == "8,12 / 1,1 / k3 / s1 / stem8"
    assert attrs[records.DEVICE] == "cpu"
    assert attrs[records.TRAINED] is True and attrs[records.EPOCHS] == 2
    assert sorted(done.intermediate_values) == [1, 2]  # each epoch's accuracy, at its epoch
    assert value == max(done.intermediate_values.values()) == attrs[records.BEST_VAL_ACCURACY]
    # the samplers see the budget as the excess's share of it (<= 0: within it)
    assert done.constraints == {"params_excess": (params_of(ARCH) - 10**6) / 10**6}
    assert objective.training is None


def test_a_candidate_starts_from_the_recipes_seed_whatever_ran_before(tmp_path, splits):
    def best_loss(seed: int, disturbance: int, folder: str) -> float:
        torch.manual_seed(disturbance)  # what earlier code left in torch's generator
        (tmp_path / folder).mkdir()
        study = new_study(tmp_path / folder)
        recipe = Recipe(**{**TWO_EPOCHS.to_dict(), "seed": seed})
        objective = Objective(SPACE, splits, recipe, CPU, ANY_SIZE)
        trial = ask(study)
        study.tell(trial, objective(trial))
        return study.trials[0].user_attrs[records.BEST_VAL_LOSS]

    assert best_loss(0, disturbance=1, folder="a") == best_loss(0, disturbance=2, folder="b")
    assert best_loss(0, disturbance=1, folder="c") != best_loss(1, disturbance=1, folder="d")


def test_a_candidate_over_budget_is_pruned_before_training_with_what_it_broke(tmp_path, splits):
    study = new_study(tmp_path)
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, Budgets(params=100))
    with pytest.raises(optuna.TrialPruned) as pruned:
        objective(ask(study))
    rejected = study.trials[0]
    over = params_of(ARCH) - 100
    assert rejected.user_attrs[records.OVER_BUDGET_BY] == {"params": over}
    reason = f"over budget: params {over + 100:,} > 100"
    # Optuna logs a pruned trial with the exception's words: the same reason the trial records
    assert rejected.user_attrs[records.PRUNE_REASON] == str(pruned.value) == reason
    assert rejected.constraints == {"params_excess": over / 100}
    assert records.OUT_OF_MEMORY not in rejected.user_attrs
    assert untrained_keys(rejected) == set() and rejected.intermediate_values == {}
    assert objective.training is None


@pytest.mark.parametrize(
    ("error", "reason", "device_memory"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory."), "does not fit on cpu", True),
        (  # cuDNN refusing a layer: its own reason, and no out_of_memory record
            RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED."),
            "cuDNN does not support one of its layers on cpu",
            False,
        ),
    ],
)
def test_a_candidate_whose_memory_measurement_fails_is_pruned_before_training(
    tmp_path, splits, error, reason, device_memory
):
    def failing_meter(*args):
        raise error

    study = new_study(tmp_path)
    budgets = Budgets(params=10**6, memory_mb=10**4)
    # "auto" reaches the gate resolved: on a GPU machine, the GPU whose memory it must measure
    auto = Machine(device="auto")
    objective = Objective(SPACE, splits, TWO_EPOCHS, auto, budgets, memory_meter=failing_meter)
    with pytest.raises(optuna.TrialPruned):
        objective(ask(study))
    rejected = study.trials[0]
    assert rejected.user_attrs[records.PRUNE_REASON] == reason
    assert rejected.user_attrs[records.OVER_BUDGET_BY] == {}  # no budget broken: unmeasurable
    assert rejected.user_attrs.get(records.OUT_OF_MEMORY) == ("cpu" if device_memory else None)
    assert untrained_keys(rejected) == set() and rejected.intermediate_values == {}


def test_a_latency_an_earlier_trial_of_the_architecture_measured_is_not_measured_again(
    tmp_path, splits
):
    def latency(median_ms: float) -> dict:
        return Latency(median_ms, median_ms, median_ms, runs=30, seconds=0.5).to_dict()

    study = new_study(tmp_path)
    create = optuna.trial.create_trial
    elsewhere = {records.ARCHITECTURE: compact(OTHER), records.LATENCY: latency(7.0)}
    study.add_trial(create(state=TrialState.PRUNED, user_attrs=elsewhere))
    # one rejected by its parameters in a study without a latency budget measured nothing
    unmeasured = {records.ARCHITECTURE: compact(ARCH), records.OVER_BUDGET_BY: {"params": 1}}
    study.add_trial(create(state=TrialState.PRUNED, user_attrs=unmeasured))
    # any state: a trial that broke after its gate had measured it
    measured = {records.ARCHITECTURE: compact(ARCH), records.LATENCY: latency(123.0)}
    study.add_trial(create(state=TrialState.FAIL, user_attrs=measured))
    # a tiny net runs in about a millisecond here: only the recorded 123 ms is over 100
    budgets = Budgets(params=10**6, latency_ms=100.0)
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, budgets)
    with pytest.raises(optuna.TrialPruned):
        objective(ask(study))
    reused = study.trials[3]
    assert reused.user_attrs[records.LATENCY_MS] == 123.0
    assert reused.user_attrs[records.LATENCY] == latency(123.0)
    assert reused.user_attrs[records.OVER_BUDGET_BY] == {"latency": 23.0}


def test_an_architecture_trained_before_is_reused_not_trained_again(tmp_path, splits):
    study = new_study(tmp_path)
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, ANY_SIZE)
    for arch in (OTHER, ARCH):
        study.enqueue_trial(SPACE.params_for(arch))
    study.optimize(objective, n_trials=2)
    trial = ask(study)
    value = objective(trial)
    study.tell(trial, value)
    other, first, again = study.trials
    assert value == first.value and isinstance(value, float)  # one objective: one number
    assert again.state == TrialState.COMPLETE
    assert again.user_attrs[records.DUPLICATE_OF] == first.number == 1
    copied = ("best_val_loss", "best_val_accuracy", "seconds_per_epoch", "device")
    assert {key: again.user_attrs[key] for key in copied} == {
        key: first.user_attrs[key] for key in copied
    }
    assert again.user_attrs["best_val_loss"] != other.user_attrs["best_val_loss"]
    assert untrained_keys(again) == {records.DEVICE} and again.intermediate_values == {}
    assert not trial_view.is_trained(again)


def test_an_architecture_the_pruner_stopped_before_is_a_pruned_duplicate(tmp_path, splits):
    study = new_study(tmp_path)
    same = {records.ARCHITECTURE: compact(ARCH)}
    # a rejection of the same architecture (under other budgets) trained nothing: not reused
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED, user_attrs={**same, records.OVER_BUDGET_BY: {"params": 1}}
        )
    )
    measured = {"best_val_loss": 1.5, "best_val_accuracy": 0.25, "seconds_per_epoch": 2.0}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            user_attrs={**same, **measured, records.TRAINED: True, records.DEVICE: "cuda:0"},
            intermediate_values={1: 0.25},
        )
    )
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, ANY_SIZE)
    with pytest.raises(optuna.TrialPruned):
        objective(ask(study))
    duplicate = study.trials[2]
    assert duplicate.user_attrs[records.PRUNE_REASON] == "duplicate of trial 1, which was pruned"
    assert duplicate.user_attrs[records.DUPLICATE_OF] == 1
    assert {key: duplicate.user_attrs[key] for key in measured} == measured
    assert duplicate.user_attrs[records.DEVICE] == "cuda:0"  # where the original trained
    assert records.TRAINED not in duplicate.user_attrs and duplicate.intermediate_values == {}


def test_an_architecture_another_worker_is_training_is_not_trained_twice(tmp_path, splits):
    """Two workers that sample the same candidate at once: the later trial defers to the
    running one (a duplicate, pruned, not counted) instead of training it a second time."""
    study = new_study(tmp_path)
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, ANY_SIZE)
    running = ask(study)  # the other worker's trial, mid-training
    running.set_user_attr(records.ARCHITECTURE, compact(ARCH))
    ask(study, OTHER).set_user_attr(records.ARCHITECTURE, compact(OTHER))  # a third's
    with pytest.raises(optuna.TrialPruned):
        objective(ask(study))
    second = study.trials[2]
    assert second.user_attrs[records.DUPLICATE_OF] == running.number == 0
    reason = f"duplicate of trial {running.number}, still training"
    assert second.user_attrs[records.PRUNE_REASON] == reason
    assert untrained_keys(second) == set() and second.intermediate_values == {}


def test_a_higher_numbered_worker_training_the_same_architecture_does_not_stop_this_one(
    tmp_path, splits
):
    study = new_study(tmp_path)
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, ANY_SIZE)
    ours = ask(study)
    ask(study).set_user_attr(records.ARCHITECTURE, compact(ARCH))  # asked after ours
    study.tell(ours, objective(ours))
    assert study.trials[0].user_attrs[records.TRAINED] is True


def fill_places(study: optuna.Study) -> optuna.Trial:
    """Trials numbered before ours of every kind; three of them take places: the trained one,
    the one the pruner stopped and the one still running. Returns ours (OTHER's)."""
    other = {records.ARCHITECTURE: "another"}
    create = optuna.trial.create_trial
    study.add_trial(
        create(state=TrialState.COMPLETE, value=0.5, user_attrs={**other, "trained": True})
    )
    study.add_trial(create(state=TrialState.PRUNED, user_attrs={**other, "trained": True}))
    rejected = {**other, records.OVER_BUDGET_BY: {"params": 1}}
    study.add_trial(create(state=TrialState.PRUNED, user_attrs=rejected))
    duplicate = {**other, records.DUPLICATE_OF: 0}
    study.add_trial(create(state=TrialState.COMPLETE, value=0.5, user_attrs=duplicate))
    study.add_trial(create(state=TrialState.FAIL, user_attrs=other))
    study.ask()  # another worker's, running
    ours = ask(study, OTHER)
    study.ask()  # asked after ours: no claim before it
    return ours


@pytest.mark.parametrize(("target", "trains"), [(3, False), (4, True)])
def test_a_trial_whose_places_lower_numbers_took_is_not_needed(tmp_path, splits, target, trains):
    study = new_study(tmp_path)
    ours = fill_places(study)
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, ANY_SIZE, target=target)
    if trains:
        study.tell(ours, objective(ours))
        assert study.trials[ours.number].user_attrs[records.TRAINED] is True
        return
    with pytest.raises(optuna.TrialPruned):
        objective(ours)
    lost = study.trials[ours.number]
    reason = "not needed: other workers' trials fill the target"
    assert lost.user_attrs[records.PRUNE_REASON] == reason
    assert lost.user_attrs[records.NOT_NEEDED] is True
    assert untrained_keys(lost) == set() and lost.intermediate_values == {}


def test_a_pareto_trial_returns_its_accuracy_and_cost_and_records_its_curve(tmp_path, splits):
    # Optuna refuses `report` and `should_prune` with several objectives: neither may be called
    study = new_study(tmp_path, directions=["maximize", "minimize"])
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, ANY_SIZE, pareto_cost="params")
    for _ in range(2):
        study.enqueue_trial(SPACE.params_for(ARCH))
    study.optimize(objective, n_trials=2)
    trained, again = study.trials
    curve = trained.user_attrs[records.CURVE]
    assert len(curve) == 2 and trained.intermediate_values == {}
    assert trained.values == [max(curve), params_of(ARCH)]
    assert again.user_attrs[records.DUPLICATE_OF] == 0 and again.values == trained.values


def test_a_stop_request_after_an_epoch_fails_the_trial_and_names_it_for_a_retry(tmp_path, splits):
    asked = []

    def stop_after_the_second_epoch() -> bool:
        asked.append(True)
        return len(asked) == 2

    study = new_study(tmp_path)
    recipe = Recipe(**{**TWO_EPOCHS.to_dict(), "epochs": 3})
    objective = Objective(
        SPACE, splits, recipe, CPU, ANY_SIZE, should_stop=stop_after_the_second_epoch
    )
    with pytest.raises(StopRequested) as stopped:
        objective(ask(study))
    assert stopped.value.epoch == 2
    cut = study.trials[0]
    assert cut.user_attrs[records.STOPPED_AFTER_EPOCH] == 2
    assert sorted(cut.intermediate_values) == [1, 2]
    assert objective.training == (0, SPACE.params_for(ARCH))  # the search enqueues these again
    # the next trial starts clean: deferring to the stopped one (still RUNNING), it names none
    with pytest.raises(optuna.TrialPruned):
        objective(ask(study))
    assert objective.training is None


class PruneEveryTrial(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_trial_the_pruner_stops_keeps_what_it_measured(tmp_path, splits):
    study = new_study(tmp_path, pruner=PruneEveryTrial())
    recipe = Recipe(**{**TWO_EPOCHS.to_dict(), "epochs": 3})
    objective = Objective(SPACE, splits, recipe, CPU, ANY_SIZE)
    with pytest.raises(optuna.TrialPruned) as pruned:
        objective(ask(study))
    stopped = study.trials[0]
    reason = "stopped by the pruner after epoch 1"
    assert str(pruned.value) == stopped.user_attrs[records.PRUNE_REASON] == reason
    assert stopped.user_attrs[records.TRAINED] is True and stopped.user_attrs[records.EPOCHS] == 1
    assert stopped.user_attrs[records.BEST_VAL_ACCURACY] == stopped.intermediate_values[1]
    assert objective.training is None


@pytest.mark.parametrize(
    ("error", "reason", "device_memory"),
    [
        (
            torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB"),
            "out of memory on cpu",
            True,
        ),
        (
            RuntimeError("Unable to find a valid cuDNN algorithm to run convolution"),
            "no cuDNN algorithm fits on cpu",
            True,
        ),
        (
            RuntimeError("FIND was unable to find an engine to execute this computation"),
            "no cuDNN algorithm fits on cpu",
            True,
        ),
        (  # not memory: its own reason, and no out_of_memory record
            RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if"),
            "cuDNN does not support one of its layers on cpu",
            False,
        ),
        (  # the host's page-locked memory, not the device's
            PinnedMemoryError("pinning (16, 3, 32, 32) host memory: out of memory"),
            "pinned host memory ran out (page-locked host memory for uploads to cpu)",
            False,
        ),
    ],
)
def test_running_out_of_memory_while_training_fails_that_trial_and_the_search_goes_on(
    tmp_path, splits, error, reason, device_memory
):
    """The error rises from inside `fit` (after the first epoch, from the stop check the
    objective is given): the trial is pruned with its reason, the next one trains."""
    raised = []

    def stop_check() -> bool:
        if not raised:
            raised.append(error)
            raise error
        return False

    study = new_study(tmp_path, sampler=optuna.samplers.RandomSampler(seed=0))
    recipe = Recipe(epochs=1, batch_size=16, augment="none")
    objective = Objective(SPACE, splits, recipe, CPU, ANY_SIZE, should_stop=stop_check)
    study.optimize(objective, n_trials=2)
    failed, trained = study.trials
    assert failed.state == TrialState.PRUNED
    assert trial_view.classify(failed) == trial_view.TrialKind.FAILED
    assert failed.user_attrs[records.PRUNE_REASON] == reason
    assert failed.user_attrs.get(records.OUT_OF_MEMORY) == ("cpu" if device_memory else None)
    assert trained.state == TrialState.COMPLETE and trial_view.is_trained(trained)
    assert objective.training is None


def test_a_loss_that_diverges_prunes_the_trial_with_its_reason(tmp_path, splits):
    # Adam moves every weight by about lr in the first step (epoch 1's one batch of 16): the
    # loss of the next, in epoch 2, is not finite
    study = new_study(tmp_path)
    diverging = Recipe(**{**TWO_EPOCHS.to_dict(), "lr": 1e30})
    objective = Objective(SPACE, splits, diverging, CPU, ANY_SIZE)
    trial = ask(study)
    with pytest.raises(optuna.TrialPruned):
        objective(trial)
    study.tell(trial, state=TrialState.PRUNED)
    diverged = study.trials[0]
    reason = diverged.user_attrs[records.PRUNE_REASON]
    assert re.fullmatch(r"non-finite loss: the training loss became (nan|inf) in epoch 2", reason)
    assert trial_view.classify(diverged) == trial_view.TrialKind.FAILED
    assert records.TRAINED not in diverged.user_attrs
    assert objective.training is None


def test_any_other_error_while_training_is_not_taken_for_a_memory_failure(tmp_path, splits):
    def broken_check() -> bool:
        raise ValueError("a bug in the caller's stop check")

    study = new_study(tmp_path)
    objective = Objective(SPACE, splits, TWO_EPOCHS, CPU, ANY_SIZE, should_stop=broken_check)
    with pytest.raises(ValueError, match="a bug in the caller's stop check"):
        objective(ask(study))
    assert records.PRUNE_REASON not in study.trials[0].user_attrs
