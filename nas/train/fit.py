"""Owns training with the fixed recipe: `fit()`, the trainer it builds (`make_trainer`: the
model in the machine's layout, the recipe's optimizer and schedule, the step), its epochs and
its steps, and `evaluate`, the
loss and accuracy of a model on a split (the validation pass after every epoch; the retrain's
one pass over the test split). What a fit carries and checkpoints is `nas.train.state`.

The recipe's defaults reproduce the reference study (docs/reference-study.md): Adam at 1e-3,
batch 64, ReduceLROnPlateau on the validation loss (factor 0.1, patience 10), cross entropy, the
recipe's augmentation, 150 epochs; after every epoch the weights with the lowest validation
loss so far are kept.

Claims:
- `fit` never touches the test split (the retrain evaluates it once, after `fit`).
- Every epoch's randomness (shuffle order, augmentation draws) is seeded from `(seed, epoch)` as
  `(seed * 1_000_003 + epoch) mod 2**63`, the same in every release (a checkpoint written by an
  earlier one resumes with the draws it would have had), and a checkpoint is written atomically
  at the end of every epoch. On the CPU a run resumed from epoch k ends with bit-for-bit the
  same weights and history as a run never stopped, also when the checkpoint was saved on CUDA
  with fused optimizer kernels (the optimizer takes this device's update implementation back
  after loading).
- Each epoch's batches come from `nas.data.batches` (by default augmented in chunks where the model
  is, in the layout `memory_format` picks); every step is `nas.train.step.TrainingStep` under the
  precision `nas.train.precision` picks for the device (bf16 at compute 8.0 and up, fp16 with a
  gradient scaler below, fp32 on the CPU), and the loop holds no host synchronisation (losses
  and accuracies accumulate on the device; four `.item()` per epoch: the loss and the accuracy
  of the training steps and of the validation pass).
- cuDNN autotuning is on for a CUDA run and off on the CPU, for the run only: the process's
  setting is restored when `fit` returns or raises.
- While `fit` runs, its device is the current GPU (`nas.train.devices.current_gpu`): with
  `--device cuda:1` the loader's pin-memory thread and any bare `cuda` use GPU 1, not GPU 0;
  on the CPU it initialises no CUDA.
- With `compile`, the model is compiled for static shapes and a smaller last batch runs
  eagerly (no recompilation); the compile time (the first step) is reported apart in
  `FitResult.compile_seconds`, not in epoch 1's seconds.
- `FitResult.extra` records the data path, the precision and the cuDNN autotuning setting
  (`cudnn_benchmark`) the epochs ran with, read inside the run (the setting is restored after).
- A training batch of one image whose deepest feature map is 1x1 (a last batch of one, e.g. 81
  images at batch 16 through the ImageNet stem at 64 px and five layers) is dropped: BatchNorm
  cannot train on one value per channel. No other batch is dropped.
- A non-finite training loss raises `NonFiniteLossError`, which the search turns into a
  pruned trial.
- `evaluate` normalises only (no augmentation), in batches that fit the device
  (`nas.data.batches.eval_batch_size`, from the model's architecture): `fit` sizes them once, at
  its first evaluation, and keeps that size (the same shapes every epoch: no new autotuning),
  and takes loss and accuracy of float32 logits, as the
  float32 export computes them (the forward pass runs under the run's precision,
  `nas.train.step.float_logits`).

What is not bit-exact: on CUDA a resumed run is only statistically the same as one never
stopped. cuDNN autotuning may pick other convolution algorithms in the new process, several
convolution backward algorithms sum in a nondeterministic order, and fp16's skipped steps
depend on those sums; the weights then differ in their last bits from the first step on, and
training can grow that difference over the epochs: the resumed run is another sample of the
same training (same data order and augmentation draws), not a copy. (A `deterministic` switch
would slow every CUDA run to make resumes exact; we judged it not worth it.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nas.arch.counts import deepest_side
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.augment import normalize_batch
from nas.data.batches import eval_batch_size, make_batches, memory_format, resolve_data_path
from nas.data.loading import Splits, TensorData
from nas.train.checkpoint import load_checkpoint, save_checkpoint
from nas.train.devices import current_gpu, resolve_device, synchronize
from nas.train.optimizer import make_optimizer
from nas.train.precision import cudnn_autotuning, precision_for
from nas.train.state import (
    EpochRow,
    FitResult,
    Trainer,
    checkpoint_state,
    resume,
    weights_on_cpu,
)
from nas.train.step import TrainingStep, float_logits

EpochCallback = Callable[[EpochRow], "bool | None"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


def set_seed(seed: int) -> None:
    """Seed the generators that initialise weights (call before building the model)."""
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def make_trainer(
    model: nn.Module, recipe: Recipe, machine: Machine, device: torch.device
) -> Trainer:
    """The model on `device` in the machine's layout, the recipe's optimizer and schedule, and
    its training step under the machine's precision (compiled when the machine asks)."""
    model.to(device=device, memory_format=memory_format(machine, device))
    optimizer = make_optimizer(model, recipe, device)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=recipe.lr_factor, patience=recipe.lr_patience
    )
    precision = precision_for(machine.precision, device)
    eager = TrainingStep(model, optimizer, precision)
    step = eager
    if machine.compile:
        # static shapes: one graph for the batch size, never recompiled for another shape
        compiled = torch.compile(model, dynamic=False)
        step = TrainingStep(compiled, optimizer, precision, scaler=eager.scaler)
    return Trainer(model, optimizer, scheduler, step, eager, recipe.batch_size, machine.compile)


