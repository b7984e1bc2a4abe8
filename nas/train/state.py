"""Owns what one `nas.train.fit.fit` carries from epoch to epoch and across a resume: the trainer
it builds from the recipe (the model on its device and layout, the optimizer, the schedule and
the training steps), the result it fills epoch by epoch (`FitResult`, one `EpochRow` per
epoch), and the checkpoint of both that a resume restores.

Claims:
- `EpochRow.to_dict()` is the row as it is stored (in the checkpoint, as a history.csv line):
  the keys of `HISTORY_COLUMNS`, in that order; `EpochRow.from_dict` reads it back to the same
  row, also from history.csv's text and from the checkpoints of earlier releases; a stored row
  without exactly those keys is a ValueError.
- The checkpoint holds the fp16 gradient scaler's state, restored on resume; a resume may run
  in another precision or on another device (the precision is a device setting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.train.checkpoint import restore_rng_state, rng_state
from nas.train.optimizer import match_optimizer_state, reapply_speed_options
from nas.train.step import TrainingStep, restore_scaler

# the keys of every stored history row, in the order a CSV shows them
HISTORY_COLUMNS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
)  # fmt: skip


@dataclass(frozen=True)
class EpochRow:
    """One epoch of a fit's history: what `fit` measured after that epoch."""

    epoch: int  # from 1
    train_loss: float  # mean over the epoch's training steps
    train_accuracy: float  # fraction, of the training steps
    val_loss: float  # of the validation pass after the epoch
    val_accuracy: float  # fraction
    lr: float  # the learning rate the epoch trained with
    seconds: float  # wall time of the epoch, torch.compile's first step apart

    def to_dict(self) -> dict[str, Any]:
        """The stored row: `HISTORY_COLUMNS` in order."""
        return {name: getattr(self, name) for name in HISTORY_COLUMNS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRow:
        """A stored row back: a checkpoint's dict, or a history.csv line (its values as text)."""
        missing = [name for name in HISTORY_COLUMNS if name not in data]
        unknown = sorted(set(data) - set(HISTORY_COLUMNS))
        if missing or unknown:
            raise ValueError(
                f"a history row needs exactly {', '.join(HISTORY_COLUMNS)}; "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        return cls(int(data["epoch"]), *(float(data[name]) for name in HISTORY_COLUMNS[1:]))


@dataclass
class FitResult:
    """What `fit` leaves behind: the history and the lowest-validation-loss weights."""

    history: list[EpochRow] = field(default_factory=list)  # one row per epoch
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # weights at `best_epoch`
    best_epoch: int = 0  # epoch (from 1) with the lowest validation loss; 0 if none ran
    best_val_loss: float = math.inf
    best_val_accuracy: float = 0.0  # highest validation accuracy of any epoch (the objective)
    stopped_early: bool = False  # the callback asked to stop
    compile_seconds: float = 0.0  # time spent in torch.compile's first steps, apart from epochs
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs_completed(self) -> int:
        return len(self.history)

    def record(self, row: EpochRow, model: nn.Module) -> None:
        """Add an epoch's history row, keeping a CPU copy of `model`'s weights when its
        validation loss is the lowest so far."""
        self.history.append(row)
        self.best_val_accuracy = max(self.best_val_accuracy, row.val_accuracy)
        if row.val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = row.val_loss, row.epoch
            self.best_state = weights_on_cpu(model)


def weights_on_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `model`'s weights on the CPU (the best ones outlive the training's changes)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class Trainer:
    """What one `fit` trains with: the model, its optimizer and schedule, and the step."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: TrainingStep  # full batches (through torch.compile when asked)
    last_step: TrainingStep  # a smaller last batch: eager, so the compiled graph keeps its shape
    batch_size: int
    compiled: bool


def checkpoint_state(
    trainer: Trainer, result: FitResult, recipe: Recipe, machine: Machine, extra
) -> dict[str, Any]:
    """What `save_checkpoint` writes after an epoch: enough to go on from it."""
    return {
        "format": 1,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.step.scaler.state_dict(),  # empty unless fp16
        "history": [row.to_dict() for row in result.history],
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "best_val_accuracy": result.best_val_accuracy,
        "config": {**recipe.to_dict(), **machine.to_dict()},  # one dict, as before the split
        "rng": rng_state(),
        "extra": extra or {},
    }


def resume(state: dict[str, Any], trainer: Trainer, result: FitResult) -> None:
    """Put a `checkpoint_state` back into `trainer` and `result`, and the random generators."""
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    reapply_speed_options(trainer.optimizer)  # the saved run's device may have been another
    match_optimizer_state(trainer.optimizer)  # and its layout: state follows this run's params
    trainer.scheduler.load_state_dict(state["scheduler"])
    restore_scaler(trainer.step.scaler, state.get("scaler"))  # a resume may change precision
    result.history = [EpochRow.from_dict(row) for row in state["history"]]
    result.best_state = state["best_state"]
    result.best_epoch = state["best_epoch"]
    result.best_val_loss = state["best_val_loss"]
    result.best_val_accuracy = state["best_val_accuracy"]
    restore_rng_state(state["rng"])
