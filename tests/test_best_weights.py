"""The weights a user takes home are the lowest-validation-loss ones, not the last: `fit` keeps
them (nas.train.state.FitResult.record) and the retrain scores the test split with them
(nas.run.retrain). Every fixture here has a best epoch that is not the last: after epoch 2 the
classifier's bias for class 0 is pushed up by 50, so epoch 3 predicts class 0 for nearly every
image and its validation loss is far higher than epoch 1's or 2's (one epoch of Adam at 1e-3
moves a bias by hundredths)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.arch.architecture import Architecture
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.loading import load_splits
from nas.errors import StopRequested
from nas.run import folder as run_folder
from nas.run.retrain import retrain
from nas.train.checkpoint import load_checkpoint, save_checkpoint
from nas.train.fit import fit, set_seed
from nas.train.model import build_model
from nas.train.state import EpochRow, FitResult

TINY = Architecture((8, 16), (1, 1), stem=8, num_classes=4)
DATA = DataConfig(dataset="synthetic", synthetic_size=400, synthetic_classes=4)
RECIPE = Recipe(epochs=3, augment="none")
CPU = Machine(device="cpu", workers=0)
SPOIL = 50.0  # added to class 0's logit bias after epoch 2


@pytest.fixture(scope="module")
def splits():
    return load_splits(DATA)


def classifier_bias(model: nn.Module) -> str:
    """The state-dict key of the last linear layer's bias (the logits' bias)."""
    last = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
    return f"{last}.bias"


def hand_loss(state: dict[str, torch.Tensor], images: torch.Tensor, labels, splits) -> float:
    """Mean cross entropy of `TINY` with `state` on uint8 `images`, normalised by hand from the
    split's mean and std (not through nas.data or nas.train)."""
    model = build_model(TINY)
    model.load_state_dict(state)
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model.eval()((images.float() / 255 - mean) / std)
    return F.cross_entropy(logits, labels).item()


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_record_keeps_the_weights_of_the_lowest_validation_loss_only():
    """Rows by hand: losses 0.9, 0.4, 0.7, 0.4 (a tie is no improvement); the weights of the
    second epoch stay, though two more epochs changed them."""
    model = nn.Linear(2, 1)
    result = FitResult()
    seen = {}
    for epoch, (loss, accuracy) in enumerate([(0.9, 0.5), (0.4, 0.6), (0.7, 0.8), (0.4, 0.7)], 1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # each epoch's weights are told apart by value
        seen[epoch] = weights(model)
        result.record(EpochRow(epoch, 1.0, 0.5, loss, accuracy, 1e-3, 1.0), model)
    assert (result.best_epoch, result.best_val_loss) == (2, 0.4)
    assert result.best_val_accuracy == 0.8  # the highest of any epoch (the objective)
    assert torch.equal(result.best_state["weight"], torch.full((1, 2), 2.0))
    assert result.best_state["weight"].data_ptr() != model.weight.data_ptr()  # a copy


def test_fit_keeps_the_best_epochs_weights_when_a_later_epoch_is_worse(splits):
    set_seed(0)
    model = build_model(TINY)
    bias = classifier_bias(model)
    snapshots = {}

    def snapshot_then_spoil(row: EpochRow) -> bool:
        snapshots[row.epoch] = weights(model)
        if row.epoch == 2:
            with torch.no_grad():
                model.state_dict()[bias][0] += SPOIL
        return False

    result = fit(model, splits, RECIPE, CPU, callback=snapshot_then_spoil, progress=False)
    losses = [row.val_loss for row in result.history]
    assert len(losses) == 3 and losses[2] > 10 > max(losses[:2])  # the fixture: 3 is worst
    best = 1 if losses[0] <= losses[1] else 2
    assert (result.best_epoch, result.best_val_loss) == (best, losses[best - 1])
    assert set(result.best_state) == set(snapshots[best])
    for name, tensor in snapshots[best].items():
        assert torch.equal(result.best_state[name], tensor), name
    val = splits.val
    kept = hand_loss(result.best_state, val.images, val.labels, splits)
    assert kept == pytest.approx(losses[best - 1], rel=1e-4)


def test_the_retrain_scores_the_test_split_with_the_best_weights(splits, tmp_path):
    """A retrain stopped after epoch 2, its checkpoint's weights spoiled, then resumed: epoch
    3 is the worst, and metrics.json's test loss and accuracy are those of the weights kept
    (the best epoch's, written to model.safetensors), computed here by hand."""
    run_dir = tmp_path / "run"

    def stop_after_two() -> bool:
        return len(load_checkpoint(run_dir / run_folder.CHECKPOINT)["history"]) == 2

    with pytest.raises(StopRequested):
        retrain(TINY, DATA, RECIPE, CPU, run_dir, progress=False, should_stop=stop_after_two)
    checkpoint = load_checkpoint(run_dir / run_folder.CHECKPOINT)
    stopped = checkpoint["history"]  # epochs 1 and 2, kept by the resume below
    checkpoint["model"][classifier_bias(build_model(TINY))][0] += SPOIL
    save_checkpoint(checkpoint, run_dir / run_folder.CHECKPOINT)

    metrics = retrain(TINY, DATA, RECIPE, CPU, run_dir, progress=False).metrics
    assert metrics.epochs_completed == 3 and metrics.best_epoch in (1, 2)
    last = load_checkpoint(run_dir / run_folder.CHECKPOINT)
    assert last["history"][:2] == stopped  # resumed after epoch 2: not trained again (same times)
    assert last["history"][2]["val_loss"] > 10  # the fixture: epoch 3 is the worst
    test, val = splits.test, splits.val
    kept = run_folder.read_weights(run_dir)  # the best epoch's: its validation loss, by hand
    best_loss = last["history"][metrics.best_epoch - 1]["val_loss"]
    assert hand_loss(kept, val.images, val.labels, splits) == pytest.approx(best_loss, rel=1e-4)
    assert metrics.test_loss == pytest.approx(
        hand_loss(kept, test.images, test.labels, splits), rel=1e-4
    )
    assert hand_loss(last["model"], test.images, test.labels, splits) > 10  # the last weights
    model = build_model(TINY)
    model.load_state_dict(kept)
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    with torch.no_grad():
        predicted = model.eval()((test.images.float() / 255 - mean) / std).argmax(1)
    correct = int((predicted == test.labels).sum())
    assert math.isclose(metrics.test_accuracy, correct / len(test.labels))
