"""Tests for nas.data.autoaugment: the three AutoAugment policies' tables and batched ops against
torchvision's own ``v2.AutoAugment`` and its per-image functional ops, public API only."""

import pytest
import torch
from augment_reference import torchvision_op, varied_images
from torchvision.transforms import v2

from nas.config.recipe import POLICY_NAMES
from nas.data.autoaugment import (
    AUTOAUGMENT_BINS,
    AUTOAUGMENT_SPACE,
    POLICIES,
    apply_autoaugment_op,
    autoaugment_batch,
    autoaugment_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread


def every_policy_action() -> list[tuple[str, float]]:
    """Every distinct (op, signed magnitude) any policy can apply to a 32x32 image."""
    actions = []
    for policy in POLICY_NAMES:
        actions += [a for a in autoaugment_table(32, 32, policy=policy).actions if a not in actions]
    return actions


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_table_covers_both_signs_of_every_signed_op(policy):
    table = autoaugment_table(32, 32, policy=policy)
    assert table.policy == policy and len(POLICIES[policy]) == 25
    for policy_index, sub_policy in enumerate(POLICIES[policy]):
        for slot, (op, probability, _) in enumerate(sub_policy):
            positive = table.actions[table.action_index[policy_index, slot, 0]]
            negative = table.actions[table.action_index[policy_index, slot, 1]]
            assert positive[0] == negative[0] == op
            signed = AUTOAUGMENT_SPACE[op][1]
            assert negative[1] == (-positive[1] if signed else positive[1])
            assert table.probabilities[policy_index, slot] == pytest.approx(probability)
    # a duplicate action would be grouped twice
    assert len(set(table.actions)) == len(table.actions)


@pytest.mark.parametrize("op, magnitude", every_policy_action(), ids=lambda value: str(value))
def test_each_policy_operation_on_a_batch_matches_it_per_image(op, magnitude):
    # Exact on uint8: the batched call runs the same functional op on the whole group.
    images = varied_images(6)
    batched = apply_autoaugment_op(images, op, magnitude)
    for image, ours in zip(images, batched, strict=True):
        assert torch.equal(ours, torchvision_op(image, op, magnitude)), (op, magnitude)


# ---- the policies against torchvision's own v2.AutoAugment ----------------------------------

REPLAY_SEEDS = 400  # v2.AutoAugment calls per policy: every sub-policy about 16 times
REPLAY_SIZE = (24, 40)  # not square: TranslateX scales with the width, TranslateY the height


def every_draw(policy: str) -> list[tuple[int, bool, bool, bool, bool]]:
    """Every (sub-policy, applied 1, applied 2, negated 1, negated 2) a policy can draw."""
    flags = (False, True)
    return [
        (index, a1, a2, n1, n2)
        for index in range(len(POLICIES[policy]))
        for a1 in flags for a2 in flags for n1 in flags for n2 in flags
    ]  # fmt: skip


def outputs_of_every_draw(policy: str, images: torch.Tensor) -> dict[tuple, torch.Tensor]:
    """Our batched path's output on `images` for every draw of `policy`, in one batch."""
    draws = every_draw(policy)
    count = len(images)
    columns = torch.tensor(draws).repeat_interleave(count, dim=0)  # draw-major rows
    out = autoaugment_batch(
        images.repeat(len(draws), 1, 1, 1),
        columns[:, 0], columns[:, 1:3].bool(), columns[:, 3:5].bool(),
        autoaugment_table(*images.shape[-2:], policy=policy),
    )  # fmt: skip
    return dict(zip(draws, out.split(count), strict=True))


@pytest.fixture(scope="module")
def torchvision_runs(one_thread):
    """Per policy: three varied images, our outputs for every draw, and v2.AutoAugment's
    output on the three (one draw for all three) after torch.manual_seed(seed), per seed."""
    images = varied_images(3, *REPLAY_SIZE, seed=5)
    runs = {}
    for policy in POLICY_NAMES:
        autoaugment = v2.AutoAugment(v2.AutoAugmentPolicy(policy))
        theirs = []
        for seed in range(REPLAY_SEEDS):
            torch.manual_seed(seed)
            theirs.append(autoaugment(images))
        runs[policy] = (images, outputs_of_every_draw(policy, images), theirs)
    return runs


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_torchvision_output_is_one_of_our_draws(policy, torchvision_runs):
    """Version-proof: whatever order torchvision draws in, each output it gives must be one our
    table and batched ops give for some draw (a wrong op, bin or magnitude would not be)."""
    images, ours, theirs = torchvision_runs[policy]
    ours_by_bytes = {out.numpy().tobytes() for out in ours.values()}
    unexplained = [
        seed for seed, out in enumerate(theirs) if out.numpy().tobytes() not in ours_by_bytes
    ]
    assert unexplained == []
    changed = {out.numpy().tobytes() for out in theirs if not torch.equal(out, images)}
    assert len(changed) >= 20  # the seeds exercised many different operations


def torchvisions_draw(policy: str, seed: int, height: int, width: int) -> tuple:
    """The draw v2.AutoAugment makes after torch.manual_seed(seed), replayed with the same
    calls on torch's global generator that its forward makes in torchvision 0.15 to 0.29: the
    sub-policy (randint), then per op: applied when rand <= probability, and for an applied op
    with a signed magnitude, negated when rand <= 0.5."""
    torch.manual_seed(seed)
    index = int(torch.randint(len(POLICIES[policy]), ()))
    sub_policy = POLICIES[policy][index]
    applied, negated = [False, False], [False, False]
    for slot, (op, probability, _) in enumerate(sub_policy):
        if not torch.rand(()) <= probability:
            continue
        applied[slot] = True
        magnitudes_fn, signed = AUTOAUGMENT_SPACE[op]
        if magnitudes_fn(AUTOAUGMENT_BINS, height, width) is not None and signed:
            negated[slot] = bool(torch.rand(()) <= 0.5)
    return (index, *applied, *negated)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_our_draw_of_torchvisions_random_values_gives_its_output(policy, torchvision_runs):
    """Bit-exact for the same draws: replaying v2.AutoAugment's random values through our table
    and batched ops gives its output for every seed (a wrong probability would not)."""
    images, ours, theirs = torchvision_runs[policy]
    mismatched = [
        seed
        for seed, out in enumerate(theirs)
        if not torch.equal(ours[torchvisions_draw(policy, seed, *REPLAY_SIZE)], out)
    ]
    assert len(mismatched) < REPLAY_SEEDS // 2, (
        "most seeds disagree: torchvision's AutoAugment has changed the order of its random "
        "draws; update torchvisions_draw"
    )
    assert mismatched == []
