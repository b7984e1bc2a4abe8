"""Owns exporting a finished run's model to ONNX or TorchScript, written only once verified
against the original (`nas.run.export_check`).

What an export is (the choice, written into every file's metadata and the model card): the
run's best weights in eval mode WITH the input normalisation inside the graph. Its input
`images` is float32 (N, 3, S, S), RGB pixels scaled to [0, 1] (pixel / 255) after resizing to
the trained size S; its output `logits` is (N, classes) in the order of the metadata's classes.
The batch dimension is dynamic unless a fixed batch is asked for.

Claims:
- Nothing is written unless it was verified (`nas.run.export_check.check_export`: loaded as a
  deployment loads it and compared with the original on the run's test images).
- ONNX uses torch's TorchScript-based exporter (`dynamo=False`): it needs only onnx and
  onnxruntime, the `export` extra (`pip install -e '.[export]'`); without them the error says
  exactly that. Torch's deprecation notices about the exporters are silenced here, not spewed.
- Imports no optuna.
"""

from __future__ import annotations

import inspect
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.config.outputs import DEFAULT_OPSET, EXPORT_FORMATS, OPSETS
from nas.errors import UserError
from nas.files import write_atomic
from nas.run.export_check import (
    INPUT_NAME,
    METADATA_FILE,
    VERIFY_IMAGES,
    check_batches,
    check_export,
    require_onnx,
    scaled,
    verification_images,
)
from nas.run.folder import EXPORT_FILES
from nas.run.inference import RunModel, load_run

OUTPUT_NAME = "logits"  # the exported graph's output


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
