"""Owns the recipe's training augmentation and the normalisation of images.

Two paths produce the same distribution of augmented images:

- `train_transform(mode, mean, std, policy, flip)`: the per-image CPU path, a torchvision
  ``transforms.v2`` pipeline on one uint8 ``(3, H, W)`` tensor, meant for a DataLoader's workers.
- `BatchAugmenter(mode, mean, std, policy, flip)`: the same recipe applied to a whole uint8
  ``(N, 3, H, W)`` batch (or a whole epoch) at once on any device, with per-image randomness:
  every image draws its own values (`draw_augmentations`, tensor ops with the caller's
  generator); rotation, flip and crop are one ``grid_sample``, AutoAugment is
  `nas.data.autoaugment`'s grouped ops. One host sync per call (the AutoAugment group sizes).

The recipe (RECIPE.md) is: random rotation within +-5 degrees, horizontal flip with p = 0.5,
random crop back to the input size after 2 pixels of zero padding, AutoAugment with
torchvision's CIFAR-10 policy, then scaling to [0, 1] and per-channel normalisation.
Modes: ``recipe`` (all of it), ``basic`` (rotation, flip, crop), ``none`` (normalisation only).
Variants for other data: `policy` picks torchvision's ``svhn`` or ``imagenet`` AutoAugment
policy instead of ``cifar10``; ``flip=False`` leaves the flips out (digits, text).

Claims (checked by tests/test_augment.py): the batched path applies, for any given random draw,
the same operations as torchvision's per-image functional ops (bit-exact on uint8 for every
AutoAugment operation of each policy, rotation, flip and crop); each image draws its own angle,
flip coin, crop offset, sub-policy, application coins and magnitude signs with the
probabilities torchvision uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.config.recipe import AUGMENTATIONS
from nas.data.autoaugment import (
    POLICIES,
    AutoAugmentTable,
    autoaugment_batch,
    autoaugment_table,
    check_policy,
)

if TYPE_CHECKING:
    from torchvision.transforms import v2

# torchvision is imported where its transforms are used, not here: importing it costs a command
# that never augments (nas params, nas space, --help) about 2.5 s of CPU (it loads torch._dynamo)

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
    from torchvision.transforms import v2

    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


class PerImageTrainTransform:
    """The per-image pipeline; the crop size follows each input's size, so one object serves
    any image size (pipelines are built once per size and cached)."""

    def __init__(
        self, mode: str, mean: Sequence[float], std: Sequence[float], policy: str, flip: bool
    ) -> None:
        _check_mode(mode)
        check_policy(policy)
        self.mode = mode
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.policy = policy
        self.flip = flip
        self._pipelines: dict[tuple[int, int], v2.Compose] = {}

    def pipeline(self, height: int, width: int) -> v2.Compose:
        """The torchvision pipeline for images of (height, width), built once per size."""
        from torchvision.transforms import v2

        size = (height, width)
        if size not in self._pipelines:
            steps: list[v2.Transform] = []
            if self.mode in ("recipe", "basic"):
                steps.append(v2.RandomRotation(ROTATION_DEGREES))
                if self.flip:
                    steps.append(v2.RandomHorizontalFlip(FLIP_PROBABILITY))
                steps.append(v2.RandomCrop(size, padding=CROP_PADDING))
            if self.mode == "recipe":
                steps.append(v2.AutoAugment(v2.AutoAugmentPolicy(self.policy)))
            self._pipelines[size] = v2.Compose(steps + _to_normalized_float(self.mean, self.std))
        return self._pipelines[size]

    def __call__(self, image: Tensor) -> Tensor:
        return self.pipeline(int(image.shape[-2]), int(image.shape[-1]))(image)


def train_transform(
    mode: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    policy: str = "cifar10",
    flip: bool = True,
) -> PerImageTrainTransform:
    """Per-image training transform: uint8 ``(3, H, W)`` -> normalised float32 ``(3, H, W)``;
    `policy` names torchvision's AutoAugment policy (recipe mode), `flip` keeps the flips."""
    return PerImageTrainTransform(mode, mean, std, policy, flip)


