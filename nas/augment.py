"""Owns the recipe's training augmentation and the normalisation of images.

Two paths produce the same distribution of augmented images:

- `train_transform(mode, mean, std)`: the per-image CPU path, a torchvision ``transforms.v2``
  pipeline on one uint8 ``(3, H, W)`` tensor, meant for a DataLoader's workers.
- `BatchAugmenter(mode, mean, std)`: the same recipe applied to a whole uint8 ``(N, 3, H, W)``
  batch (or a whole epoch) at once on any device, with per-image randomness: every image
  draws its own values (`draw_augmentations`, tensor ops with the caller's generator), images
  are grouped by the AutoAugment op they drew and each group goes through the same
  ``v2.functional`` op torchvision's AutoAugment calls. One host sync per call (group sizes).

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


# ---------------------------------------------------------------------------------------------
# Batched path
# ---------------------------------------------------------------------------------------------

# torchvision's AutoAugmentPolicy.CIFAR10: 25 sub-policies, each two (op, probability, bin)
# applied in order, each with its own probability; one sub-policy is drawn per image.
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], ...], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

AUTOAUGMENT_BINS = 10  # torchvision's AutoAugment splits every magnitude range into 10 bins

# op -> (magnitudes of the bins for an image of (height, width) or None, whether the sign is
# random); mirrors torchvision's AutoAugment._AUGMENTATION_SPACE, float32 linspace included,
# so magnitudes are the same numbers torchvision uses.
AUTOAUGMENT_SPACE: dict[str, tuple[Callable[[int, int, int], Tensor | None], bool]] = {
    "ShearX": (lambda bins, height, width: torch.linspace(0.0, 0.3, bins), True),
    "ShearY": (lambda bins, height, width: torch.linspace(0.0, 0.3, bins), True),
    "TranslateX": (
        lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, bins),
        True,
    ),
    "TranslateY": (
        lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, bins),
        True,
    ),
    "Rotate": (lambda bins, height, width: torch.linspace(0.0, 30.0, bins), True),
    "Brightness": (lambda bins, height, width: torch.linspace(0.0, 0.9, bins), True),
    "Color": (lambda bins, height, width: torch.linspace(0.0, 0.9, bins), True),
    "Contrast": (lambda bins, height, width: torch.linspace(0.0, 0.9, bins), True),
    "Sharpness": (lambda bins, height, width: torch.linspace(0.0, 0.9, bins), True),
    "Posterize": (
        lambda bins, height, width: (8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int(),
        False,
    ),
    "Solarize": (lambda bins, height, width: torch.linspace(1.0, 0.0, bins), False),
    "AutoContrast": (lambda bins, height, width: None, False),
    "Equalize": (lambda bins, height, width: None, False),
    "Invert": (lambda bins, height, width: None, False),
}


def apply_autoaugment_op(images: Tensor, op: str, magnitude: float) -> Tensor:
    """One AutoAugment op with one magnitude on uint8 ``(..., 3, H, W)`` images.

    Mirrors torchvision's ``AutoAugment._apply_image_or_video_transform`` with AutoAugment's
    defaults (nearest interpolation, fill None, i.e. zeros); the ``v2.functional`` ops it calls
    treat every image of a batch on its own (histograms, means, min/max are per image)."""
    nearest = v2.InterpolationMode.NEAREST
    if op in ("ShearX", "ShearY"):
        # torchvision shears by atan(magnitude) degrees about the top-left corner
        shear_degrees = math.degrees(math.atan(magnitude))
        shear = [shear_degrees, 0.0] if op == "ShearX" else [0.0, shear_degrees]
        return TF.affine(
            images, angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
            interpolation=nearest, fill=None, center=[0, 0],
        )  # fmt: skip
    if op in ("TranslateX", "TranslateY"):
        shift = int(magnitude)  # torchvision truncates the pixel shift towards zero
        translate = [shift, 0] if op == "TranslateX" else [0, shift]
        return TF.affine(
            images, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0],
            interpolation=nearest, fill=None,
        )  # fmt: skip
    if op == "Rotate":
        return TF.rotate(images, angle=magnitude, interpolation=nearest, fill=None)
    if op == "Brightness":
        return TF.adjust_brightness(images, brightness_factor=1.0 + magnitude)
    if op == "Color":
        return TF.adjust_saturation(images, saturation_factor=1.0 + magnitude)
    if op == "Contrast":
        return TF.adjust_contrast(images, contrast_factor=1.0 + magnitude)
    if op == "Sharpness":
        return TF.adjust_sharpness(images, sharpness_factor=1.0 + magnitude)
    if op == "Posterize":
        return TF.posterize(images, bits=int(magnitude))
    if op == "Solarize":
        return TF.solarize(images, threshold=255 * magnitude)  # 255: uint8's largest value
    if op == "AutoContrast":
        return TF.autocontrast(images)
    if op == "Equalize":
        return TF.equalize(images)
    if op == "Invert":
        return TF.invert(images)
    raise ValueError(f"Unknown AutoAugment op {op!r}.")


@dataclass(frozen=True)
class AutoAugmentTable:
    """The CIFAR-10 policy resolved for one image size: every distinct (op, signed magnitude)
    the policy can apply, and which of them each (sub-policy, slot, sign coin) means."""

    actions: tuple[tuple[str, float], ...]
    action_index: Tensor  # (25, 2, 2) int64: [sub-policy, slot, negated] -> index into actions


def autoaugment_table(
    height: int, width: int, device: torch.device | str = "cpu"
) -> AutoAugmentTable:
    actions: list[tuple[str, float]] = []
    index = torch.empty(len(CIFAR10_POLICY), 2, 2, dtype=torch.int64)
    for policy_index, sub_policy in enumerate(CIFAR10_POLICY):
        for slot, (op, _, magnitude_bin) in enumerate(sub_policy):
            magnitudes_fn, signed = AUTOAUGMENT_SPACE[op]
            magnitudes = magnitudes_fn(AUTOAUGMENT_BINS, height, width)
            magnitude = 0.0 if magnitudes is None else float(magnitudes[magnitude_bin])
            for negated in (0, 1):
                action = (op, -magnitude if negated and signed else magnitude)
                if action not in actions:
                    actions.append(action)
                index[policy_index, slot, negated] = actions.index(action)
    return AutoAugmentTable(tuple(actions), index.to(device))


@dataclass(frozen=True)
class AugmentDraws:
    """Per-image random values of the recipe for a batch of N images."""

    angles: Tensor  # (N,) float32 rotation in degrees, uniform in [-5, 5)
    flips: Tensor  # (N,) bool, flip horizontally
    crop_tops: Tensor  # (N,) int64 row offset into the padded image, uniform in 0..2*padding
    crop_lefts: Tensor  # (N,) int64 column offset, uniform in 0..2*padding
    sub_policies: Tensor | None  # (N,) int64 in 0..24; None: no AutoAugment
    applied: Tensor | None  # (N, 2) bool, whether each op of the sub-policy is applied
    negated: Tensor | None  # (N, 2) bool, the sign coin (ignored by unsigned ops)


def draw_augmentations(
    count: int,
    autoaugment: bool,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> AugmentDraws:
    """Draws every image's random values with tensor ops on `device` (no host sync), with the
    distributions torchvision's per-image transforms use. `generator` must live on `device`."""

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, device=device, generator=generator)

    def offsets() -> Tensor:
        return torch.randint(0, 2 * CROP_PADDING + 1, (count,), device=device, generator=generator)

    angles = uniform(count) * (2 * ROTATION_DEGREES) - ROTATION_DEGREES
    flips = uniform(count) < FLIP_PROBABILITY  # torchvision skips the flip when rand >= p
    crop_tops, crop_lefts = offsets(), offsets()
    if not autoaugment:
        return AugmentDraws(angles, flips, crop_tops, crop_lefts, None, None, None)
    sub_policies = torch.randint(
        0, len(CIFAR10_POLICY), (count,), device=device, generator=generator
    )
    probabilities = torch.tensor(
        [[probability for _, probability, _ in sub_policy] for sub_policy in CIFAR10_POLICY],
        device=device,
    )
    # torchvision applies an op when rand <= probability and negates when rand <= 0.5
    applied = uniform(count, 2) <= probabilities[sub_policies]
    negated = uniform(count, 2) <= 0.5
    return AugmentDraws(angles, flips, crop_tops, crop_lefts, sub_policies, applied, negated)


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


