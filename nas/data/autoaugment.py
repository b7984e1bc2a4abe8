"""Owns AutoAugment on whole batches: the policies, their magnitudes and the batched ops.

torchvision's ``v2.AutoAugment(policy)`` draws, per call, one of a policy's 25 sub-policies;
each sub-policy is two (op, probability, magnitude bin) applied in order, each with its own
probability, signed magnitudes with a random sign. Here the same policies are applied to a
whole uint8 ``(N, 3, H, W)`` batch with per-image draws (`nas.data.augment.draw_augmentations`):
images are grouped by the (op, signed magnitude) they drew for a slot and each group goes
through the ``v2.functional`` op torchvision's AutoAugment calls, once.

Claims (checked by tests/test_augment.py through torchvision's public API only):
- `POLICIES` holds torchvision's three policies (``AutoAugmentPolicy.CIFAR10``, ``SVHN``,
  ``IMAGENET``) transcribed from torchvision 0.29: every output ``v2.AutoAugment(policy)``
  gives is one our batched path gives for some draw of that policy, and with the probabilities
  our table assigns to it.
- `AUTOAUGMENT_SPACE` gives the magnitudes torchvision uses (float32 ``linspace`` included),
  and `apply_autoaugment_op` on a batch equals the per-image op for every (op, magnitude) any
  of the three policies can draw (bit-exact on uint8).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from nas.config.recipe import POLICY_NAMES

# torchvision is imported in `apply_autoaugment_op`, its one user: a command that never augments
# (nas params, nas space, --help) then skips its import (about 2.5 s of CPU: it loads torch._dynamo)

SubPolicy = tuple[tuple[str, float, int | None], tuple[str, float, int | None]]

# torchvision's AutoAugmentPolicy.CIFAR10 (the recipe's).
CIFAR10_POLICY: tuple[SubPolicy, ...] = (
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

# torchvision's AutoAugmentPolicy.SVHN (street-view house numbers).
SVHN_POLICY: tuple[SubPolicy, ...] = (
    (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
    (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
    (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
    (("Invert", 0.9, None), ("Equalize", 0.6, None)),
    (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
    (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
    (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
    (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
    (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
    (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
    (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
    (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
    (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
    (("Invert", 0.9, None), ("Equalize", 0.6, None)),
    (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
    (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
    (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
    (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
    (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
    (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
    (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
    (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
    (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
    (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
    (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
)

# torchvision's AutoAugmentPolicy.IMAGENET.
IMAGENET_POLICY: tuple[SubPolicy, ...] = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)

# policy name (torchvision's AutoAugmentPolicy value; `nas.config.recipe.POLICY_NAMES` in this
# order) -> its sub-policies
POLICIES: dict[str, tuple[SubPolicy, ...]] = {
    "cifar10": CIFAR10_POLICY,
    "svhn": SVHN_POLICY,
    "imagenet": IMAGENET_POLICY,
}

AUTOAUGMENT_BINS = 10  # torchvision's AutoAugment splits every magnitude range into 10 bins


def _linspace(start: float, end: float) -> Callable[[int, int, int], Tensor]:
    return lambda bins, height, width: torch.linspace(start, end, bins)


def _posterize_bits(bins: int, height: int, width: int) -> Tensor:
    return (8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int()


def _no_magnitude(bins: int, height: int, width: int) -> None:
    return None


# op -> (magnitudes of the bins for an image of (height, width) or None, whether the sign is
# random); the same formulas as torchvision's AutoAugment, float32 linspace included, so
# magnitudes are the same numbers torchvision uses.
AUTOAUGMENT_SPACE: dict[str, tuple[Callable[[int, int, int], Tensor | None], bool]] = {
    "ShearX": (_linspace(0.0, 0.3), True),
    "ShearY": (_linspace(0.0, 0.3), True),
    "TranslateX": (lambda bins, height, width: torch.linspace(0.0, 150 / 331 * width, bins), True),
    "TranslateY": (lambda bins, height, width: torch.linspace(0.0, 150 / 331 * height, bins), True),
    "Rotate": (_linspace(0.0, 30.0), True),
    "Brightness": (_linspace(0.0, 0.9), True),
    "Color": (_linspace(0.0, 0.9), True),
    "Contrast": (_linspace(0.0, 0.9), True),
    "Sharpness": (_linspace(0.0, 0.9), True),
    "Posterize": (_posterize_bits, False),
    "Solarize": (_linspace(1.0, 0.0), False),
    "AutoContrast": (_no_magnitude, False),
    "Equalize": (_no_magnitude, False),
    "Invert": (_no_magnitude, False),
}


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(
            f"Unknown AutoAugment policy {policy!r}; choose one of {', '.join(POLICY_NAMES)}."
        )


def apply_autoaugment_op(images: Tensor, op: str, magnitude: float) -> Tensor:
    """One AutoAugment op with one magnitude on uint8 ``(..., 3, H, W)`` images.

    The ``v2.functional`` call torchvision's AutoAugment makes for the op, with AutoAugment's
    defaults (nearest interpolation, fill None, i.e. zeros); these ops treat every image of a
    batch on its own (histograms, means, min/max are per image)."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

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
    """A policy resolved for one image size: every distinct (op, signed magnitude) it can
    apply, which of them each (sub-policy, slot, sign coin) means, and each op's probability."""

    policy: str  # a key of POLICIES
    actions: tuple[tuple[str, float], ...]
    action_index: Tensor  # (25, 2, 2) int64: [sub-policy, slot, negated] -> index into actions
    probabilities: Tensor  # (25, 2) float32: [sub-policy, slot] -> chance the op is applied


def autoaugment_table(
    height: int, width: int, device: torch.device | str = "cpu", policy: str = "cifar10"
) -> AutoAugmentTable:
    check_policy(policy)
    sub_policies = POLICIES[policy]
    actions: list[tuple[str, float]] = []
    index = torch.empty(len(sub_policies), 2, 2, dtype=torch.int64)
    for policy_index, sub_policy in enumerate(sub_policies):
        for slot, (op, _, magnitude_bin) in enumerate(sub_policy):
            magnitudes_fn, signed = AUTOAUGMENT_SPACE[op]
            magnitudes = magnitudes_fn(AUTOAUGMENT_BINS, height, width)
            magnitude = 0.0 if magnitudes is None else float(magnitudes[magnitude_bin])
            for negated in (0, 1):
                action = (op, -magnitude if negated and signed else magnitude)
                if action not in actions:  # -0.0 == 0.0: a zero magnitude is one action
                    actions.append(action)
                index[policy_index, slot, negated] = actions.index(action)
    probabilities = torch.tensor(
        [[probability for _, probability, _ in sub_policy] for sub_policy in sub_policies]
    )
    return AutoAugmentTable(policy, tuple(actions), index.to(device), probabilities.to(device))


def autoaugment_batch(
    images: Tensor, sub_policies: Tensor, applied: Tensor, negated: Tensor, table: AutoAugmentTable
) -> Tensor:
    """Applies each image's drawn sub-policy (`sub_policies` (N,), `applied` and `negated`
    (N, 2) bool): images are grouped by the (op, magnitude) they draw for a slot, and each
    group goes through `apply_autoaugment_op` at once. One host sync (the group sizes)."""
    slots = torch.arange(2, device=images.device)
    action = table.action_index[sub_policies[:, None], slots, negated.long()]
    # group key per (image, slot): 0 = nothing applied, k + 1 = action k
    keys = torch.where(applied, action + 1, 0)
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
