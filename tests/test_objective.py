"""What one trial of the search does when its training breaks (nas.search.objective), through a real
`run_search` on a real SQLite store: a loss that diverges to NaN, and a device that runs out
of memory while the candidate trains, each prune the trial with the reason recorded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas import records, trial_view
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.data.loading import TensorData, load_splits
from nas.errors import UserError
from nas.search.loop import run_search

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


def test_a_loss_that_diverges_prunes_the_trial_with_its_reason(tmp_path):
    # Adam moves every weight by about lr in the first step: the second step's loss is not finite
    trials = search(tmp_path, Recipe(**{**RECIPE.to_dict(), "lr": 1e30}))
    assert len(trials) == 2
    for trial in trials:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs[records.PRUNE_REASON].startswith("non-finite loss: ")
        assert trial_view.classify(trial) == trial_view.TrialKind.FAILED


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


def test_a_rejected_candidates_pruning_carries_its_reason(tmp_path):
    # Optuna logs a pruned trial with the exception's words: the same reason the trial records
    from nas.arch.space import SearchSpace
    from nas.costs.budgets import Budgets
    from nas.search.objective import Objective

    splits = load_splits(DataConfig(dataset="synthetic", synthetic_size=40, subset=20))
    space, cpu = SearchSpace.resolve("tiny"), Machine(device="cpu")
    objective = Objective(space, splits, Recipe(epochs=1), cpu, Budgets(params=10))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize")
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned) as pruned:
        objective(trial)
    reason = study.get_trials()[0].user_attrs[records.PRUNE_REASON]
    assert reason.startswith("over budget: params ") and reason.endswith(" > 10")
    assert str(pruned.value) == reason
