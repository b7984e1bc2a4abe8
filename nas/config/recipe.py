"""Owns the training and data configuration: `TrainConfig` and `DataConfig` with their
documented defaults, the choices their fields accept, and the defaults of the commands that
only read or write a finished run (export, predict, doctor). The search's settings are
`nas.config.search`.

Imports neither torch nor optuna: the command line builds every parser from these names, so
`nas --help`, `nas params` and `nas space` start without loading either.

Claims:
- A field declared `kept` (`nas.config.kept`) is one a resume must keep; the others (device,
  folders, seed, speed switches) may change between runs.
- Every value a config accepts means something: an impossible one (momentum 1.5, a learning
  rate of 0 or infinity, batch 0) is a `UserError` (`DataError` for the data) of one sentence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from nas.config.kept import kept
from nas.errors import UserError

# ---- choices -------------------------------------------------------------------------------

OPTIMIZERS = ("adam", "adamw", "sgd")
AUGMENTATIONS = ("recipe", "basic", "none")  # all of RECIPE.md's | rotation, flip, crop | none
POLICY_NAMES = ("cifar10", "svhn", "imagenet")  # torchvision's AutoAugment policies
DATA_PATHS = ("auto", "device", "loader")  # where training batches are augmented
# what a training step computes in (nas.train.precision decides what auto means on a device)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_HELP = (
    "auto: bf16 at compute capability 8.0 or more, fp16 with a gradient scaler below, "
    "fp32 on the CPU"
)


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
    workers: int | None = None  # loader processes for the per-image path; None: the machine's
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (PRECISION_HELP); like `device`, a
    # property of the machine a run is on, so not kept: a resume may change it
    # NHWC memory layout. None (the default): on CUDA (bf16 tensor cores want it), off on the
    # CPU, where oneDNN 3.12 (torch 2.14) corrupts the heap in the backward pass of a 1x1
    # stride-2 convolution on small channels_last batches on AVX-512 CPUs (issue 10); the
    # contiguous layout costs a few per cent there (benchmarks/RESULTS.md). True forces NHWC.
    channels_last: bool | None = None
    data_path: str = "auto"  # auto (= device: batched augmentation) | device | loader (per image)
    eval_batch_size: int = 1000  # most images per batch when evaluating (fewer where device
    # memory is short: nas.data.device_memory); no gradients, so large
    chunk_size: int = 8192  # most images augmented at once on the device path (fewer where
    # device memory is short: nas.data.device_memory): enough to fill a GPU, more gains nothing
    compile: bool = False  # torch.compile the model (CUDA); compile time is reported apart

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 0), ("lr_patience", 0), ("seed", 0)):
            _whole(name, getattr(self, name), minimum)
        for name in ("batch_size", "eval_batch_size", "chunk_size"):
            _whole(name, getattr(self, name), 1)
        if self.workers is not None:
            _whole("workers", self.workers, 0)
        _check(
            _finite(self.lr) and self.lr > 0, f"lr must be a finite number above 0, got {self.lr!r}"
        )
        _check(
            _finite(self.momentum) and 0 <= self.momentum < 1,
            f"momentum must be at least 0 and below 1, got {self.momentum!r} (SGD's momentum; "
            "0.9 is usual)",
        )
        _check(
            _finite(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be a finite number of 0 or more, got {self.weight_decay!r}",
        )
        _check(
            _finite(self.lr_factor) and 0 < self.lr_factor < 1,
            f"lr_factor must lie between 0 and 1 (both excluded), got {self.lr_factor!r}",
        )
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("augment", AUGMENTATIONS),
            ("policy", POLICY_NAMES),
            ("data_path", DATA_PATHS),
            ("precision", PRECISIONS),
        ):
            value = getattr(self, name)
            _check(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")
        for name in ("flip", "compile"):
            value = getattr(self, name)
            _check(isinstance(value, bool), f"{name} must be true or false, got {value!r}")
        _check(
            self.channels_last is None or isinstance(self.channels_last, bool),
            f"channels_last must be true, false or null, got {self.channels_last!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        settings = dict(data)
        if "amp" in settings:  # stored before `precision`: amp on meant reduced precision on CUDA
            amp = settings.pop("amp")
            settings.setdefault("precision", "auto" if amp else "fp32")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        _check(not unknown, f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**settings)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _whole(name: str, value: object, minimum: int) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be a whole number of at least {minimum}, got {value!r}",
    )


def _finite(value: object) -> bool:
    """A real number (not a bool, not NaN or infinite): comparisons then mean something."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