def eval_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[Tensor], Tensor]:
    """Per-image evaluation transform: normalisation only."""
    from torchvision.transforms import v2

    return v2.Compose(_to_normalized_float(mean, std))


def normalize_batch(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``(N, 3, H, W)`` on any device -> normalised float32 on the same device.

    Uses the same functional ops as `eval_transform`, so both give identical numbers."""
    from torchvision.transforms.v2 import functional as TF

    scaled = TF.to_dtype(images, torch.float32, scale=True)
    return TF.normalize(scaled, list(mean), list(std))


# ---------------------------------------------------------------------------------------------
# Batched path
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentDraws:
    """Per-image random values of the recipe for a batch of N images."""

    angles: Tensor  # (N,) float32 rotation in degrees, uniform in [-5, 5)
    flips: Tensor  # (N,) bool, flip horizontally (all False without flips)
    crop_tops: Tensor  # (N,) int64 row offset into the padded image, uniform in 0..2*padding
    crop_lefts: Tensor  # (N,) int64 column offset, uniform in 0..2*padding
    policy: str | None  # the AutoAugment policy drawn from; None: no AutoAugment
    sub_policies: Tensor | None  # (N,) int64 in 0..24; None: no AutoAugment
    applied: Tensor | None  # (N, 2) bool, whether each op of the sub-policy is applied
    negated: Tensor | None  # (N, 2) bool, the sign coin (ignored by unsigned ops)


def draw_augmentations(
    count: int,
    policy: str | None,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    flip: bool = True,
) -> AugmentDraws:
    """Draws every image's random values with tensor ops on `device` (no host sync), with the
    distributions torchvision's per-image transforms use: AutoAugment's from `policy` (None:
    no AutoAugment), flips only with `flip`. `generator` must live on `device`."""

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, device=device, generator=generator)

    def offsets() -> Tensor:
        return torch.randint(0, 2 * CROP_PADDING + 1, (count,), device=device, generator=generator)

    angles = uniform(count) * (2 * ROTATION_DEGREES) - ROTATION_DEGREES
    if flip:
        flips = uniform(count) < FLIP_PROBABILITY  # torchvision skips the flip when rand >= p
    else:
        flips = torch.zeros(count, dtype=torch.bool, device=device)
    crop_tops, crop_lefts = offsets(), offsets()
    if policy is None:
        return AugmentDraws(angles, flips, crop_tops, crop_lefts, None, None, None, None)
    check_policy(policy)
    sub_policies = POLICIES[policy]
    chosen = torch.randint(0, len(sub_policies), (count,), device=device, generator=generator)
    probabilities = torch.tensor(
        [[probability for _, probability, _ in sub_policy] for sub_policy in sub_policies],
        device=device,
    )
    # torchvision applies an op when rand <= probability and negates when rand <= 0.5
    applied = uniform(count, 2) <= probabilities[chosen]
    negated = uniform(count, 2) <= 0.5
    return AugmentDraws(angles, flips, crop_tops, crop_lefts, policy, chosen, applied, negated)


def rotate_flip_crop_batch(
    images: Tensor, angles: Tensor, flips: Tensor, tops: Tensor, lefts: Tensor
) -> Tensor:
    """Per image: rotate by its angle (degrees, counter-clockwise, about the centre, nearest,
    zeros outside, as torchvision's ``rotate``), flip horizontally where `flips`, zero-pad by
    CROP_PADDING and crop back to the input size at (top, left); all in one ``grid_sample``.

    Each output pixel reads the rotated image at the pixel the flip and crop send it to; that
    pixel's sampling point is computed from the same float32 numbers torchvision's
    ``_affine_grid`` uses for it (pixel centres relative to the image centre, mapped by the
    inverse rotation, scaled to [-1, 1]), so results are bit-exact; pixels the crop takes from
    the padding get a point far outside, which samples as zero."""
    count, _, height, width = images.shape
    device = images.device
    # torchvision computes the inverse rotation matrix in float64 from angle % 360, then float32
    radians = torch.deg2rad(-(angles.double().remainder(360.0)))
    cos, sin = torch.cos(radians).float(), torch.sin(radians).float()
    zeros = torch.zeros_like(cos)
    theta = torch.stack([cos, sin, zeros, -sin, cos, zeros], dim=1).view(count, 2, 3)
    rescaled_theta = theta.transpose(1, 2) / torch.tensor(
        [0.5 * width, 0.5 * height], device=device
    )

    # rotated-image row and column each output pixel comes from after the flip and the crop
    rows = tops[:, None] - CROP_PADDING + torch.arange(height, device=device)  # (N, H)
    cols = lefts[:, None] - CROP_PADDING + torch.arange(width, device=device)  # (N, W)
    cols = torch.where(flips[:, None], width - 1 - cols, cols)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None]
    base_grid = torch.empty(count, height, width, 3, device=device)
    base_grid[..., 0] = (cols - (width - 1) * 0.5)[:, None, :]
    base_grid[..., 1] = (rows - (height - 1) * 0.5)[:, :, None]
    base_grid[..., 2] = 1.0
    grid = base_grid.view(count, height * width, 3).bmm(rescaled_theta)
    grid = torch.where(inside.view(count, height * width, 1), grid, -2.0)  # -2: off the image
    sampled = F.grid_sample(
        images.float(), grid.view(count, height, width, 2),
        mode="nearest", padding_mode="zeros", align_corners=False,
    )  # fmt: skip
    return sampled.round_().to(images.dtype)


def augment_batch(images: Tensor, draws: AugmentDraws, table: AutoAugmentTable | None) -> Tensor:
    """The recipe's augmentation of uint8 ``(N, 3, H, W)`` images for given draws (uint8 out);
    `table`: `nas.data.autoaugment.autoaugment_table` of the draws' policy for the image size."""
    out = rotate_flip_crop_batch(
        images, draws.angles, draws.flips, draws.crop_tops, draws.crop_lefts
    )
    if draws.policy is not None:
        assert table is not None and table.policy == draws.policy, "the draws' policy's table"
        out = autoaugment_batch(out, draws.sub_policies, draws.applied, draws.negated, table)
    return out


class BatchAugmenter:
    """The recipe on a whole uint8 ``(N, 3, H, W)`` batch at once, on the batch's device, with
    per-image randomness; returns normalised float32 ``(N, 3, H, W)`` on the same device."""

    def __init__(
        self,
        mode: str,
        mean: Sequence[float],
        std: Sequence[float],
        policy: str = "cifar10",
        flip: bool = True,
    ) -> None:
        _check_mode(mode)
        check_policy(policy)
        self.mode = mode
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.policy = policy  # torchvision's AutoAugment policy, used in the recipe mode
        self.flip = flip  # draw horizontal flips (recipe and basic modes)
        self._tables: dict[tuple[int, int, str], AutoAugmentTable] = {}

    def _table(self, height: int, width: int, device: torch.device) -> AutoAugmentTable:
        key = (height, width, str(device))
        if key not in self._tables:
            self._tables[key] = autoaugment_table(height, width, device, self.policy)
        return self._tables[key]

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"Expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}."
            )
        if self.mode != "none" and images.shape[0] > 0:
            policy = self.policy if self.mode == "recipe" else None
            draws = draw_augmentations(
                images.shape[0], policy, images.device, generator, flip=self.flip
            )
            height, width = images.shape[-2:]
            table = self._table(height, width, images.device) if policy else None
            images = augment_batch(images, draws, table)
        return normalize_batch(images, self.mean, self.std)
