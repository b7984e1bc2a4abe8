"""Owns inference on a finished run folder with the run's own preprocessing: `load_run`,
`read_image`, `predict` (`nas.predict`) and the batched, per-file-tolerant `predict_files`
behind `nas predict`.

The preprocessing is the one the run was trained and tested with: `nas.data.images.read_rgb`
(any mode to RGB, 16-bit scaled, transparency flattened, EXIF orientation applied, a plain PIL
bilinear resize to the run's square `dataset.image_size`), pixels are scaled to [0, 1]
and normalised with the run's `normalization` mean and std from metrics.json
(`nas.data.augment.normalize_batch`, the function evaluation uses). It is `nas.data.readers`' way of
reading an image folder, so an image predicted here gets the numbers it got in the test split.

Claims: imports no optuna (deployment code pays for torch, PIL and safetensors only); an
unreadable image is a `UserError` naming the file from `read_image`, and `predict_files` reports
it and goes on with the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nas.config.outputs import DEFAULT_TOP, PREDICT_BATCH
from nas.data.augment import normalize_batch
from nas.data.counting import IMAGE_EXTENSIONS
from nas.data.images import read_rgb
from nas.errors import UserError
from nas.run import folder as run_folder
from nas.run.folder import RunMetrics, load_model
from nas.train.model import ResNet

ImageInput = str | Path | Image.Image | np.ndarray  # a file, a PIL image, or an RGB uint8 array


@dataclass(frozen=True)
class RunModel:
    """A finished run's model with everything its inputs need: classes and preprocessing."""

    model: ResNet  # eval mode, best weights
    classes: tuple[str, ...]  # class names, in the order of the model's outputs
    mean: tuple[float, ...]  # per-channel normalisation of pixels scaled to [0, 1]
    std: tuple[float, ...]
    image_size: int  # images are resized to this many pixels square
    run_dir: Path
    metrics: RunMetrics  # metrics.json as the run wrote it

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> the float input the model was trained on, on its device."""
        return normalize_batch(images.to(self.device), self.mean, self.std)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> RunModel:
    """A finished run folder's model (`nas.load_model`) with its classes and preprocessing; a
    missing or damaged file is a UserError naming it (`nas.run.folder`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"there is no run folder {run_dir}; pass the folder nas retrain wrote")
    metrics = run_folder.finished_metrics(run_dir)
    path = run_dir / run_folder.METRICS
    if not metrics.classes or not metrics.normalization:
        raise UserError(
            f"{path} lacks classes or normalization: it was written by an older version; "
            "rerun nas retrain --fresh on this run to rewrite it"
        )
    model = load_model(run_dir, device=device)
    if len(metrics.classes) != model.arch.num_classes:
        raise UserError(
            f"{path} names {len(metrics.classes)} classes but the model has "
            f"{model.arch.num_classes} outputs; rerun nas retrain --fresh on this run"
        )
    return RunModel(
        model=model,
        classes=tuple(metrics.classes),
        mean=tuple(metrics.normalization["mean"]),
        std=tuple(metrics.normalization["std"]),
        image_size=metrics.image_size,
        run_dir=run_dir,
        metrics=metrics,
    )


def read_image(image: ImageInput, size: int) -> np.ndarray:
    """One image as RGB uint8 (size, size, 3), read as the training data was; a UserError
    (`DataError`) naming a file that cannot be read as an image, a decompression bomb included."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UserError(
                f"an image array must be RGB uint8 of shape (H, W, 3), got {image.dtype} "
                f"{image.shape}"
            )
        image = Image.fromarray(image)
    return read_rgb(image, size)  # the way nas.data.readers reads an image folder


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image, most probable first."""

    image: str  # the file, or `<image N>` for an in-memory image
    top: tuple[tuple[str, float], ...]  # (class name, probability)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "predictions": [{"class": name, "probability": p} for name, p in self.top],
        }


def as_run(model_or_run: RunModel | str | Path, device: str | torch.device = "cpu") -> RunModel:
    if isinstance(model_or_run, RunModel):
        return model_or_run
    if isinstance(model_or_run, torch.nn.Module):
        raise TypeError(
            "nas.predict needs the run's classes and normalisation: pass the run folder or "
            "nas.run.inference.load_run(folder), not the bare model"
        )
    return load_run(model_or_run, device)


def classify(run: RunModel, pixels: np.ndarray, top: int) -> list[tuple[tuple[str, float], ...]]:
    """Top-`top` (class, probability) of a stack of RGB uint8 images (N, S, S, 3)."""
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        probabilities = torch.softmax(run.model(run.normalize(images)).float(), dim=1)
    values, indices = probabilities.topk(min(top, len(run.classes)), dim=1)
    return [
        tuple((run.classes[i], float(p)) for p, i in zip(row_values, row_indices))
        for row_values, row_indices in zip(values.tolist(), indices.tolist())
    ]


def predict(
    model_or_run: RunModel | str | Path,
    images: ImageInput | Sequence[ImageInput],
    top: int = DEFAULT_TOP,
) -> list[Prediction]:
    """Top-`top` classes with probabilities for each image (files, folders of them, PIL images,
    RGB uint8 arrays (H, W, 3) or a stack (N, H, W, 3)), preprocessed as the run's test images
    were. `model_or_run` is a run folder or a `load_run` result (load once, predict many
    times). An unreadable file is a UserError."""
    if top < 1:
        raise UserError(f"top must be 1 or more, got {top}")
    run = as_run(model_or_run)
    batch_array = isinstance(images, np.ndarray) and images.ndim == 4  # (N, H, W, 3)
    single = isinstance(images, (str, Path, Image.Image, np.ndarray)) and not batch_array
    items = []
    for item in [images] if single else list(images):
        is_folder = isinstance(item, (str, Path)) and Path(item).is_dir()
        items += image_files([item]) if is_folder else [item]
    names = [
        str(item) if isinstance(item, (str, Path)) else f"<image {index}>"
        for index, item in enumerate(items)
    ]
    predictions = []
    for start in range(0, len(items), PREDICT_BATCH):
        chunk = items[start : start + PREDICT_BATCH]
        pixels = np.stack([read_image(item, run.image_size) for item in chunk])
        for name, top_classes in zip(names[start:], classify(run, pixels, top)):
            predictions.append(Prediction(name, top_classes))
    return predictions


def image_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Named files as given; folders expanded to their image files (recursively, sorted).
    A path that does not exist, or a folder without images, is a UserError."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise UserError(
                    f"the folder {item} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
            files += found
        elif item.exists():
            files.append(item)
        else:
            raise UserError(f"there is no file or folder {item}")
    return files


def predict_files(
    run: RunModel,
    files: Sequence[Path],
    top: int = DEFAULT_TOP,
    on_skip: Callable[[Path, str], None] | None = None,
    batch_size: int = PREDICT_BATCH,
) -> Iterator[tuple[int, list[Prediction]]]:
    """Predict `files` in batches, yielding (files consumed so far, the batch's predictions).
    A file that cannot be read is passed to `on_skip(path, reason)` and left out."""
    done = 0
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        readable, pixels = [], []
        for path in chunk:
            try:
                pixels.append(read_image(path, run.image_size))
                readable.append(path)
            except UserError as error:
                if on_skip is not None:
                    on_skip(path, str(error))
        done += len(chunk)
        if not readable:
            yield done, []
            continue
        top_classes = classify(run, np.stack(pixels), top)
        yield done, [Prediction(str(p), t) for p, t in zip(readable, top_classes)]
