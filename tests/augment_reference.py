"""Reference images and per-image AutoAugment ops for tests/test_augment.py and
tests/test_autoaugment.py (plain helpers, torchvision's public API only)."""

from __future__ import annotations

import math

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

NEAREST = v2.InterpolationMode.NEAREST


def random_images(count: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=generator)


def varied_images(count: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Random images plus low-contrast and dark ones, so AutoContrast, Equalize, Posterize and
    Solarize have something non-trivial to do."""
    images = random_images(count, height, width, seed=seed)
    images[1::3] = images[1::3] // 4 + 100  # low contrast
    images[2::3] = images[2::3] // 8  # dark
    return images


def torchvision_op(image: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """One AutoAugment op on one image, written from torchvision's documented AutoAugment with
    its defaults (nearest interpolation, zero fill) with the public functional API."""
    if op in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(magnitude))
        shear = [degrees, 0.0] if op == "ShearX" else [0.0, degrees]
        return TF.affine(
            image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
            interpolation=NEAREST, fill=None, center=[0, 0],
        )  # fmt: skip
    if op in ("TranslateX", "TranslateY"):
        translate = [int(magnitude), 0] if op == "TranslateX" else [0, int(magnitude)]
        return TF.affine(
            image, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0],
            interpolation=NEAREST, fill=None,
        )  # fmt: skip
    one_image_ops = {
        "Rotate": lambda: TF.rotate(image, magnitude, interpolation=NEAREST, fill=None),
        "Brightness": lambda: TF.adjust_brightness(image, 1.0 + magnitude),
        "Color": lambda: TF.adjust_saturation(image, 1.0 + magnitude),
        "Contrast": lambda: TF.adjust_contrast(image, 1.0 + magnitude),
        "Sharpness": lambda: TF.adjust_sharpness(image, 1.0 + magnitude),
        "Posterize": lambda: TF.posterize(image, int(magnitude)),
        "Solarize": lambda: TF.solarize(image, 255.0 * magnitude),
        "AutoContrast": lambda: TF.autocontrast(image),
        "Equalize": lambda: TF.equalize(image),
        "Invert": lambda: TF.invert(image),
    }
    return one_image_ops[op]()
