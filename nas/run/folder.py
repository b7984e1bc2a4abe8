"""Owns a run folder, what `nas retrain` writes and `nas export`, `nas predict` and
`nas.load_model` read: the names of its files, its metrics (`RunMetrics`, read and written
here only), reading that verifies what it reads, and `load_model` (the run's model for
inference, which imports neither Optuna nor the search, so deployment code pays only for torch
and safetensors).

A finished run folder holds `model.safetensors` (the lowest-validation-loss weights),
`architecture.json`, `metrics.json`, `history.csv` (one row per epoch), `curves.html`,
`checkpoint.ckpt` (resumable state) and `MODEL.md` (the model card).

Claims: a missing, damaged or truncated file (weights cut short; metrics that are not UTF-8,
not JSON, lack what a finished run records or hold a field of the wrong type; an unreadable
architecture) is a `UserError` of one sentence naming the file, never a traceback from the
reader underneath. Imports neither torch (until
weights are read or a model is loaded) nor optuna.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.arch.architecture import Architecture
from nas.errors import UserError
from nas.files import write_atomic

if TYPE_CHECKING:
    import torch

    from nas.train.model import ResNet

WEIGHTS = "model.safetensors"  # the best weights (lowest validation loss)
ARCHITECTURE = "architecture.json"  # Architecture.to_json
METRICS = "metrics.json"  # RunMetrics
HISTORY = "history.csv"  # one row per epoch
CURVES = "curves.html"  # loss and accuracy per epoch, train vs validation
CHECKPOINT = "checkpoint.ckpt"  # resumable state, rewritten every epoch
MODEL_CARD = "MODEL.md"  # what the model is and how to use it
EXPORT_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}  # nas export's
FILES = (WEIGHTS, ARCHITECTURE, METRICS, HISTORY, CURVES, CHECKPOINT, MODEL_CARD)
ARTIFACTS = (CURVES, METRICS, HISTORY)  # what a retrain of a study shows in optuna-dashboard


@dataclass(frozen=True)
class RunMetrics:
    """What metrics.json holds: a finished run's results and everything needed to use it."""

    test_accuracy: float  # on the test split, evaluated once with the best weights
    test_loss: float
    params: int
    epochs_completed: int
    best_epoch: int  # the epoch whose weights were kept (0: the initial weights)
    epochs_planned: int | None = None  # the recipe's epochs (None in runs of early versions)
    best_val_loss: float | None = None  # None when no epoch trained
    best_val_accuracy: float | None = None  # validation accuracy at best_epoch
    highest_val_accuracy: float | None = None  # the highest any epoch reached
    seconds: float = 0.0  # training wall time
    seconds_per_epoch: float = 0.0
    device: str = ""
    classes: list[str] = field(default_factory=list)  # in the order of the model's outputs
    normalization: dict[str, list[float]] = field(default_factory=dict)  # {"mean", "std"}
    config: dict[str, Any] = field(default_factory=dict)  # the recipe (Recipe.to_dict)
    dataset: dict[str, Any] = field(default_factory=dict)  # the data (DataConfig.to_dict)
    source: dict[str, Any] = field(default_factory=dict)  # {study, storage, trial} or {arch}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> RunMetrics:
        """The metrics `path` held, or a UserError naming it when they are not a run's: a
        required field missing, or any field of the wrong type (`"dataset": null`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = [f.name for f in dataclasses.fields(cls) if _required(f)]
        if not isinstance(data, dict) or any(name not in data for name in required):
            missing = [n for n in required if not isinstance(data, dict) or n not in data]
            raise UserError(
                f"{path} is damaged: it lacks {', '.join(missing)}; "
                "rerun nas retrain --fresh on this run to rewrite it"
            )
        wrong = [
            f"{f.name} is not {_CHECKS[f.type][0]}"
            for f in dataclasses.fields(cls)
            if f.name in data and not _CHECKS[f.type][1](data[f.name])
        ]
        if not wrong:
            wrong = _inner_faults(data)
        if wrong:
            raise UserError(
                f"{path} is damaged: its {'; its '.join(wrong)}; "
                "rerun nas retrain --fresh on this run to rewrite it"
            )
        return cls(**{key: value for key, value in data.items() if key in names})

    @property
    def image_size(self) -> int:
        """The square size the model was trained on (32 in runs of early versions)."""
        return int(self.dataset.get("image_size", 32))


def _required(field_: dataclasses.Field) -> bool:
    return field_.default is dataclasses.MISSING and field_.default_factory is dataclasses.MISSING


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(map(_number, value))


# Each RunMetrics annotation (as written above) and how a value read from JSON is checked
# against it; a field of a new type needs its line here (the round-trip test reads every field).
_CHECKS: dict[str, tuple[str, Any]] = {
    "float": ("a number", _number),
    "int": ("a whole number", _integer),
    "float | None": ("a number or null", lambda v: v is None or _number(v)),
    "int | None": ("a whole number or null", lambda v: v is None or _integer(v)),
    "str": ("text", lambda v: isinstance(v, str)),
    "list[str]": (
        "a list of names",
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    ),
    "dict[str, list[float]]": (
        "an object of number lists",
        lambda v: isinstance(v, dict) and all(map(_numbers, v.values())),
    ),
    "dict[str, Any]": ("an object", lambda v: isinstance(v, dict)),
}


def _inner_faults(data: dict[str, Any]) -> list[str]:
    """What the readers of a run need inside the objects: a normalisation's mean and std, the
    dataset's image size."""
    faults = []
    normalization = data.get("normalization") or {}
    if normalization and not {"mean", "std"} <= set(normalization):
        faults.append("normalization lacks mean or std")
    image_size = data.get("dataset", {}).get("image_size", 32)
    if not _integer(image_size) or image_size < 1:
        faults.append(f"dataset.image_size is not a positive whole number ({image_size!r})")
    return faults


