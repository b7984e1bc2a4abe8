"""Owns the fixed training recipe: `TrainConfig`, `fit()` and `evaluate()`.

The defaults reproduce RECIPE.md: Adam at 1e-3, batch 64, ReduceLROnPlateau on the validation
loss (factor 0.1, patience 10), cross entropy, the recipe's augmentation, 150 epochs; after every
epoch the weights with the lowest validation loss so far are kept.

Claims:
- `fit` never touches the test split; `evaluate` is called on it once, by the retrain.
- Every epoch's randomness (shuffle order, augmentation draws) is seeded from `(seed, epoch)`,
  and a checkpoint is written atomically at the end of every epoch, so a run resumed from
  epoch k ends with the same weights and history as a run never stopped.
- Each epoch's batches come from `nas.batches` (by default augmented in chunks where the model
  is, in the layout `memory_format` picks); the step loop holds no host synchronisation
  (losses and accuracies accumulate on the device; one `.item()` per epoch).
- On CUDA also: bf16 autocast, fused Adam, cuDNN autotuning; optional torch.compile with the
  compile time (the first step) reported apart in `FitResult.compile_seconds`.
- A non-finite training loss raises `NonFiniteLossError`, which the search turns into a
  pruned trial.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nas.augment import AUGMENTATIONS, POLICY_NAMES, normalize_batch
from nas.batches import DATA_PATHS, make_batches, memory_format, resolve_data_path
from nas.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from nas.data import Splits, TensorData
from nas.errors import UserError
from nas.settings import kept

OPTIMIZERS = ("adam", "adamw", "sgd")
# the keys of every history row `fit` records, in the order a CSV shows them
HISTORY_COLUMNS = (
    "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
)  # fmt: skip

EpochCallback = Callable[[dict[str, Any]], "bool | None"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. Every field is recorded with a study and with each run."""

    epochs: int = kept(150)  # passes over the training split (the reference's final model)
    batch_size: int = kept(64)  # images per optimizer step (the reference's)
    optimizer: str = kept("adam")  # adam (the recipe) | adamw | sgd: the study's comparison
    lr: float = kept(1e-3)  # optimizer step size
    momentum: float = kept(0.9)  # SGD momentum; unused by Adam
    weight_decay: float = kept(0.0)  # L2 penalty (adam) or decoupled decay (adamw); recipe: none
    lr_factor: float = kept(0.1)  # ReduceLROnPlateau: multiply the step size by this on a plateau
    lr_patience: int = kept(10)  # ReduceLROnPlateau: epochs with no lower val loss before reducing
    augment: str = kept("recipe")  # recipe | basic (rotation, flip, crop) | none
    policy: str = kept("cifar10")  # AutoAugment policy: cifar10 | svhn | imagenet
    flip: bool = kept(True)  # random horizontal flips (off for digits and text)
    seed: int = 0  # seeds initial weights, shuffling and augmentation draws
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    workers: int | None = (
        None  # loader processes for the per-image path; None picks for the machine
    )
    amp: bool = True  # bf16 autocast on CUDA; CPU always trains in float32
    # NHWC memory layout. None (the default): on CUDA (bf16 tensor cores want it), off on the
    # CPU, where oneDNN 3.12 (torch 2.14) corrupts the heap in the backward pass of a 1x1
    # stride-2 convolution on small channels_last batches on AVX-512 CPUs (issue 10); the
    # contiguous layout costs a few per cent there (benchmarks/RESULTS.md). True forces NHWC.
    channels_last: bool | None = None
    data_path: str = "auto"  # auto (= device: batched augmentation) | device | loader (per image)
    eval_batch_size: int = 1000  # images per batch when evaluating; no gradients, so large
    compile: bool = False  # torch.compile the model (CUDA); compile time is reported apart

    def __post_init__(self) -> None:
        for name in ("epochs", "lr_patience"):
            _check(getattr(self, name) >= 0, f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("batch_size", "eval_batch_size"):
            _check(
                getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}"
            )
        _check(self.lr > 0, f"lr must be positive, got {self.lr}")
        _check(0 < self.lr_factor < 1, f"lr_factor must lie in (0, 1), got {self.lr_factor}")
        _check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        _check(self.augment in AUGMENTATIONS, f"augment must be one of {', '.join(AUGMENTATIONS)}")
        _check(self.policy in POLICY_NAMES, f"policy must be one of {', '.join(POLICY_NAMES)}")
        _check(isinstance(self.flip, bool), f"flip must be true or false, got {self.flip!r}")
        _check(self.data_path in DATA_PATHS, f"data_path must be one of {', '.join(DATA_PATHS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        _check(not unknown, f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


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
    """`auto`, `cpu`, `cuda`, `cuda:N` -> a usable device, or a UserError saying why not."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name} was asked for but no CUDA GPU is visible; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device {name} does not exist; {torch.cuda.device_count()} GPU(s) are visible"
            )
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def set_seed(seed: int) -> None:
    """Seed the generators that initialise weights (call before building the model)."""
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def autocast_for(config: TrainConfig, device: torch.device):
    """The autocast training and evaluation run under: bf16 on CUDA when `config.amp`."""
    enabled = config.amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


_autocast = autocast_for  # the name this module's loops use


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device):
    # fused kernels update every parameter in one launch on CUDA; foreach elsewhere
    speed = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            **speed,
        )
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **speed)


# ---- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    splits: Splits,
    config: TrainConfig,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction) of `model` on `data`, normalised only."""
    device = device or resolve_device(config.device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    layout = memory_format(config, device)
    for start in range(0, len(data), config.eval_batch_size):
        images = data.images[start : start + config.eval_batch_size].to(device, non_blocking=True)
        labels = data.labels[start : start + config.eval_batch_size].to(device, non_blocking=True)
        inputs = normalize_batch(images, splits.mean, splits.std)
        with _autocast(config, device):
            logits = model(inputs.contiguous(memory_format=layout))
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    count = max(1, len(data))
    return loss_sum.item() / count, correct.item() / count


# ---- training --------------------------------------------------------------------------------


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
    model.to(device=device, memory_format=memory_format(config, device))
    optimizer = make_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
    )
    result = FitResult(
        history=[], best_state={}, best_epoch=0, best_val_loss=math.inf, best_val_accuracy=0.0
    )
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        _resume(load_checkpoint(checkpoint_path), model, optimizer, scheduler, result)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest
    step_model = torch.compile(model) if config.compile else model
    batches = make_batches(splits.train, config, splits, device)
    result.extra["data_path"] = resolve_data_path(config)
    first = result.epochs_completed + 1
    bar = tqdm(
        range(first, config.epochs + 1),
        desc="epochs",
        unit="epoch",
        disable=not progress,
        initial=first - 1,
        total=config.epochs,
        leave=False,
    )
    for epoch in bar:
        started = time.perf_counter()
        torch.manual_seed(_epoch_seed(config.seed, epoch))  # any other global draw too
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_accuracy, compile_seconds = _train_epoch(
            step_model,
            batches,
            optimizer,
            config,
            device,
            _epoch_seed(config.seed, epoch),
            time_first_step=config.compile and not result.compile_seconds,
        )
        result.compile_seconds += compile_seconds
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(f"the training loss became {train_loss} in epoch {epoch}")
        val_loss, val_accuracy = evaluate(model, splits.val, splits, config, device)
        scheduler.step(val_loss)
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
            result.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        if checkpoint_path is not None:
            save_checkpoint(
                _checkpoint_state(model, optimizer, scheduler, result, config, checkpoint_extra),
                checkpoint_path,
            )
        bar.set_postfix(
            train=f"{train_accuracy:.1%}", val=f"{val_accuracy:.1%}", loss=f"{val_loss:.3f}"
        )
        if callback is not None and callback(row):
            result.stopped_early = True
            break
    bar.close()
    if not result.best_state:  # zero epochs: the initial weights are the best there are
        result.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
        }
    return result


