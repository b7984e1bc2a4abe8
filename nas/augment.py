"""Owns the recipe's training augmentation and the normalisation of images.

Two paths produce the same distribution of augmented images:

- `train_transform(mode, mean, std)`: the per-image CPU path, a torchvision ``transforms.v2``
  pipeline on one uint8 ``(3, H, W)`` tensor, meant for a DataLoader's workers.
- `BatchAugmenter(mode, mean, std)`: the same recipe applied to a whole uint8 ``(N, 3, H, W)``
  batch (or a whole epoch) at once on any device, with per-image randomness.

The recipe (RECIPE.md) is: random rotation within +-5 degrees, horizontal flip with p = 0.5,
random crop back to the input size after 2 pixels of zero padding, AutoAugment with
torchvision's CIFAR-10 policy, then scaling to [0, 1] and per-channel normalisation.
Modes: ``recipe`` (all of it), ``basic`` (rotation, flip, crop), ``none`` (normalisation only).

Claims (checked by tests/test_augment.py): the batched path applies, for any given random draw,
the same operations as torchvision's per-image functional ops (bit-exact on uint8 for every
AutoAugment operation of the policy, rotation, flip and crop); each image draws its own angle,
flip coin, crop offset, sub-policy, application coins and magnitude signs with the
probabilities torchvision uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

AUGMENTATIONS = ("recipe", "basic", "none")

# The recipe's geometric augmentation (RECIPE.md).
ROTATION_DEGREES = 5.0  # angles drawn uniformly from [-5, 5) degrees, nearest interpolation, fill 0
FLIP_PROBABILITY = 0.5  # chance of a horizontal flip
CROP_PADDING = 2  # pixels of zero padding on each side before cropping back to the input size


def _check_mode(mode: str) -> None:
    if mode not in AUGMENTATIONS:
        raise ValueError(
            f"Unknown augmentation mode {mode!r}; choose one of {', '.join(AUGMENTATIONS)}."
        )


def _to_normalized_float(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


class _PerImageTrainTransform:
    """The per-image pipeline; the crop size follows each input's size, so one object serves
    any image size (pipelines are built once per size and cached)."""

    def __init__(self, mode: str, mean: Sequence[float], std: Sequence[float]) -> None:
        _check_mode(mode)
        self.mode = mode
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._pipelines: dict[tuple[int, int], v2.Compose] = {}

    def _build(self, height: int, width: int) -> v2.Compose:
        steps: list[v2.Transform] = []
        if self.mode in ("recipe", "basic"):
            steps += [
                v2.RandomRotation(ROTATION_DEGREES),
                v2.RandomHorizontalFlip(FLIP_PROBABILITY),
                v2.RandomCrop((height, width), padding=CROP_PADDING),
            ]
        if self.mode == "recipe":
            steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
        return v2.Compose(steps + _to_normalized_float(self.mean, self.std))

    def __call__(self, image: Tensor) -> Tensor:
        size = (int(image.shape[-2]), int(image.shape[-1]))
        pipeline = self._pipelines.get(size)
        if pipeline is None:
            pipeline = self._pipelines[size] = self._build(*size)
        return pipeline(image)


def train_transform(
    mode: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> Callable[[Tensor], Tensor]:
    """Per-image training transform: uint8 ``(3, H, W)`` -> normalised float32 ``(3, H, W)``."""
    return _PerImageTrainTransform(mode, mean, std)


def eval_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[Tensor], Tensor]:
    """Per-image evaluation transform: normalisation only."""
    return v2.Compose(_to_normalized_float(mean, std))


def normalize_batch(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``(N, 3, H, W)`` on any device -> normalised float32 on the same device.

    Uses the same functional ops as `eval_transform`, so both give identical numbers."""
    scaled = TF.to_dtype(images, torch.float32, scale=True)
    return TF.normalize(scaled, list(mean), list(std))
