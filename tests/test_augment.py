"""Tests for nas.data.augment: the per-image path, normalisation and the batched path (rotation,
flip, crop and the whole recipe with each AutoAugment policy), checked against torchvision
through its public API only; the policies themselves: tests/test_autoaugment.py."""

import pytest
import torch
from augment_reference import NEAREST, random_images, torchvision_op, varied_images
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from nas.config.recipe import AUGMENTATIONS, POLICY_NAMES
from nas.data.augment import (
    CROP_PADDING,
    FLIP_PROBABILITY,
    ROTATION_DEGREES,
    BatchAugmenter,
    augment_batch,
    draw_augmentations,
    eval_transform,
    normalize_batch,
    rotate_flip_crop_batch,
    train_transform,
)
from nas.data.autoaugment import (
    AUTOAUGMENT_BINS,
    AUTOAUGMENT_SPACE,
    POLICIES,
    autoaugment_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


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


def test_unknown_policy_names_the_allowed_ones():
    assert POLICY_NAMES == ("cifar10", "svhn", "imagenet")
    for make in (train_transform, BatchAugmenter):
        with pytest.raises(ValueError, match="cifar10, svhn, imagenet"):
            make("recipe", MEAN, STD, policy="mnist")


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("flip", [True, False])
def test_per_image_pipeline_uses_the_policy_and_the_flip_setting(policy, flip):
    steps = train_transform("recipe", MEAN, STD, policy=policy, flip=flip).pipeline(32, 32)
    autoaugments = [step for step in steps.transforms if isinstance(step, v2.AutoAugment)]
    assert [step.policy for step in autoaugments] == [v2.AutoAugmentPolicy(policy)]
    flips = [step for step in steps.transforms if isinstance(step, v2.RandomHorizontalFlip)]
    assert len(flips) == flip
    basic = train_transform("basic", MEAN, STD, policy=policy, flip=flip).pipeline(32, 32)
    assert not any(isinstance(step, v2.AutoAugment) for step in basic.transforms)


def left_to_right_ramp() -> torch.Tensor:
    """An image dark on the left and bright on the right: no rotation of 5 degrees or crop of 2
    pixels can swap the halves' brightness, a horizontal flip always does."""
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8)
    return ramp.expand(3, 32, 32).contiguous()


def flipped(outputs: torch.Tensor) -> torch.Tensor:
    """Per normalised output (N, 3, H, W): whether its left half is the brighter one."""
    half = outputs.shape[-1] // 2
    return outputs[..., :half].mean(dim=(1, 2, 3)) > outputs[..., half:].mean(dim=(1, 2, 3))


@pytest.mark.parametrize("flip", [True, False])
def test_flips_happen_only_when_asked_on_both_paths(flip):
    torch.manual_seed(0)
    ramp = left_to_right_ramp()
    per_image = torch.stack(
        [train_transform("basic", MEAN, STD, flip=flip)(ramp) for _ in range(40)]
    )
    batched = BatchAugmenter("basic", MEAN, STD, flip=flip)(
        ramp.expand(200, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0)
    )
    for outputs in (per_image, batched):
        share = flipped(outputs).float().mean().item()
        assert (0.2 < share < 0.8) if flip else share == 0.0, share


