"""The cost estimate printed before a search or a retrain (nas.costs.estimate): its arithmetic and
the data sizes it counts without loading (nas.costs.run_plan), its timed step
(nas.costs.step_timing), the
lines a slow CPU run gets, and that quick runs (the tests' own) are not timed at all."""

from __future__ import annotations

import contextlib
import io
import random
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from PIL import Image

from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.arch.presets import PRESETS
from nas.arch.space import SearchSpace
from nas.cli.main import main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.costs.estimate import (
    ADVICE_HOURS,
    announce_retrain_cost,
    announce_search_cost,
    cost_lines,
    trained_so_far,
)
from nas.costs.run_plan import DataShape, RunPlan, data_shape
from nas.costs.step_timing import time_training_step
from nas.data.loading import load_splits
from nas.search.loop import open_study

from helpers import TorchCalls

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml"
SHAPE = DataShape(train_images=640, val_images=300, test_images=100, image_size=32, num_classes=10)
ARCH = Architecture(channels=(8, 8), blocks=(1, 1), conv_kernel=3, skip_kernel=1, stem=8)
CPU = Machine(device="cpu")


def test_the_arithmetic_counts_steps_and_a_third_of_a_step_per_validation_image():
    plan = RunPlan(runs=3, epochs=4, batch_size=64, shape=SHAPE)
    assert plan.steps_per_epoch == 10
    # per epoch: 10 steps of 0.2 s, and 300 validation images at a third of 0.2/64 s each
    search_cost = plan.seconds(0.2)
    assert search_cost == pytest.approx(3 * 4 * (10 * 0.2 + 300 * 0.2 / 64 / 3))
    retrain = RunPlan(runs=1, epochs=4, batch_size=64, shape=SHAPE, test_pass=True)
    retrain_cost = retrain.seconds(0.2)
    assert retrain_cost == pytest.approx(4 * 2.3125 + 100 * 0.2 / 64 / 3)


def test_the_estimate_scales_linearly_with_trials_epochs_and_workers_on_gpus():
    plan = RunPlan(runs=5, epochs=10, batch_size=64, shape=SHAPE)
    base = plan.seconds(0.1)
    costs = {
        "twice the trials": replace(plan, runs=10).seconds(0.1),
        "three times the epochs": replace(plan, epochs=30).seconds(0.1),
        "two GPUs": replace(plan, parallel=2).seconds(0.1),
        "a step three times as long": plan.seconds(0.3),
        "no trial left": replace(plan, runs=0).seconds(0.1),
    }
    assert costs == {
        "twice the trials": pytest.approx(2 * base),
        "three times the epochs": pytest.approx(3 * base),
        "two GPUs": pytest.approx(base / 2),
        "a step three times as long": pytest.approx(3 * base),
        "no trial left": 0,
    }


def test_data_sizes_are_counted_as_load_splits_makes_them(tmp_path):
    synthetic = DataConfig(dataset="synthetic", synthetic_size=200, synthetic_classes=3, subset=50)
    folder = tmp_path / "images"
    for split, count in (("train", 12), ("test", 3)):
        for name in ("cat", "dog"):
            (folder / split / name).mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (8, 8)).save(folder / split / name / f"{index}.png")
    images = DataConfig(dataset="imagefolder", data_dir=str(folder), image_size=8)
    # no size given: the folder's own 8 px, read from the headers as the loading does
    for config in (synthetic, images, replace(images, image_size=None)):
        splits = load_splits(config)
        assert data_shape(config) == DataShape(
            len(splits.train), len(splits.val), len(splits.test), splits.image_shape[-1],
            splits.num_classes,
        )  # fmt: skip
    assert data_shape(DataConfig()) == DataShape(45_000, 5_000, 10_000, 32, 10)
    # counted, not loaded: files no decoder could read are counted all the same
    for path in folder.rglob("*.png"):
        path.write_bytes(b"not an image")
    assert data_shape(images) == DataShape(22, 2, 6, 8, 2)
    assert data_shape(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "no"))) is None