def read_metrics(run_dir: Path) -> RunMetrics | None:
    """The run's metrics, None when it has none (not finished), a UserError naming the file
    when it is damaged."""
    path = Path(run_dir) / METRICS
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path} is damaged (not UTF-8 text: {error.reason} at byte {error.start}); rerun "
            "nas retrain --fresh on this run to rewrite it"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path} is damaged (not JSON: {error.msg}); rerun nas retrain --fresh on this run "
            "to rewrite it"
        ) from None
    return RunMetrics.from_dict(data, path)


def finished_metrics(run_dir: Path) -> RunMetrics:
    """The metrics of a finished run, or a UserError saying why `run_dir` is not one."""
    metrics = read_metrics(run_dir)
    if metrics is None:
        raise UserError(
            f"{run_dir} is not a finished run folder: {METRICS} is missing "
            "(finish the run with nas retrain first)"
        )
    return metrics


def write_metrics(run_dir: Path, metrics: RunMetrics) -> None:
    write_atomic(Path(run_dir) / METRICS, json.dumps(metrics.to_dict(), indent=2) + "\n")


def read_architecture(run_dir: Path) -> Architecture:
    """The run's architecture, or a UserError naming the file when it is missing or damaged."""
    path = Path(run_dir) / ARCHITECTURE
    try:
        return Architecture.from_json(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{run_dir} is not a finished run folder: {ARCHITECTURE} is missing"
        ) from None
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{path} is not a valid architecture ({error})") from None


def read_weights(run_dir: Path, device: str = "cpu") -> dict[str, Any]:
    """The run's best weights as a state dict on `device`, or a UserError naming the file when
    it is missing, truncated or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise UserError(f"{run_dir} is not a finished run folder: {WEIGHTS} is missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(
            f"{path} is damaged or truncated ({error}); rerun nas retrain --fresh on this run "
            "to write it again"
        ) from None


def write_weights(run_dir: Path, state: dict[str, Any]) -> None:
    """Write the best weights (moved to the CPU, contiguous, as safetensors requires)."""
    from safetensors.torch import save

    cpu = {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
    write_atomic(Path(run_dir) / WEIGHTS, save(cpu))


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> ResNet:
    """The model of a finished run folder, in eval mode with its best weights; a missing or
    damaged file is a UserError naming it."""
    from nas.train.model import build_model

    arch = read_architecture(Path(run_dir))
    state = read_weights(Path(run_dir), device=str(device))
    model = build_model(arch).to(device)
    try:
        model.load_state_dict(state)
    except RuntimeError:  # missing, unexpected or misshapen tensors
        raise UserError(
            f"{Path(run_dir) / WEIGHTS} does not hold the weights of the architecture "
            f"in {ARCHITECTURE}; rerun nas retrain --fresh on this run"
        ) from None
    return model.eval()