def test_eval_transform_and_normalize_batch_agree():
    images = random_images(5)
    batch = normalize_batch(images, MEAN, STD)
    assert batch.dtype == torch.float32 and batch.shape == images.shape
    for image, normalized in zip(images, batch, strict=True):
        assert torch.equal(eval_transform(MEAN, STD)(image), normalized)
    torch.testing.assert_close(batch, reference_normalize(images), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Batched path
# ---------------------------------------------------------------------------------------------

# ---- rotation, flip, crop and the whole recipe ----------------------------------------------


def test_rotation_matches_torchvision():
    # Exact: the same float32 grid as torchvision's rotate, sampled with nearest neighbours.
    images = random_images(64)
    angles = torch.empty(64).uniform_(-5, 5, generator=torch.Generator().manual_seed(1))
    angles[:6] = torch.tensor([0.0, 5.0, -5.0, 2.5, -1e-3, 4.999])
    unflipped = torch.zeros(64, dtype=torch.bool)
    centred = torch.full((64,), CROP_PADDING)  # the crop that gives back the rotated image
    rotated = rotate_flip_crop_batch(images, angles, unflipped, centred, centred)
    for image, angle, ours in zip(images, angles.tolist(), rotated, strict=True):
        theirs = TF.rotate(image, angle, interpolation=NEAREST, fill=0)  # RandomRotation's fill
        assert torch.equal(ours, theirs), angle


def test_flip_and_crop_match_torchvision():
    images = random_images(1).expand(50, -1, -1, -1)
    offsets = torch.arange(5)
    tops = offsets.repeat_interleave(5).repeat(2)
    lefts = offsets.repeat(5).repeat(2)
    flips = torch.arange(50) >= 25
    cropped = rotate_flip_crop_batch(images, torch.zeros(50), flips, tops, lefts)
    for index in range(50):
        image = images[index]
        if flips[index]:
            image = TF.horizontal_flip(image)
        padded = TF.pad(image, [CROP_PADDING], fill=0)
        theirs = TF.crop(padded, int(tops[index]), int(lefts[index]), 32, 32)
        assert torch.equal(cropped[index], theirs), index


def torchvision_reference(image: torch.Tensor, draws, index: int) -> torch.Tensor:
    """The recipe on one image through torchvision's per-image functional ops, for given
    draws; the sub-policy and its magnitudes are the ones the tests above tie to torchvision."""
    height, width = image.shape[-2:]
    out = TF.rotate(image, float(draws.angles[index]), interpolation=NEAREST, fill=0)
    if draws.flips[index]:
        out = TF.horizontal_flip(out)
    out = TF.pad(out, [CROP_PADDING], fill=0)
    out = TF.crop(out, int(draws.crop_tops[index]), int(draws.crop_lefts[index]), height, width)
    sub_policy = POLICIES[draws.policy][int(draws.sub_policies[index])]
    for slot, (op, _, magnitude_bin) in enumerate(sub_policy):
        if not draws.applied[index, slot]:
            continue
        magnitudes_fn, signed = AUTOAUGMENT_SPACE[op]
        magnitudes = magnitudes_fn(AUTOAUGMENT_BINS, height, width)
        magnitude = 0.0 if magnitudes is None else float(magnitudes[magnitude_bin])
        if signed and draws.negated[index, slot]:
            magnitude *= -1
        out = torchvision_op(out, op, magnitude)
    return out


@pytest.mark.parametrize(
    "policy, size, count, flip",
    [
        # 250 images: every sub-policy about 10 times, so every group of both slots is exercised
        ("cifar10", (32, 32), 250, True),
        ("cifar10", (24, 40), 250, True),
        ("svhn", (32, 32), 250, False),
        ("imagenet", (32, 32), 250, True),
    ],
)
def test_whole_recipe_matches_torchvision_for_the_same_draws(policy, size, count, flip):
    images = varied_images(count) if size == (32, 32) else random_images(count, *size)
    generator = torch.Generator().manual_seed(3)
    draws = draw_augmentations(len(images), policy, generator=generator, flip=flip)
    assert bool(draws.flips.any()) == flip
    augmented = augment_batch(images, draws, autoaugment_table(*size, policy=policy))
    for index, image in enumerate(images):
        assert torch.equal(augmented[index], torchvision_reference(image, draws, index)), index


def chi_square(counts: torch.Tensor) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


# Chi-square critical values at p = 0.001 (the draws are seeded, so a pass is deterministic;
# the bound only has to be loose enough for a correct sampler and tight enough for a wrong one).
CHI2_CRITICAL = {4: 18.47, 9: 27.88, 24: 51.18}


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_draw_statistics(policy):
    count = 20_000
    draws = draw_augmentations(count, policy, generator=torch.Generator().manual_seed(7))

    def within(rate: float, expected: float, samples: int) -> bool:
        standard_error = max(expected * (1 - expected), 0.01) ** 0.5 / samples**0.5
        return abs(rate - expected) <= 4 * standard_error

    sub_policy_counts = torch.bincount(draws.sub_policies, minlength=25).float()
    assert chi_square(sub_policy_counts) < CHI2_CRITICAL[24]
    for policy_index, sub_policy in enumerate(POLICIES[policy]):
        chosen = draws.sub_policies == policy_index
        for slot, (_, probability, _) in enumerate(sub_policy):
            rate = draws.applied[chosen, slot].float().mean().item()
            assert within(rate, probability, int(chosen.sum())), (policy_index, slot, rate)
    assert within(draws.negated.float().mean().item(), 0.5, 2 * count)
    assert within(draws.flips.float().mean().item(), FLIP_PROBABILITY, count)
    assert draws.angles.min() >= -ROTATION_DEGREES and draws.angles.max() < ROTATION_DEGREES
    angle_counts = torch.histc(draws.angles, bins=10, min=-ROTATION_DEGREES, max=ROTATION_DEGREES)
    assert chi_square(angle_counts) < CHI2_CRITICAL[9]
    for offsets in (draws.crop_tops, draws.crop_lefts):
        assert offsets.min() == 0 and offsets.max() == 2 * CROP_PADDING
        assert chi_square(torch.bincount(offsets, minlength=5).float()) < CHI2_CRITICAL[4]
    # tops and lefts are drawn independently: all 25 pairs appear about equally often
    pairs = torch.bincount(draws.crop_tops * 5 + draws.crop_lefts, minlength=25).float()
    assert chi_square(pairs) < CHI2_CRITICAL[24]


def test_without_flips_no_image_is_flipped_and_without_a_policy_no_autoaugment():
    draws = draw_augmentations(1000, None, generator=torch.Generator().manual_seed(7), flip=False)
    assert not draws.flips.any()
    assert draws.policy is draws.sub_policies is draws.applied is draws.negated is None


@pytest.mark.parametrize("mode", ["recipe", "basic"])
def test_batch_randomness_is_per_image_and_seeded(mode):
    images = random_images(1).expand(16, -1, -1, -1).contiguous()
    augmenter = BatchAugmenter(mode, MEAN, STD)
    out = augmenter(images, torch.Generator().manual_seed(0))
    distinct = {tuple(row.tolist()) for row in out.flatten(1)[:, ::7]}
    assert len(distinct) >= 14  # one draw for the whole batch would give 1
    again = augmenter(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = augmenter(images, torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_batch_augmenter_applies_its_policy(policy):
    images = varied_images(40)
    augmenter = BatchAugmenter("recipe", MEAN, STD, policy=policy, flip=False)
    out = augmenter(images, torch.Generator().manual_seed(4))
    # the same draws (the augmenter draws from the generator it is given), applied image by
    # image with torchvision's functional ops, then normalised independently of nas
    draws = draw_augmentations(40, policy, generator=torch.Generator().manual_seed(4), flip=False)
    expected = torch.stack(
        [torchvision_reference(image, draws, index) for index, image in enumerate(images)]
    )
    torch.testing.assert_close(out, reference_normalize(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", AUGMENTATIONS)
def test_batch_augmenter_output(mode):
    images = random_images(10, 24, 40)
    out = BatchAugmenter(mode, MEAN, STD)(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.device == images.device
    assert LOWEST <= out.min().item() and out.max().item() <= HIGHEST
    if mode == "none":
        torch.testing.assert_close(out, reference_normalize(images), rtol=0, atol=1e-6)
    assert BatchAugmenter(mode, MEAN, STD)(images[:0]).shape == (0, 3, 24, 40)


def test_batch_augmenter_rejects_bad_input():
    with pytest.raises(ValueError, match="recipe, basic, none"):
        BatchAugmenter("autoaugment", MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        BatchAugmenter("recipe", MEAN, STD)(torch.zeros(2, 3, 32, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_batch_augmenter_on_cuda_matches_torchvision_for_the_same_draws(policy):
    images = varied_images(250)
    generator = torch.Generator(device="cuda").manual_seed(3)
    draws = draw_augmentations(len(images), policy, "cuda", generator)
    table = autoaugment_table(32, 32, "cuda", policy=policy)
    augmented = augment_batch(images.cuda(), draws, table).cpu()
    cpu_draws = type(draws)(
        **{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in vars(draws).items()}
    )
    mismatched = sum(
        not torch.equal(augmented[i], torchvision_reference(image.cuda(), cpu_draws, i).cpu())
        for i, image in enumerate(images)
    )
    # Expected exact (same kernels as torchvision on the same device), but cuBLAS may pick a
    # different kernel for the batched grid than for one image, which could move a nearest-
    # neighbour tie; so a couple of images are tolerated.
    assert mismatched <= 2
