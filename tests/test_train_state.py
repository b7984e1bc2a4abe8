"""What a training run keeps between epochs (nas.train.state): a history row read back refuses
what is not one, a checkpoint says its format, and a resume carries the gradient scaler's loss
scale over (a CPU GradScaler: the same state as CUDA's)."""

from __future__ import annotations

import pytest
import torch

from nas.arch.architecture import Architecture
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.train.fit import make_trainer
from nas.train.model import build_model
from nas.train.state import EpochRow, FitResult, checkpoint_state, resume

ROW = {"epoch": 3, "train_loss": 1.5, "train_accuracy": 0.4, "val_loss": 1.6,
       "val_accuracy": 0.38, "lr": 0.001, "seconds": 2.5}  # fmt: skip


def test_a_history_row_reads_back_and_refuses_what_is_not_one():
    assert EpochRow.from_dict({k: str(v) for k, v in ROW.items()}) == EpochRow(
        3, 1.5, 0.4, 1.6, 0.38, 0.001, 2.5
    )  # a history.csv line: its values as text
    with pytest.raises(ValueError) as refused:
        EpochRow.from_dict({**{k: v for k, v in ROW.items() if k != "lr"}, "momentum": 0.9})
    assert str(refused.value) == (
        "a history row needs exactly epoch, train_loss, train_accuracy, val_loss, "
        "val_accuracy, lr, seconds; missing ['lr'], unknown ['momentum']"
    )
    with pytest.raises(ValueError) as refused:
        EpochRow.from_dict({k: v for k, v in ROW.items() if k != "seconds"})
    assert str(refused.value).endswith("missing ['seconds'], unknown none")
    with pytest.raises(ValueError) as refused:
        EpochRow.from_dict({**ROW, "extra": 1})
    assert str(refused.value).endswith("missing none, unknown ['extra']")


def _trainer():
    model = build_model(Architecture((8,), (1,), stem=8))
    return make_trainer(model, Recipe(), Machine(device="cpu"), torch.device("cpu"))


def test_a_checkpoint_says_its_format_and_a_resume_carries_the_loss_scale_over():
    saved = _trainer()
    # the scale an fp16 run had backed off to
    saved.step.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=256.0)
    state = checkpoint_state(saved, FitResult(), Recipe(), Machine(device="cpu"), None)
    assert state["format"] == 1  # the on-disk layout a reader checks against

    resumed = _trainer()
    resumed.step.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=65536.0)
    resume(state, resumed, FitResult())
    assert resumed.step.scaler.get_scale() == 256.0  # not restarted at 65536


def test_a_checkpoint_holds_the_run_config_and_what_its_caller_asked_to_keep():
    recipe, machine = Recipe(epochs=7, lr=0.003), Machine(device="cpu", precision="fp32")
    state = checkpoint_state(_trainer(), FitResult(), recipe, machine, {"trial": 12})
    # one dict, recipe and machine merged, as checkpoints held it before the two were split
    assert state["config"] == {**recipe.to_dict(), **machine.to_dict()}
    assert state["config"]["epochs"] == 7 and state["config"]["device"] == "cpu"
    assert state["extra"] == {"trial": 12}
    assert checkpoint_state(_trainer(), FitResult(), recipe, machine, None)["extra"] == {}