def test_a_slow_cpu_search_gets_its_cost_and_the_flags_that_bring_it_down():
    plan = RunPlan(runs=50, epochs=40, batch_size=64, shape=replace(SHAPE, train_images=45_000))
    lines = cost_lines(plan, 2.0, "cpu (2 cores, 2 threads)", ARCH, search=True)
    total = plan.seconds(2.0)
    assert total > ADVICE_HOURS * 3600
    assert len(lines) == 2
    estimate, advice = lines
    days = total / 86400
    assert estimate.startswith(f"estimated cost on cpu (2 cores, 2 threads): about {days:.1f} days")
    assert "50 trials x 40 epochs x 704 steps of 64 at 2 s per step" in estimate
    assert f"{count_params(ARCH):,} parameters" in estimate
    for flag in ("--smoke", "--subset N", "--epochs N", "--trials N", "--device cuda"):
        assert flag in advice
    cheaper = replace(plan, epochs=10, shape=replace(plan.shape, train_images=5000))
    hours = cheaper.seconds(2.0) / 3600
    assert f"--subset 5000 --epochs 10: about {hours:.1f} h" in advice
    # the same run on a GPU, or a short one on the CPU: the estimate only
    assert len(cost_lines(plan, 2.0, "cuda:0 (NVIDIA H100)", ARCH, search=True)) == 1
    assert len(cost_lines(replace(plan, runs=1), 0.01, "cpu", ARCH, search=True)) == 1
    retrain = cost_lines(replace(plan, runs=1), 20.0, "cpu", ARCH, search=False)
    assert len(retrain) == 2 and "--smoke" not in retrain[1] and "--trials" not in retrain[1]
    assert "for 40 epochs" in retrain[0]


def test_a_timed_step_times_the_recipe_batch_and_leaves_the_random_state_as_it_was(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(3)
    random.seed(3)
    before = torch.get_rng_state(), random.getstate()
    timing = time_training_step(ARCH, Recipe(batch_size=16), CPU, 32, budget=0.3)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    # a 2k-parameter net steps 16 images of 32 px in milliseconds: no need to time fewer
    assert timing.timed_batch == 16 and timing.steps >= 1
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("batch_size", [2, 16])  # timed at the probe's size, and at its own
def test_a_timed_step_with_no_time_left_times_exactly_one_step(batch_size):
    recipe = Recipe(batch_size=batch_size)
    assert time_training_step(ARCH, recipe, CPU, 32, budget=0.0).steps == 1


def test_a_timed_step_feeds_the_architecture_its_own_channels():
    gray = replace(ARCH, in_channels=1)  # a 3-channel batch would not fit its first convolution
    timing = time_training_step(gray, Recipe(batch_size=4), CPU, 16, budget=0.1)
    assert timing.timed_batch == 4 and timing.steps >= 1


def test_quick_runs_like_the_tests_are_not_timed(tmp_path):
    config = SearchConfig(
        space=str(TINY), budget=8000, trials=5, storage=f"sqlite:///{tmp_path}/s.db"
    )
    data = DataConfig(dataset="synthetic", subset=48)
    recipe = Recipe(epochs=2, batch_size=16, augment="none")
    with TorchCalls() as calls:  # timing a step would run the model: convolutions, a loss
        assert announce_search_cost(config, data, recipe, CPU, ["cpu"], out=pytest.fail) == []
        assert announce_retrain_cost(ARCH, data, recipe, CPU, out=pytest.fail) == []
        assert (
            announce_retrain_cost(ARCH, data, replace(recipe, epochs=0), CPU, out=pytest.fail) == []
        )
    assert calls.names == []
    assert list(tmp_path.iterdir()) == []  # the store was not touched


def test_nothing_is_printed_where_the_run_itself_will_refuse(tmp_path):
    data = DataConfig(dataset="synthetic")
    recipe = Recipe(epochs=40)
    over = SearchConfig(space=str(TINY), budget=100)  # under the smallest candidate
    assert announce_search_cost(over, data, recipe, CPU, ["cpu"], out=pytest.fail) == []
    missing = SearchConfig(space="missing.yaml")
    assert announce_search_cost(missing, data, recipe, CPU, ["cpu"], out=pytest.fail) == []
    no_gpu = Machine(device="cuda:9")
    long_recipe = replace(recipe, epochs=150)  # long enough to be timed
    assert (
        announce_retrain_cost(PRESETS["paper-model1"], data, long_recipe, no_gpu, out=pytest.fail)
        == []
    )
    # a missing image folder, for a run long enough to be timed
    no_folder = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "no"), image_size=32)
    long_search = SearchConfig(space=str(TINY), budget=8000, trials=50)
    assert announce_search_cost(long_search, no_folder, recipe, CPU, ["cpu"], out=pytest.fail) == []
    long_retrain = replace(recipe, epochs=150)
    arch = PRESETS["paper-model1"]
    assert announce_retrain_cost(arch, no_folder, long_retrain, CPU, out=pytest.fail) == []


