"""Owns exporting a finished run's model to ONNX or TorchScript, and verifying an export against
the original before anyone relies on it.

What an export is (the choice, written into every file's metadata and the model card): the
run's best weights in eval mode WITH the input normalisation inside the graph. Its input
`images` is float32 (N, 3, S, S), RGB pixels scaled to [0, 1] (pixel / 255) after resizing to
the trained size S; its output `logits` is (N, classes) in the order of the metadata's classes.
The batch dimension is dynamic unless a fixed batch is asked for.

Claims:
- Nothing is written unless it was verified: the exported bytes are loaded the way a deployment
  loads them (ONNX through onnxruntime, TorchScript through `torch.jit.load`) and run on a batch
  of the run's real test images (and, for a dynamic batch, on a single image too); their logits
  must match the original model's (`nas.load_model`, inputs normalised as evaluation does) within
  `EXPORT_TOLERANCE`, else a `UserError`. `verify_export` checks any export file the same way.
- ONNX uses torch's TorchScript-based exporter (`dynamo=False`): it needs only onnx and
  onnxruntime, the `export` extra (`pip install -e '.[export]'`); without them the error says
  exactly that. Torch's deprecation notices about the exporters are silenced here, not spewed.
- Imports no optuna.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.config import (
    DEFAULT_OPSET,
    EXPORT_FILES,
    EXPORT_FORMATS,
    EXPORT_TOLERANCE,
    OPSETS,
    DataConfig,
)
from nas.errors import UserError
from nas.files import write_atomic
from nas.inference import RunModel, load_run
from nas.readers import read_dataset

VERIFY_IMAGES = 64  # test images the export is checked on (a fixed batch uses its own size)
INPUT_NAME = "images"  # the exported graph's input
OUTPUT_NAME = "logits"  # the exported graph's output
METADATA_FILE = "nas.json"  # TorchScript: the metadata as an extra file in the archive
INSTALL_EXPORT = "pip install -e '.[export]' (or pip install onnx onnxruntime)"


class NormalizedModel(nn.Module):
    """The run's model with its normalisation in front: RGB in [0, 1] -> logits."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str  # onnx | torchscript
    batch: int | None  # None: dynamic
    images: int  # test images the export was checked on
    max_abs_diff: float  # largest |exported - original| logit over those images
    runtime: str  # what loaded the export for the check, with its version
    metadata: dict[str, str]


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def require_onnx() -> None:
    """A UserError naming the exact install command when the ONNX packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise UserError(
            f"ONNX export needs the onnx and onnxruntime packages ({error.name} is missing): "
            f"{INSTALL_EXPORT}"
        ) from None


def input_contract(size: int, batch: int | None = None) -> str:
    """What an export takes, in one line (the files' metadata and the model card say it)."""
    return (
        f"{INPUT_NAME}: float32 ({batch or 'N'}, 3, {size}, {size}), RGB resized to "
        f"{size}x{size} and scaled to [0, 1] (pixel / 255); the normalisation is inside the model"
    )


def metadata_for(run: RunModel, batch: int | None, opset: int | None) -> dict[str, str]:
    """What a deployment needs to feed the export and read its output, as strings."""
    return {
        "nas.input": input_contract(run.image_size, batch),
        "nas.output": f"{OUTPUT_NAME}: float32 ({batch or 'N'}, {len(run.classes)}), "
        "ordered as nas.classes",
        "nas.normalization_included": "true",
        "nas.mean": json.dumps(list(run.mean)),
        "nas.std": json.dumps(list(run.std)),
        "nas.image_size": str(run.image_size),
        "nas.classes": json.dumps(list(run.classes)),
        "nas.batch": "dynamic" if batch is None else str(batch),
        "nas.architecture": json.dumps(run.model.arch.to_dict()),
        "nas.test_accuracy": str(run.metrics.test_accuracy),
        "nas.run": str(run.run_dir),
        **({"nas.opset": str(opset)} if opset is not None else {}),
    }


def verification_images(run: RunModel, count: int, data_dir: str | None = None) -> torch.Tensor:
    """`count` uint8 images of the run's test split (repeated when it holds fewer)."""
    settings = DataConfig.from_dict(run.metrics.dataset)
    settings = dataclasses.replace(settings, download=False)  # never download to verify
    if data_dir is not None:
        settings = dataclasses.replace(settings, data_dir=str(data_dir))
    try:
        _, (images, _), _ = read_dataset(settings)
    except UserError as error:
        raise UserError(
            f"an export is verified on the run's test images, which could not be read "
            f"({str(error).rstrip('.')}); pass --data-dir where the {settings.dataset} data is"
        ) from None
    if len(images) == 0:
        raise UserError(f"the run's test split ({settings.dataset}) holds no images to verify on")
    repeats = -(-count // len(images))
    return images.repeat(repeats, 1, 1, 1)[:count].contiguous()


def scaled(images: torch.Tensor) -> np.ndarray:
    """uint8 images -> the export's input: float32 RGB in [0, 1]."""
    return (images.to(torch.float32) / 255.0).numpy()


def torchscript_exporter() -> dict[str, bool]:
    """torch.onnx.export's switch to its TorchScript-based exporter: torch >= 2.9 defaults to the
    dynamo one (which needs onnxscript); torch before 2.5 has only the TorchScript one."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def onnx_bytes(wrapper: nn.Module, example: np.ndarray, dynamic: bool, opset: int, meta) -> bytes:
    import onnx

    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.9+ calls this exporter legacy; it is the one that needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            wrapper, (torch.from_numpy(example),), buffer, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
            **torchscript_exporter(),
        )  # fmt: skip
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"nas export of {meta['nas.run']}; input {meta['nas.input']}"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def torchscript_bytes(wrapper: nn.Module, example: np.ndarray, meta) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.14 marks torch.jit as deprecated in favour of torch.export; it still works
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(wrapper, torch.from_numpy(example))
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(meta, indent=1)})
    return buffer.getvalue()


def run_export(data: bytes, format: str, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """Load exported bytes as a deployment would and run it on each input batch."""
    if format == "onnx":
        require_onnx()
        import onnxruntime

        runtime = f"onnxruntime {onnxruntime.__version__}"
        try:
            session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
            return [session.run(None, {INPUT_NAME: batch})[0] for batch in inputs], runtime
        except Exception as error:  # onnxruntime's errors derive from Exception only
            raise UserError(
                f"{runtime} cannot load or run the export ({first_line(error)})"
            ) from None
    runtime = f"torch.jit {torch.__version__}"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
            return [module(torch.from_numpy(batch)).numpy() for batch in inputs], runtime
    except Exception as error:  # a damaged archive or a graph that does not run
        raise UserError(f"{runtime} cannot load or run the export ({first_line(error)})") from None


def check_batches(count: int, batch: int | None) -> list[int]:
    """A fixed batch is checked at its size; a dynamic one at `count` images and at one."""
    return [count] if batch is not None or count == 1 else [count, 1]


def check_export(
    data: bytes, format: str, run: RunModel, images: torch.Tensor, batches: list[int]
) -> tuple[float, str]:
    """The largest logit difference between the export and the original on `images`, split
    into batches of the sizes in `batches`; a UserError when it exceeds EXPORT_TOLERANCE."""
    inputs = [scaled(images[:size]) for size in batches]
    outputs, runtime = run_export(data, format, inputs)
    worst = 0.0
    with torch.inference_mode():
        for size, output in zip(batches, outputs):
            expected = run.model(run.normalize(images[:size])).float().numpy()
            if output.shape != expected.shape:
                raise UserError(
                    f"the export gives logits of shape {tuple(output.shape)} where the run's "
                    f"model gives {tuple(expected.shape)}: it is not this run's model"
                )
            difference = np.abs(output.astype(np.float64) - expected)
            if not np.isfinite(difference).all():
                raise UserError("the export gives non-finite logits where the run's model does not")
            worst = max(worst, float(difference.max()))
    if worst > EXPORT_TOLERANCE:
        raise UserError(
            f"the export's logits differ from the run's model by up to {worst:.3g} on its test "
            f"images (more than {EXPORT_TOLERANCE:g}): it is not a faithful export of this run"
        )
    return worst, runtime


def export_run(
    run_dir: str | Path,
    format: str,
    out: str | Path | None = None,
    batch: int | None = None,
    opset: int = DEFAULT_OPSET,
    data_dir: str | None = None,
) -> ExportResult:
    """Export a finished run, verify the export on the run's test images, then write it."""
    if format not in EXPORT_FORMATS:
        raise UserError(
            f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}"
        )
    if format == "onnx":
        require_onnx()
        if not OPSETS[0] <= opset <= OPSETS[1]:
            raise UserError(
                f"ONNX opset {opset} is outside what torch's exporter writes "
                f"({OPSETS[0]} to {OPSETS[1]}); pass --opset in that range or leave it out"
            )
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.run_dir / EXPORT_FILES[format]
    images = verification_images(run, batch or VERIFY_IMAGES, data_dir)
    meta = metadata_for(run, batch, opset if format == "onnx" else None)
    wrapper = NormalizedModel(run.model, run.mean, run.std).eval()
    example = scaled(images)
    if format == "onnx":
        data = onnx_bytes(wrapper, example, batch is None, opset, meta)
    else:
        data = torchscript_bytes(wrapper, example, meta)
    worst, runtime = check_export(data, format, run, images, check_batches(len(images), batch))
    try:
        write_atomic(path, data)
    except OSError as error:
        raise UserError(
            f"cannot write the export to {path} ({error.strerror}); pass --out"
        ) from None
    return ExportResult(path, format, batch, len(images), worst, runtime, meta)


def read_export_metadata(data: bytes, format: str, path: Path) -> dict[str, Any]:
    """The metadata an export (the bytes of `path`) carries; empty when it carries none."""
    if format == "onnx":
        require_onnx()
        import onnx

        try:
            model = onnx.load_from_string(data)
        except Exception as error:  # protobuf's DecodeError and friends
            raise UserError(f"{path} is not an ONNX model ({first_line(error)})") from None
        return {entry.key: entry.value for entry in model.metadata_props}
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
        return json.loads(extra[METADATA_FILE] or "{}")
    except Exception as error:
        raise UserError(f"{path} is not a TorchScript archive ({first_line(error)})") from None


def format_of(path: Path) -> str:
    return "onnx" if path.suffix.lower() == ".onnx" else "torchscript"


def verify_export(
    run_dir: str | Path, path: str | Path, format: str | None = None, data_dir: str | None = None
) -> tuple[float, str]:
    """Check an existing export file against the run: (max abs logit difference, runtime),
    or a UserError when it cannot be loaded or does not match. The batch it is checked at is
    the one its metadata names (dynamic when it names none)."""
    path = Path(path)
    format = format or format_of(path)
    run = load_run(run_dir)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read the export {path} ({error.strerror})") from None
    batch_text = str(read_export_metadata(data, format, path).get("nas.batch", "dynamic"))
    batch = int(batch_text) if batch_text.isdigit() else None
    images = verification_images(run, batch or VERIFY_IMAGES, data_dir)
    return check_export(data, format, run, images, check_batches(len(images), batch))
