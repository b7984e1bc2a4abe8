"""Owns training with the fixed recipe: `fit()` and `evaluate()` (the recipe's settings are
`nas.config.TrainConfig`).

The recipe's defaults reproduce RECIPE.md: Adam at 1e-3, batch 64, ReduceLROnPlateau on the
validation loss (factor 0.1, patience 10), cross entropy, the recipe's augmentation, 150 epochs;
after every epoch the weights with the lowest validation loss so far are kept.

Claims:
- `fit` never touches the test split; `evaluate` is called on it once, by the retrain.
- Every epoch's randomness (shuffle order, augmentation draws) is seeded from `(seed, epoch)`,
  and a checkpoint is written atomically at the end of every epoch. On the CPU a run resumed
  from epoch k ends with bit-for-bit the same weights and history as a run never stopped,
  also when the checkpoint was saved on CUDA with fused optimizer kernels (the optimizer takes
  this device's update implementation back after loading).
- Each epoch's batches come from `nas.batches` (by default augmented in chunks where the model
  is, in the layout `memory_format` picks); every step is `nas.step.TrainingStep` under the
  precision `nas.precision` picks for the device (bf16 at compute 8.0 and up, fp16 with a
  gradient scaler below, fp32 on the CPU), and the loop holds no host synchronisation (losses
  and accuracies accumulate on the device; four `.item()` per epoch: the loss and the accuracy
  of the training steps and of the validation pass).
- The checkpoint holds the fp16 gradient scaler's state, restored on resume; a resume may run
  in another precision or on another device (the precision is a device setting).
- cuDNN autotuning is on for a CUDA run and off on the CPU, for the run only: the process's
  setting is restored when `fit` returns or raises.
- `evaluate` takes loss and accuracy of float32 logits, as the float32 export computes them.
- With `compile`, the model is compiled for static shapes and a smaller last batch runs
  eagerly (no recompilation); the compile time (the first step) is reported apart in
  `FitResult.compile_seconds`, not in epoch 1's seconds.
- A non-finite training loss raises `NonFiniteLossError`, which the search turns into a
  pruned trial.

What is not bit-exact: on CUDA a resumed run is only statistically the same as one never
stopped. cuDNN autotuning may pick other convolution algorithms in the new process, several
convolution backward algorithms sum in a nondeterministic order, and fp16's skipped steps
depend on those sums; the weights then differ in their last bits from the first step on, and
training can grow that difference over the epochs: the resumed run is another sample of the
same training (same data order and augmentation draws), not a copy. (A `deterministic` switch
would slow every CUDA run to make resumes exact; we judged it not worth it.)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nas.augment import normalize_batch
from nas.batches import eval_batch_size, make_batches, memory_format, resolve_data_path
from nas.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from nas.config import TrainConfig
from nas.data import Splits, TensorData
from nas.devices import device_name
from nas.precision import cudnn_autotuning
from nas.step import (
    TrainingStep,
    float_logits,
    make_optimizer,
    reapply_speed_options,
    recipe_precision,
    restore_scaler,
)

# the keys of every history row `fit` records, in the order a CSV shows them
HISTORY_COLUMNS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
)  # fmt: skip

EpochCallback = Callable[[dict[str, Any]], "bool | None"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


@dataclass
class FitResult:
    """What `fit` leaves behind: the history and the lowest-validation-loss weights."""

    history: list[dict[str, Any]]  # one row per epoch: see `fit`
    best_state: dict[str, torch.Tensor]  # CPU copy of the weights at `best_epoch`
    best_epoch: int  # epoch (from 1) with the lowest validation loss; 0 if none ran
    best_val_loss: float
    best_val_accuracy: float  # highest validation accuracy of any epoch (the search's objective)
    stopped_early: bool = False  # the callback asked to stop
    compile_seconds: float = 0.0  # time spent in torch.compile's first steps, apart from epochs
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs_completed(self) -> int:
        return len(self.history)


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` -> a usable device with an index on CUDA (`cuda` is the
    current GPU: `nas.devices.device_name`), or a UserError saying why not."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # asked only for a name without an index: it initialises CUDA in this process
    current = torch.cuda.current_device() if visible and name in ("auto", "cuda") else 0
    return torch.device(device_name(name, visible, current))


def set_seed(seed: int) -> None:
    """Seed the generators that initialise weights (call before building the model)."""
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


# ---- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    splits: Splits,
    config: TrainConfig,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction) of `model` on `data`, normalised only.
    The forward pass runs under the run's precision; loss and argmax are taken of the logits
    in float32, so the accuracy agrees with the float32 export's."""
    device = device or resolve_device(config.device)
    precision = recipe_precision(config, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    layout = memory_format(config, device)
    batch = eval_batch_size(config, data, device)  # fewer images where device memory is short
    for start in range(0, len(data), batch):
        images = data.images[start : start + batch].to(device, non_blocking=True)
        labels = data.labels[start : start + batch].to(device, non_blocking=True)
        inputs = normalize_batch(images, splits.mean, splits.std)
        logits = float_logits(model, inputs.contiguous(memory_format=layout), precision)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    count = max(1, len(data))
    return loss_sum.item() / count, correct.item() / count


# ---- training --------------------------------------------------------------------------------


@dataclass
class _Trainer:
    """What one `fit` trains with: the model, its optimizer and schedule, and the step."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: TrainingStep  # full batches (through torch.compile when asked)
    last_step: TrainingStep  # a smaller last batch: eager, so the compiled graph keeps its shape
    batch_size: int
    compiled: bool


def _make_trainer(model: nn.Module, config: TrainConfig, device: torch.device) -> _Trainer:
    model.to(device=device, memory_format=memory_format(config, device))
    optimizer = make_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
    )
    precision = recipe_precision(config, device)
    eager = TrainingStep(model, optimizer, precision)
    step = eager
    if config.compile:
        # static shapes: one graph for the batch size, never recompiled for another shape
        compiled = torch.compile(model, dynamic=False)
        step = TrainingStep(compiled, optimizer, precision, scaler=eager.scaler)
    return _Trainer(model, optimizer, scheduler, step, eager, config.batch_size, config.compile)


def fit(
    model: nn.Module,
    splits: Splits,
    config: TrainConfig,
    *,
    callback: EpochCallback | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train `model` on `splits.train`, validating on `splits.val` after every epoch.

    Each history row: epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds.
    `callback(row)` runs after each epoch's checkpoint; returning True stops training (the
    search uses it for pruning; it may also raise). With `checkpoint_path`, a checkpoint there
    is resumed from and rewritten atomically after every epoch; `checkpoint_extra` (plain
    values) is stored alongside, e.g. the architecture.
    """
    device = resolve_device(config.device)
    trainer = _make_trainer(model, config, device)
    result = FitResult(
        history=[], best_state={}, best_epoch=0, best_val_loss=math.inf, best_val_accuracy=0.0
    )
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        _resume(load_checkpoint(checkpoint_path), trainer, result)
    result.extra["data_path"] = resolve_data_path(config)
    result.extra["precision"] = trainer.step.precision.name
    # cuDNN autotuning for this run only (fixed shapes: it keeps the fastest algorithms)
    with cudnn_autotuning(device.type == "cuda"):
        batches = make_batches(splits.train, config, splits, device)
        if progress:
            print(batches.describe(), flush=True)  # which data path, and why (device memory)
        first = result.epochs_completed + 1
        bar = tqdm(
            range(first, config.epochs + 1), desc="epochs", unit="epoch", disable=not progress,
            initial=first - 1, total=config.epochs, leave=False,
        )  # fmt: skip
        for epoch in bar:
            row = _run_epoch(trainer, batches, splits, config, device, epoch, result)
            if checkpoint_path is not None:
                save_checkpoint(
                    _checkpoint_state(trainer, result, config, checkpoint_extra), checkpoint_path
                )
            bar.set_postfix(
                train=f"{row['train_accuracy']:.1%}", val=f"{row['val_accuracy']:.1%}",
                loss=f"{row['val_loss']:.3f}",
            )  # fmt: skip
            if callback is not None and callback(row):
                result.stopped_early = True
                break
        bar.close()
    if not result.best_state:  # zero epochs: the initial weights are the best there are
        result.best_state = _cpu_copy(model)
    return result


def _run_epoch(trainer, batches, splits, config, device, epoch: int, result: FitResult) -> dict:
    """Train and validate one epoch; record its row and the best weights in `result`."""
    started = time.perf_counter()
    torch.manual_seed(_epoch_seed(config.seed, epoch))  # any other global draw too
    lr = trainer.optimizer.param_groups[0]["lr"]
    train_loss, train_accuracy, compile_seconds = _train_epoch(
        trainer,
        batches,
        device,
        _epoch_seed(config.seed, epoch),
        time_first_step=trainer.compiled and not result.compile_seconds,
    )
    result.compile_seconds += compile_seconds
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(f"the training loss became {train_loss} in epoch {epoch}")
    val_loss, val_accuracy = evaluate(trainer.model, splits.val, splits, config, device)
    trainer.scheduler.step(val_loss)
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "lr": lr,
        "seconds": time.perf_counter() - started - compile_seconds,  # compile time apart
    }
    result.history.append(row)
    result.best_val_accuracy = max(result.best_val_accuracy, val_accuracy)
    if val_loss < result.best_val_loss:
        result.best_val_loss, result.best_epoch = val_loss, epoch
        result.best_state = _cpu_copy(trainer.model)
    return row


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _train_epoch(
    trainer: _Trainer, batches, device, seed, time_first_step=False
) -> tuple[float, float, float]:
    """Mean loss and accuracy of one epoch, and the seconds of its first step when asked (with
    torch.compile that step compiles the model: its time is reported apart from the epoch)."""
    trainer.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    first_step_seconds = 0.0
    for index, (images, labels) in enumerate(batches.epoch(seed)):
        timed = time_first_step and index == 0
        if timed:
            synchronize(device)
            first_step_started = time.perf_counter()
        full = labels.shape[0] == trainer.batch_size
        loss, logits = (trainer.step if full else trainer.last_step)(images, labels)
        # accumulate on the device: reading a value here would stall the GPU every step
        loss_sum += loss * labels.shape[0]
        correct += (logits.argmax(1) == labels).sum()
        seen += labels.shape[0]
        if timed:
            synchronize(device)
            first_step_seconds = time.perf_counter() - first_step_started
    seen = max(1, seen)
    return loss_sum.item() / seen, correct.item() / seen, first_step_seconds


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it counts that work (a no-op
    on the CPU, which computes as it is called)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _checkpoint_state(trainer: _Trainer, result: FitResult, config, extra) -> dict[str, Any]:
    return {
        "format": 1,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.step.scaler.state_dict(),  # empty unless fp16
        "history": copy.deepcopy(result.history),
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "best_val_accuracy": result.best_val_accuracy,
        "config": config.to_dict(),
        "rng": rng_state(),
        "extra": extra or {},
    }


def _resume(state, trainer: _Trainer, result: FitResult) -> None:
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    reapply_speed_options(trainer.optimizer)  # the saved run's device may have been another
    trainer.scheduler.load_state_dict(state["scheduler"])
    restore_scaler(trainer.step.scaler, state.get("scaler"))  # a resume may change precision
    result.history = list(state["history"])
    result.best_state = state["best_state"]
    result.best_epoch = state["best_epoch"]
    result.best_val_loss = state["best_val_loss"]
    result.best_val_accuracy = state["best_val_accuracy"]
    restore_rng_state(state["rng"])