def fit(
    model: nn.Module,
    splits: Splits,
    recipe: Recipe,
    machine: Machine,
    *,
    callback: EpochCallback | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train `model` on `splits.train`, validating on `splits.val` after every epoch.

    Each epoch adds an `EpochRow` (nas.train.state) to the result's history.
    `callback(row)` runs after each epoch's checkpoint; returning True stops training (the
    search uses it for pruning; it may also raise). With `checkpoint_path`, a checkpoint there
    is resumed from and rewritten atomically after every epoch; `checkpoint_extra` (plain
    values) is stored alongside, e.g. the architecture.
    """
    device = resolve_device(machine.device)
    trainer = make_trainer(model, recipe, machine, device)
    result = FitResult()
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        resume(load_checkpoint(checkpoint_path), trainer, result)
    result.extra["data_path"] = resolve_data_path(machine)
    result.extra["precision"] = trainer.step.precision.name
    # cuDNN autotuning for this run only (fixed shapes: it keeps the fastest algorithms); the
    # training GPU is the current one, so the loader's pin-memory thread pins for it, not GPU 0
    with cudnn_autotuning(device.type == "cuda"), current_gpu(device):
        result.extra["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)  # as it ran
        batches = make_batches(splits.train, recipe, machine, splits, device)
        if progress:
            print(batches.describe(), flush=True)  # which data path, and why (device memory)
        first = result.epochs_completed + 1
        bar = tqdm(
            range(first, recipe.epochs + 1), desc="epochs", unit="epoch", disable=not progress,
            initial=first - 1, total=recipe.epochs, leave=False,
        )  # fmt: skip
        for epoch in bar:
            row = _run_epoch(trainer, batches, splits, recipe, machine, device, epoch, result)
            if checkpoint_path is not None:
                save_checkpoint(
                    checkpoint_state(trainer, result, recipe, machine, checkpoint_extra),
                    checkpoint_path,
                )
            bar.set_postfix(
                train=f"{row.train_accuracy:.1%}", val=f"{row.val_accuracy:.1%}",
                loss=f"{row.val_loss:.3f}",
            )  # fmt: skip
            if callback is not None and callback(row):
                result.stopped_early = True
                break
        bar.close()
    if not result.best_state:  # zero epochs: the initial weights are the best there are
        result.best_state = weights_on_cpu(model)
    return result


def _run_epoch(
    trainer, batches, splits, recipe, machine, device, epoch: int, result: FitResult
) -> EpochRow:
    """Train and validate one epoch; record its row and the best weights in `result`."""
    started = time.perf_counter()
    torch.manual_seed(_epoch_seed(recipe.seed, epoch))  # any other global draw too
    lr = trainer.optimizer.param_groups[0]["lr"]
    train_loss, train_accuracy, compile_seconds = _train_epoch(
        trainer,
        batches,
        device,
        _epoch_seed(recipe.seed, epoch),
        time_first_step=trainer.compiled and not result.compile_seconds,
    )
    result.compile_seconds += compile_seconds
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(f"the training loss became {train_loss} in epoch {epoch}")
    if "eval_batch_size" not in result.extra:  # sized once, after the first epoch's training
        arch = getattr(trainer.model, "arch", None)
        result.extra["eval_batch_size"] = eval_batch_size(machine, splits.val, device, arch)
    batch = result.extra["eval_batch_size"]
    val_loss, val_accuracy = evaluate(trainer.model, splits.val, splits, machine, device, batch)
    trainer.scheduler.step(val_loss)
    row = EpochRow(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        lr=lr,
        seconds=time.perf_counter() - started - compile_seconds,  # compile time apart
    )
    result.record(row, trainer.model)
    return row


def _one_value_per_channel(model: nn.Module, images: torch.Tensor) -> bool:
    """A batch of one image whose deepest feature map is 1x1: every BatchNorm there would see
    one value per channel, which training cannot normalise. Only such a batch is dropped, so
    every other epoch trains on exactly the batches it did."""
    arch = getattr(model, "arch", None)  # a ResNet of nas.train.model knows its architecture
    if images.shape[0] != 1 or arch is None:
        return False
    return all(deepest_side(arch, side) == 1 for side in images.shape[-2:])


def _train_epoch(
    trainer: Trainer, batches, device, seed, *, time_first_step: bool
) -> tuple[float, float, float]:
    """Mean loss and accuracy of one epoch, and the seconds of its first step when asked (with
    torch.compile that step compiles the model: its time is reported apart from the epoch)."""
    trainer.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    first_step_seconds = 0.0
    for index, (images, labels) in enumerate(batches.epoch(seed)):
        if _one_value_per_channel(trainer.model, images):
            continue  # BatchNorm cannot train on it: a last batch of one image at a 1x1 map
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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    splits: Splits,
    machine: Machine,
    device: torch.device,
    batch: int | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction) of `model` on `data`, normalised only.
    The forward pass runs under the run's precision; loss and argmax are taken of the logits
    in float32, so the accuracy agrees with the float32 export's. `device` is where `model` is;
    `batch` images at once (None: sized here from the device's free memory)."""
    precision = precision_for(machine.precision, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    layout = memory_format(machine, device)
    if batch is None:  # fewer images where device memory is short
        batch = eval_batch_size(machine, data, device, getattr(model, "arch", None))
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