def _train_epoch(
    model, batches, optimizer, config, device, seed, time_first_step=False
) -> tuple[float, float, float]:
    """Mean loss and accuracy of one epoch, and the seconds of its first step when asked (with
    torch.compile that step compiles the model: its time is reported apart from the epoch)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    first_step_seconds = 0.0
    for step, (images, labels) in enumerate(batches.epoch(seed)):
        if time_first_step and step == 0:
            _synchronize(device)
            first_step_started = time.perf_counter()
        with _autocast(config, device):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # accumulate on the device: reading a value here would stall the GPU every step
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += labels.shape[0]
        if time_first_step and step == 0:
            _synchronize(device)
            first_step_seconds = time.perf_counter() - first_step_started
    seen = max(1, seen)
    return loss_sum.item() / seen, correct.item() / seen, first_step_seconds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _checkpoint_state(model, optimizer, scheduler, result, config, extra) -> dict[str, Any]:
    return {
        "format": 1,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": copy.deepcopy(result.history),
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "best_val_accuracy": result.best_val_accuracy,
        "config": config.to_dict(),
        "rng": rng_state(),
        "extra": extra or {},
    }


def _resume(state, model, optimizer, scheduler, result: FitResult) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    result.history = list(state["history"])
    result.best_state = state["best_state"]
    result.best_epoch = state["best_epoch"]
    result.best_val_loss = state["best_val_loss"]
    result.best_val_accuracy = state["best_val_accuracy"]
    restore_rng_state(state["rng"])
