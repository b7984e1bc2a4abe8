"""Owns verifying an export against the run it came from, before anyone relies on it: the
exported bytes are loaded the way a deployment loads them (ONNX through onnxruntime,
TorchScript through `torch.jit.load`) and run on a batch of the run's real test images (and,
for a dynamic batch, on a single image too).

Claims: an export's logits must match the original model's (`nas.load_model`, inputs
normalised as evaluation does) within `EXPORT_TOLERANCE`, else a `UserError`; `verify_export`
checks any export file the same way; without onnx and onnxruntime the error names the install
command. Imports no optuna.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.config.data import DataConfig
from nas.config.outputs import EXPORT_TOLERANCE
from nas.data.readers import read_dataset
from nas.errors import UserError
from nas.run.inference import RunModel, load_run

VERIFY_IMAGES = 64  # test images the export is checked on (a fixed batch uses its own size)
INPUT_NAME = "images"  # the exported graph's input
METADATA_FILE = "nas.json"  # TorchScript: the metadata as an extra file in the archive
INSTALL_EXPORT = "pip install -e '.[export]' (or pip install onnx onnxruntime)"


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