def autoaugment_batch(images: Tensor, draws: AugmentDraws, table: AutoAugmentTable) -> Tensor:
    """Applies each image's drawn sub-policy: images are grouped by the (op, magnitude) they
    draw for a slot, and each group goes through `apply_autoaugment_op` at once."""
    assert (
        draws.sub_policies is not None and draws.applied is not None and draws.negated is not None
    )
    slots = torch.arange(2, device=images.device)
    action = table.action_index[draws.sub_policies[:, None], slots, draws.negated.long()]
    # group key per (image, slot): 0 = nothing applied, k + 1 = action k
    keys = torch.where(draws.applied, action + 1, 0)
    num_keys = len(table.actions) + 1
    # the one host sync: the size of every group of both slots
    sizes = torch.stack([torch.bincount(keys[:, slot], minlength=num_keys) for slot in range(2)])
    sizes = sizes.tolist()
    out = images.clone()
    for slot in range(2):
        order = torch.argsort(keys[:, slot], stable=True)
        groups = torch.split(order, sizes[slot])
        for (op, magnitude), members in zip(table.actions, groups[1:], strict=True):
            if members.numel():
                out[members] = apply_autoaugment_op(out[members], op, magnitude)
    return out


def augment_batch(images: Tensor, draws: AugmentDraws, table: AutoAugmentTable | None) -> Tensor:
    """The recipe's augmentation of uint8 ``(N, 3, H, W)`` images for given draws (uint8 out)."""
    out = rotate_flip_crop_batch(
        images, draws.angles, draws.flips, draws.crop_tops, draws.crop_lefts
    )
    if draws.sub_policies is not None:
        assert table is not None, "AutoAugment draws need the table for the image size"
        out = autoaugment_batch(out, draws, table)
    return out


class BatchAugmenter:
    """The recipe on a whole uint8 ``(N, 3, H, W)`` batch at once, on the batch's device, with
    per-image randomness; returns normalised float32 ``(N, 3, H, W)`` on the same device."""

    def __init__(self, mode: str, mean: Sequence[float], std: Sequence[float]) -> None:
        _check_mode(mode)
        self.mode = mode
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._tables: dict[tuple[int, int, str], AutoAugmentTable] = {}

    def _table(self, height: int, width: int, device: torch.device) -> AutoAugmentTable:
        key = (height, width, str(device))
        if key not in self._tables:
            self._tables[key] = autoaugment_table(height, width, device)
        return self._tables[key]

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"Expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}."
            )
        if self.mode != "none" and images.shape[0] > 0:
            autoaugment = self.mode == "recipe"
            draws = draw_augmentations(images.shape[0], autoaugment, images.device, generator)
            height, width = images.shape[-2:]
            table = self._table(height, width, images.device) if autoaugment else None
            images = augment_batch(images, draws, table)
        return normalize_batch(images, self.mean, self.std)
