"""Tests for nas.augment: the per-image path, normalisation and the batched path."""

import pytest
import torch

from nas.augment import AUGMENTATIONS, eval_transform, normalize_batch, train_transform

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def random_images(count: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=generator)


def reference_normalize(images: torch.Tensor) -> torch.Tensor:
    """(x / 255 - mean) / std, written independently of torchvision."""
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (images.float() / 255 - mean) / std


# Normalised values of 0 and 255 bound every output, whatever the augmentation did.
LOWEST = min((0 - m) / s for m, s in zip(MEAN, STD, strict=True)) - 1e-5
HIGHEST = max((1 - m) / s for m, s in zip(MEAN, STD, strict=True)) + 1e-5


@pytest.mark.parametrize("mode", AUGMENTATIONS)
@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_train_transform_shape_dtype_range(mode, size):
    torch.manual_seed(0)
    transform = train_transform(mode, MEAN, STD)
    for image in random_images(8, *size):
        out = transform(image)
        assert out.shape == (3, *size)
        assert out.dtype == torch.float32
        assert LOWEST <= out.min().item() and out.max().item() <= HIGHEST


def test_train_transform_none_is_normalisation_only():
    image = random_images(1)[0]
    out = train_transform("none", MEAN, STD)(image)
    # torchvision scales by multiplying with 1/255, which can differ from x/255 in the last bit.
    torch.testing.assert_close(out, reference_normalize(image), rtol=0, atol=1e-6)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    assert torch.equal(out, (image.float() * (1 / 255) - mean) / std)


def test_train_transform_augments_in_other_modes():
    torch.manual_seed(0)
    image = random_images(1)[0]
    for mode in ("recipe", "basic"):
        outputs = [train_transform(mode, MEAN, STD)(image) for _ in range(4)]
        assert not all(torch.equal(outputs[0], out) for out in outputs[1:])


def test_unknown_mode_names_the_allowed_ones():
    with pytest.raises(ValueError, match="recipe, basic, none"):
        train_transform("autoaugment", MEAN, STD)


def test_eval_transform_and_normalize_batch_agree():
    images = random_images(5)
    batch = normalize_batch(images, MEAN, STD)
    assert batch.dtype == torch.float32 and batch.shape == images.shape
    for image, normalized in zip(images, batch, strict=True):
        assert torch.equal(eval_transform(MEAN, STD)(image), normalized)
    torch.testing.assert_close(batch, reference_normalize(images), rtol=0, atol=1e-6)
