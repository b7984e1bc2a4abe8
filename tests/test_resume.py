"""Exact resume on the per-image loader path with worker processes: the batches of an epoch
follow from (seed, epoch) alone, so a run killed after an epoch and resumed from its checkpoint
ends with the history and weights of a run never stopped."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nas.arch.architecture import Architecture
from nas.config.data import DataConfig
from nas.config.fields import kept_names
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.batches import make_batches
from nas.data.loading import load_splits
from nas.errors import UserError
from nas.train.fit import fit, set_seed
from nas.train.model import build_model

from helpers import timeless

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

SYNTHETIC = {"dataset": "synthetic", "synthetic_size": 80, "synthetic_classes": 4}  # 72 train
# the per-image path with two worker processes, batches of 16: 5 per epoch
LOADER = {"augment": "recipe", "batch_size": 16}
LOADER_MACHINE = Machine(device="cpu", data_path="loader", workers=2)
IN_PROCESS = dataclasses.replace(LOADER_MACHINE, workers=0)


def fresh_model(seed: int = 0):
    set_seed(seed)
    return build_model(Architecture((8, 16), (1, 1), stem=8, num_classes=4))


def batches_of(source, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(source.epoch(seed))


def assert_same_batches(first, second) -> None:
    assert len(first) == len(second)
    for (images_a, labels_a), (images_b, labels_b) in zip(first, second, strict=True):
        assert torch.equal(labels_a, labels_b)
        assert torch.equal(images_a, images_b)


def test_policy_and_flip_are_recipe_settings_a_resume_keeps():
    config = Recipe()
    assert (config.policy, config.flip) == ("cifar10", True)  # the reference recipe
    assert {"augment", "policy", "flip"} <= set(kept_names(Recipe))
    digits = Recipe(policy="svhn", flip=False)
    assert Recipe.from_dict(digits.to_dict()) == digits
    for bad, named in (({"policy": "mnist"}, "cifar10, svhn, imagenet"), ({"flip": "no"}, "flip")):
        with pytest.raises(UserError, match=named):
            Recipe(**bad)


def test_loader_batches_follow_from_the_epoch_seed_alone():
    splits = load_splits(DataConfig(**SYNTHETIC))
    cpu = torch.device("cpu")
    config = Recipe(**LOADER)
    with_workers = make_batches(splits.train, config, LOADER_MACHINE, splits, cpu)
    later = [batches_of(with_workers, seed) for seed in (11, 12, 11)]
    # the persistent workers' earlier epochs change nothing: epoch 11 again is epoch 11
    assert_same_batches(later[0], later[2])
    assert not torch.equal(later[0][0][1], later[1][0][1])  # another seed, another shuffle
    # a fresh loader (a resumed run) starting at epoch 12 sees what the long-lived one saw
    assert_same_batches(
        batches_of(make_batches(splits.train, config, LOADER_MACHINE, splits, cpu), 12), later[1]
    )
    # nor does the number of processes matter, or which worker took which batch
    in_process = make_batches(splits.train, config, IN_PROCESS, splits, cpu)
    assert len(in_process) == len(with_workers) == 5
    assert_same_batches(batches_of(in_process, 12), later[1])
    labels = torch.cat([labels for _, labels in later[1]])
    assert sorted(labels.tolist()) == sorted(splits.train.labels.tolist())


def test_the_loader_path_applies_the_policy_and_flip_settings():
    splits = load_splits(DataConfig(**SYNTHETIC))
    cpu = torch.device("cpu")

    def first_batch(**settings) -> torch.Tensor:
        config = Recipe(**{**LOADER, **settings})
        images, _ = next(make_batches(splits.train, config, IN_PROCESS, splits, cpu).epoch(5))
        return images

    recipe = first_batch()
    assert not torch.equal(recipe, first_batch(policy="svhn"))
    assert not torch.equal(recipe, first_batch(flip=False))
    assert torch.equal(recipe, first_batch())


def test_a_loader_run_with_workers_stopped_after_epoch_2_resumes_exactly(tmp_path):
    """The resumed run starts fresh worker processes at epoch 3; the straight run's workers have
    lived through epochs 1 and 2: the batches, so the history and weights, must not differ."""
    splits = load_splits(DataConfig(**SYNTHETIC))
    config = Recipe(**LOADER, epochs=4)
    straight_model = fresh_model()
    straight = fit(straight_model, splits, config, LOADER_MACHINE, progress=False)

    checkpoint = tmp_path / "run.ckpt"
    stopped_config = Recipe(**LOADER, epochs=2)
    fit(
        fresh_model(),
        splits,
        stopped_config,
        LOADER_MACHINE,
        checkpoint_path=checkpoint,
        progress=False,
    )
    torch.manual_seed(12345)  # a different process state must not matter
    resumed_model = fresh_model(seed=99)
    resumed = fit(
        resumed_model, splits, config, LOADER_MACHINE, checkpoint_path=checkpoint, progress=False
    )
    assert_same_run(straight, straight_model, resumed, resumed_model)


def assert_same_run(straight, straight_model, resumed, resumed_model) -> None:
    assert [row.epoch for row in resumed.history] == [1, 2, 3, 4]
    assert timeless(resumed.history) == timeless(straight.history)
    assert resumed.best_epoch == straight.best_epoch
    for name, tensor in straight.best_state.items():
        assert torch.equal(tensor, resumed.best_state[name]), name
    resumed_final = resumed_model.state_dict()
    for name, tensor in straight_model.state_dict().items():
        assert torch.equal(tensor, resumed_final[name]), name


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)  # as the test process (conftest.py's one_thread)
    sys.path.insert(0, {tests!r})
    from test_resume import LOADER, LOADER_MACHINE, SYNTHETIC, fresh_model
    from nas.config.data import DataConfig
    from nas.data.loading import load_splits
    from nas.config.recipe import Recipe
    from nas.train.fit import fit

    def kill_after_epoch_2(row):  # runs after the epoch's checkpoint is written
        if row.epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    fit(
        fresh_model(),
        load_splits(DataConfig(**SYNTHETIC)),
        Recipe(**LOADER, epochs=4, policy="svhn", flip=False),
        LOADER_MACHINE,
        checkpoint_path={checkpoint!r},
        callback=kill_after_epoch_2,
        progress=False,
    )
    """
)


@pytest.mark.slow  # ~10 s on an idle 2-core CPU, a third of it the killed process importing torch
def test_a_killed_loader_run_with_workers_resumes_exactly(tmp_path):
    """A real SIGKILL of the training process (and so of its loader workers) right after epoch
    2's checkpoint, with the svhn policy and no flips; resumed in this process."""
    splits = load_splits(DataConfig(**SYNTHETIC))
    config = Recipe(**LOADER, epochs=4, policy="svhn", flip=False)
    straight_model = fresh_model()
    straight = fit(straight_model, splits, config, LOADER_MACHINE, progress=False)

    checkpoint = tmp_path / "run.ckpt"
    script = tmp_path / "killed_run.py"
    script.write_text(
        KILLED_RUN.format(tests=str(Path(__file__).parent), checkpoint=str(checkpoint))
    )
    # output to a file, not a pipe: the killed process's orphaned workers may hold it a while
    with open(tmp_path / "killed_run.log", "wb") as log:
        killed = subprocess.run(
            [sys.executable, str(script)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "killed_run.log").read_text()

    torch.manual_seed(12345)  # a different process state must not matter
    resumed_model = fresh_model(seed=99)
    resumed = fit(
        resumed_model, splits, config, LOADER_MACHINE, checkpoint_path=checkpoint, progress=False
    )

    assert_same_run(straight, straight_model, resumed, resumed_model)
