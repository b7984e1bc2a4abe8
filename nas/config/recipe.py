"""Owns the training recipe: `Recipe`, what a study records and a retrain inherits (optimizer,
learning rate and its schedule, epochs, batch, augmentation and its policy, seed), with its
documented defaults and the choices its fields accept. The machine a run is on (device,
precision, workers, chunk sizes, compile) is `nas.config.machine.Machine`; the data settings
are `nas.config.data`, the search's `nas.config.search`.

Imports neither torch nor optuna: the command line builds every parser from these names, so
`nas --help`, `nas params` and `nas space` start without loading either.

Claims:
- A field declared `kept` (`nas.config.fields`) is one a resume must keep; the seed is not.
- Every value a recipe accepts means something: an impossible one (momentum 1.5, a learning
  rate of 0 or infinity, batch 0) is a `UserError` of one sentence.
- `Recipe.from_dict` reads what earlier releases recorded, whose recipe also held the machine's
  settings (device, precision, ...; `amp` before `precision`): those are left to the machine,
  any other unknown name is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nas.config.fields import from_known, is_finite, kept, require, require_whole

# ---- choices -------------------------------------------------------------------------------

OPTIMIZERS = ("adam", "adamw", "sgd")
AUGMENTATIONS = ("recipe", "basic", "none")  # all of the reference's | rotation, flip, crop | none
POLICY_NAMES = ("cifar10", "svhn", "imagenet")  # torchvision's AutoAugment policies
# what earlier releases stored with the recipe and the machine now owns (nas.config.machine)
MACHINE_SETTINGS = (
    "device", "workers", "precision", "amp", "channels_last", "data_path", "eval_batch_size",
    "chunk_size", "compile", "gpu_shared_by",
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
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

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 0), ("lr_patience", 0), ("seed", 0)):
            require_whole(name, getattr(self, name), minimum)
        require_whole("batch_size", self.batch_size, 1)
        require(
            is_finite(self.lr) and self.lr > 0,
            f"lr must be a finite number above 0, got {self.lr!r}",
        )
        require(
            is_finite(self.momentum) and 0 <= self.momentum < 1,
            f"momentum must be at least 0 and below 1, got {self.momentum!r} (SGD's momentum; "
            "0.9 is usual)",
        )
        require(
            is_finite(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be a finite number of 0 or more, got {self.weight_decay!r}",
        )
        require(
            is_finite(self.lr_factor) and 0 < self.lr_factor < 1,
            f"lr_factor must lie between 0 and 1 (both excluded), got {self.lr_factor!r}",
        )
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("augment", AUGMENTATIONS),
            ("policy", POLICY_NAMES),
        ):
            value = getattr(self, name)
            require(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")
        require(isinstance(self.flip, bool), f"flip must be true or false, got {self.flip!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """A recipe from its dict, or from an earlier release's (which held the machine's
        settings too: those are dropped here and read by `Machine.from_dict`)."""
        settings = {k: v for k, v in data.items() if k not in MACHINE_SETTINGS}
        return cls(**from_known(cls, settings, "training"))