def store_files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Each file's bytes and modification time, but for SQLite's shared-memory index (-shm),
    which every reader of a WAL store updates."""
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in folder.iterdir()
        if not path.name.endswith("-shm")
    }


def test_trials_a_resumed_study_trained_are_counted_off(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    config = SearchConfig(space=str(TINY), budget=8000, storage=url, study="s")
    assert trained_so_far(url, "s") == 0  # no store yet: nothing is created
    assert not (tmp_path / "s.db").exists()
    data, recipe = DataConfig(dataset="synthetic"), Recipe()
    study = open_study(config, SearchSpace.load(TINY), data, recipe, num_classes=10, image_size=32)
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    files = store_files(tmp_path)
    assert trained_so_far(url, "s") == 2
    assert trained_so_far(url, "other") == 0
    assert store_files(tmp_path) == files  # only read: no byte, time stamp or new file


def test_a_long_search_prints_its_estimate_right_after_its_first_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/s.db"
    data, recipe = DataConfig(dataset="synthetic"), Recipe()
    space = SearchSpace.load(TINY)
    config = SearchConfig(space=str(TINY), budget=8000, storage=url)
    open_study(config, space, data, recipe, num_classes=10, image_size=32)
    out, err = io.StringIO(), io.StringIO()
    argv = ["search", "--dataset", "synthetic", "--device", "cpu", "--space", str(TINY)]
    argv += ["--budget", "9000", "--storage", url]  # 50 trials x 40 epochs; then refused
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("study 'nas'")
    assert lines[1].startswith("estimated cost on cpu") and "50 trials x 40 epochs" in lines[1]
    assert "8,000" in err.getvalue()  # the run's own refusal follows, unchanged


def test_the_parent_of_gpu_workers_times_nothing_and_says_so(tmp_path):
    """Issue 31 item 5: the estimate's timed step would keep a CUDA context on the first GPU in
    the parent for the whole search. The devices are only names here: nothing resolves them."""
    config = SearchConfig(space=str(TINY), budget=8000, storage=f"sqlite:///{tmp_path}/s.db")
    data, recipe = DataConfig(dataset="synthetic"), Recipe()  # 50 trials x 40 epochs: timed
    said = []
    with TorchCalls() as calls:
        lines = announce_search_cost(config, data, recipe, CPU, ["cuda:0", "cuda:1"], said.append)
    expected = (
        "no cost estimate before 2 GPU workers: timing a step in this process would keep a "
        "CUDA context on cuda:0 for the whole search, memory its worker needs; the progress "
        "lines show each trial's time"
    )
    assert lines == said == [expected]
    assert calls.names == []  # no model ran
    assert torch.cuda.is_initialized() is False
    assert list(tmp_path.iterdir()) == []
