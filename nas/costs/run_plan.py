"""Owns how much training a run asks for and what that costs once one training step is timed:
the sizes of its data (counted from the settings, never loaded), its steps and epochs, the
candidate that stands for a search's models, and the arithmetic from a step's seconds to the
run's.

Claims:
- Nothing is loaded: the dataset's size is counted from its settings by `nas.data.counting`
  (its row's fixed sizes, as CIFAR's; the synthetic size; an image folder's files, listed by
  the same function its reader reads them through), as `nas.data.loading.load_splits` would
  split it.
- The arithmetic (`RunPlan.seconds`) is linear in trials, epochs and images: the recipe's
  training steps, plus each epoch's validation pass counted as a third of a training step per
  image (forward only, no backward or optimizer step); a retrain adds one pass over the test
  set; models training side by side on several GPUs divide it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from nas.arch.architecture import Architecture
from nas.arch.counts import count_macs, count_params
from nas.config.data import DataConfig
from nas.data.counting import split_sizes

TRAIN_FLOPS_PER_MAC = 6  # forward 2 FLOPs per MAC, backward twice the forward
VALIDATION_SHARE = 1 / 3  # a validation image costs the forward third of a training image
SLOW_FLOPS = 1e9  # training FLOP/s that one core of any CPU the tool supports exceeds
SLOW_STEP_SECONDS = 0.02  # per-step overhead (launches, optimizer) a slow machine may need
CANDIDATE_SAMPLES = 25  # candidates under the budget sampled to pick a typical one


@dataclass(frozen=True)
class DataShape:
    """What the run's data costs, counted from its settings without reading it."""

    train_images: int  # per epoch, after the validation split and --subset
    val_images: int  # validated after every epoch
    test_images: int  # evaluated once by a retrain
    image_size: int  # pixels, square
    num_classes: int


def data_shape(data: DataConfig) -> DataShape | None:
    """The split sizes `load_splits` would give, or None when unknown (no usable folder)."""
    sizes = split_sizes(data)
    if sizes is None:
        return None
    val = round(sizes.train * data.val_fraction)
    train = sizes.train - val
    if data.subset is not None:
        train = min(train, data.subset)
    if data.image_size is None:  # the commands choose it first; a folder's: headers only
        from nas.data.loading import choose_image_size

        data = choose_image_size(data)[0]
    return DataShape(train, val, sizes.test, data.image_size, sizes.classes)


@dataclass(frozen=True)
class RunPlan:
    """How much training a run asks for; its cost follows from the time of one step."""

    runs: int  # models trained to the end: trials still to train, or 1 for a retrain
    epochs: int  # epochs per model
    batch_size: int  # images per training step
    shape: DataShape
    parallel: int = 1  # models training at once (one worker per GPU)
    test_pass: bool = False  # a retrain evaluates the test set once at the end

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.shape.train_images / self.batch_size)

    def seconds(self, step_seconds: float) -> float:
        """The whole run's seconds when one training step of `batch_size` images takes
        `step_seconds`."""
        per_image = step_seconds / self.batch_size
        epoch = (
            self.steps_per_epoch * step_seconds
            + self.shape.val_images * per_image * VALIDATION_SHARE
        )
        test = self.shape.test_images * per_image * VALIDATION_SHARE if self.test_pass else 0.0
        return self.runs * (self.epochs * epoch + test) / max(1, self.parallel)

    def slow_seconds(self, macs: int) -> float:
        """The run's seconds on a deliberately slow machine (`SLOW_FLOPS`): an upper bound that
        needs no timing, used to skip the estimate for runs that are quick anyway."""
        flops = TRAIN_FLOPS_PER_MAC * macs * self.batch_size
        return self.seconds(SLOW_STEP_SECONDS + flops / SLOW_FLOPS)


def typical_candidate(
    space,
    budget: int,
    num_classes: int,
    image_size: int,
    samples: int = CANDIDATE_SAMPLES,
    seed: int = 0,
) -> Architecture | None:
    """The median by MACs at `image_size` (what training time follows) of `samples` uniformly
    sampled candidates under the budget; None if the space has hardly any under it."""
    rng = random.Random(seed)
    under = []
    for _ in range(samples * 20):  # a budget that rejects 95 % of the space still gives some
        arch = space.sample(rng, num_classes)
        if count_params(arch) <= budget:
            under.append(arch)
            if len(under) == samples:
                break
    if not under:
        return None
    return sorted(under, key=lambda arch: count_macs(arch, image_size))[len(under) // 2]
