"""The training recipe: learning, exact resume, non-finite losses, evaluation."""

import dataclasses
import gc
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas.data.batches
import nas.data.device_memory
import nas.train.fit
from nas.arch.architecture import Architecture
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.batches import make_batches, memory_format
from nas.data.loading import TensorData, load_splits
from nas.errors import UserError
from nas.train.checkpoint import load_checkpoint, save_checkpoint
from nas.train.devices import resolve_device
from nas.train.fit import NonFiniteLossError, evaluate, fit, make_trainer, set_seed
from nas.train.model import build_model
from nas.train.state import EpochRow, FitResult, Trainer

from helpers import TorchCalls, timeless

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread
TINY = Architecture((8, 16), (1, 1), stem=8)


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataConfig(dataset="synthetic", synthetic_size=800, synthetic_classes=4))


@pytest.fixture(scope="module")
def few():
    """A smaller split, for tests that need epochs to run, not a model to learn."""
    return load_splits(DataConfig(dataset="synthetic", synthetic_size=150, synthetic_classes=4))


CPU = Machine(device="cpu", workers=0)
MACHINE_NAMES = {field.name for field in dataclasses.fields(Machine)}


def quick(**overrides) -> tuple[Recipe, Machine]:
    """A short recipe and the CPU machine, each with the `overrides` that are its own."""
    recipe = {"epochs": 2, "augment": "none"}
    recipe.update({k: v for k, v in overrides.items() if k not in MACHINE_NAMES})
    machine = {k: v for k, v in overrides.items() if k in MACHINE_NAMES}
    return Recipe(**recipe), dataclasses.replace(CPU, **machine)


def fresh_model(seed: int = 0) -> nn.Module:
    set_seed(seed)
    return build_model(Architecture(TINY.channels, TINY.blocks, stem=8, num_classes=4))


def test_recipe_defaults_match_the_reference():
    config = Recipe()
    assert (config.epochs, config.batch_size, config.optimizer, config.lr) == (
        150,
        64,
        "adam",
        1e-3,
    )
    assert (config.lr_factor, config.lr_patience, config.augment) == (0.1, 10, "recipe")
    assert Recipe.from_dict(config.to_dict()) == config


def test_a_tiny_net_learns_synthetic_data_well_above_chance(splits):
    result = fit(fresh_model(), splits, *quick(epochs=6), progress=False)
    assert len(result.history) == 6
    assert result.best_val_accuracy > 0.6  # chance is 0.25
    assert [row.epoch for row in result.history] == [1, 2, 3, 4, 5, 6]
    losses = [row.val_loss for row in result.history]
    assert result.best_val_loss == min(losses)
    assert result.best_epoch == losses.index(min(losses)) + 1


# one epoch's row as the release before EpochRow stored it (a dict in the checkpoint), by hand
STORED_ROW = {
    "epoch": 3,
    "train_loss": 1.25,
    "train_accuracy": 0.5625,
    "val_loss": 0.30000000000000004,  # 0.1 + 0.2: every last digit must survive
    "val_accuracy": 0.41,
    "lr": 0.001,
    "seconds": 2.5,
}


def test_an_epoch_row_is_stored_as_the_old_dict_and_read_back_the_same():
    row = EpochRow(
        epoch=3, train_loss=1.25, train_accuracy=0.5625, val_loss=0.1 + 0.2, val_accuracy=0.41,
        lr=1e-3, seconds=2.5,
    )  # fmt: skip
    stored = row.to_dict()
    assert stored == STORED_ROW
    assert list(stored) == list(STORED_ROW)  # the columns' order too (history.csv's)
    assert type(stored["epoch"]) is int
    assert EpochRow.from_dict(STORED_ROW) == row


@pytest.mark.parametrize(
    "stored",
    [
        {k: v for k, v in STORED_ROW.items() if k != "lr"},  # a key missing
        {**STORED_ROW, "test_loss": 1.0},  # a key no row has
    ],
)
def test_a_stored_row_without_exactly_the_history_columns_is_refused(stored):
    with pytest.raises(ValueError, match="history row"):
        EpochRow.from_dict(stored)


def test_the_checkpoint_stores_the_history_as_plain_dicts_and_resumes_them_as_rows(
    splits, tmp_path
):
    checkpoint = tmp_path / "run.ckpt"
    recipe, machine = quick(epochs=2)
    result = fit(fresh_model(), splits, recipe, machine, checkpoint_path=checkpoint, progress=False)
    stored = load_checkpoint(checkpoint)["history"]
    assert [type(row) for row in stored] == [dict, dict]  # the file is as the old release's
    assert [list(row) for row in stored] == [list(STORED_ROW)] * 2
    assert [EpochRow.from_dict(row) for row in stored] == result.history
    resumed = fit(
        fresh_model(), splits, recipe, machine, checkpoint_path=checkpoint, progress=False
    )
    assert resumed.history == result.history  # nothing left to train: the rows as stored


def test_best_weights_are_the_lowest_validation_loss_ones(splits):
    model = fresh_model()
    result = fit(model, splits, *quick(epochs=3), progress=False)
    model.load_state_dict(result.best_state)
    loss, accuracy = evaluate(model, splits.val, splits, CPU, torch.device("cpu"))
    assert loss == pytest.approx(result.best_val_loss, rel=1e-5)
    best_row = result.history[result.best_epoch - 1]
    assert accuracy == pytest.approx(best_row.val_accuracy)


def test_resume_after_two_epochs_matches_four_straight(tmp_path):
    splits = load_splits(DataConfig(dataset="synthetic", synthetic_size=150, synthetic_classes=4))
    config = quick(epochs=4, augment="recipe")  # the augmentation draws must resume too
    straight = fit(fresh_model(), splits, *config, progress=False)

    checkpoint = tmp_path / "run.ckpt"
    fit(
        fresh_model(),
        splits,
        *quick(epochs=2, augment="recipe"),
        checkpoint_path=checkpoint,
        progress=False,
    )
    torch.manual_seed(12345)  # a different process state must not matter
    resumed = fit(fresh_model(seed=99), splits, *config, checkpoint_path=checkpoint, progress=False)

    assert timeless(resumed.history) == timeless(straight.history)
    for name, tensor in straight.best_state.items():
        assert torch.equal(tensor, resumed.best_state[name]), name


def test_a_resumed_fit_shows_its_epochs_from_where_it_stopped_and_clears_its_bar(
    tmp_path, capsys, few
):
    """What a user sees of a fit (tqdm on stderr, also into a log file): the epochs bar starts
    at the epochs already done out of all of them, each epoch adds the validation loss and
    both accuracies as its history records them, and the bar is cleared when the fit ends (the
    retrain's and the search's own lines follow). The checkpoint keeps the caller's extras."""
    checkpoint = tmp_path / "run.ckpt"
    extra = {"architecture": "4,8 / 1,1", "run": "r1"}
    fit(fresh_model(), few, *quick(epochs=1), checkpoint_path=checkpoint, progress=False,
        checkpoint_extra=extra)  # fmt: skip
    assert load_checkpoint(checkpoint)["extra"] == extra
    assert capsys.readouterr() == ("", "")  # progress off: no bar, no data line
    result = fit(fresh_model(), few, *quick(epochs=3), checkpoint_path=checkpoint)
    renders = capsys.readouterr().err.split("\r")
    shown = [render for render in renders if render.strip()]
    assert re.fullmatch(r"epochs: +33%\|.*\| 1/3 \[00:00<\?, \?epoch/s\]", shown[0])
    for row in result.history[1:]:  # epochs 2 and 3, each said after it ran
        said = (
            f"loss={row.val_loss:.3f}, train={row.train_accuracy:.1%}, val={row.val_accuracy:.1%}]"
        )
        assert any(render.endswith(said) for render in shown), said
    assert renders[-1] == "" and renders[-2].strip() == ""  # cleared, not left standing


def test_a_checkpoint_saved_with_fused_adam_resumes_on_the_cpu_with_foreach(tmp_path):
    """A CUDA run's checkpoint (its optimizer groups say fused=True) resumed on the CPU: the
    optimizer takes the CPU's choice back, and the run ends as one never stopped."""
    splits = load_splits(DataConfig(dataset="synthetic", synthetic_size=150, synthetic_classes=4))
    straight = fit(fresh_model(), splits, *quick(epochs=3), progress=False)
    checkpoint = tmp_path / "run.ckpt"
    fit(fresh_model(), splits, *quick(epochs=2), checkpoint_path=checkpoint, progress=False)
    state = load_checkpoint(checkpoint)
    for group in state["optimizer"]["param_groups"]:  # what make_optimizer saves on CUDA
        group.update(fused=True, foreach=None)
    save_checkpoint(state, checkpoint)

    resumed = fit(
        fresh_model(99), splits, *quick(epochs=3), checkpoint_path=checkpoint, progress=False
    )
    groups = load_checkpoint(checkpoint)["optimizer"]["param_groups"]
    assert [(g["fused"], g["foreach"]) for g in groups] == [(None, True)]
    assert load_checkpoint(checkpoint)["scaler"] == {}  # fp32: no loss scale to carry
    for name, tensor in straight.best_state.items():  # bit-exact on the CPU
        assert torch.equal(tensor, resumed.best_state[name]), name


@pytest.mark.parametrize("found", [True, False])
def test_fit_sets_cudnn_autotuning_for_its_run_only(splits, found):
    """On the CPU the run holds autotuning off (it is CUDA's), and gives the process its own
    setting back afterwards, also when the run raises."""
    before = torch.backends.cudnn.benchmark
    seen = []

    def stop_after_first(row):
        seen.append(torch.backends.cudnn.benchmark)
        raise RuntimeError("stopped")

    try:
        torch.backends.cudnn.benchmark = found
        fit(fresh_model(), splits, *quick(epochs=1), progress=False, callback=seen.append)
        assert torch.backends.cudnn.benchmark is found
        with pytest.raises(RuntimeError, match="stopped"):
            fit(fresh_model(), splits, *quick(epochs=1), progress=False, callback=stop_after_first)
        assert seen[-1] is False and torch.backends.cudnn.benchmark is found
    finally:
        torch.backends.cudnn.benchmark = before


def test_callback_can_stop_training(splits):
    seen = []
    result = fit(
        fresh_model(),
        splits,
        *quick(epochs=5),
        progress=False,
        callback=lambda row: seen.append(row.epoch) or row.epoch == 2,
    )
    assert seen == [1, 2]
    assert result.stopped_early and result.epochs_completed == 2


class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)

    def forward(self, x):
        return self.linear(x.mean(dim=(2, 3))) * math.nan


def test_a_non_finite_loss_raises_its_own_error(splits):
    with pytest.raises(NonFiniteLossError, match="nan"):
        fit(NaNModel(), splits, *quick(), progress=False)


def test_the_device_path_trains_on_cpu_too(splits):
    result = fit(
        fresh_model(), splits, *quick(epochs=3, data_path="device", augment="basic"), progress=False
    )
    assert result.best_val_accuracy > 0.4


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_a_cpu_fit_makes_no_gpu_current_and_initialises_no_cuda(splits):
    # fit runs under nas.train.devices.current_gpu: making a GPU current here would raise
    seen: list[bool] = []
    fit(
        fresh_model(),
        splits,
        *quick(epochs=1),
        callback=lambda row: seen.append(torch.cuda.is_initialized()),
        progress=False,
    )
    assert seen == [False] and not torch.cuda.is_initialized()


@pytest.mark.parametrize("name", ["cuda:7", "tpu", "cuda"])
def test_unusable_devices_are_user_errors(name):
    if torch.cuda.is_available() and name == "cuda":
        pytest.skip("a GPU is present")
    with pytest.raises(UserError):
        resolve_device(name)


@pytest.mark.parametrize(
    "overrides",
    [
        {"epochs": -1},
        {"batch_size": 0},
        {"lr": 0},
        {"augment": "heavy"},
        {"optimizer": "lion"},
        {"lr_factor": 1.5},
    ],
)
def test_bad_settings_are_refused(overrides):
    with pytest.raises(UserError):
        Recipe(**overrides)


def test_auto_picks_the_batched_path_and_chunks_cover_the_epoch_once(splits):
    import nas.data.batches
    from nas.data.device_memory import DataPlan

    assert nas.data.batches.resolve_data_path(Machine()) == "device"
    assert nas.data.batches.resolve_data_path(Machine(data_path="loader")) == "loader"
    config = quick(augment="recipe", batch_size=64)
    several = DataPlan(resident=True, chunk=64, free_bytes=None)  # several chunks of one batch
    batches = nas.data.batches.DeviceBatches(
        splits.train, *config, splits, torch.device("cpu"), several
    )
    first = list(batches.epoch(seed=3))
    again = list(batches.epoch(seed=3))
    assert len(first) == len(batches)
    labels = torch.cat([labels for _, labels in first])
    assert sorted(labels.tolist()) == sorted(splits.train.labels.tolist())
    assert all(images.shape[0] == 64 for images, _ in first[:-1])
    for (images_a, _), (images_b, _) in zip(first, again, strict=True):
        assert torch.equal(images_a, images_b)  # the draws follow from the seed alone


def test_a_split_kept_on_the_host_gives_the_batches_of_one_on_the_device(splits):
    """The host-staged path (gather each chunk on the host, upload it) draws the same shuffle
    and augmentations as the resident one: the same batches for the same seed."""
    from nas.data.batches import DeviceBatches
    from nas.data.device_memory import DataPlan

    config = quick(augment="recipe", batch_size=16)
    cpu = torch.device("cpu")
    resident = DeviceBatches(splits.train, *config, splits, cpu, DataPlan(True, 32, 10**6))
    staged = DeviceBatches(splits.train, *config, splits, cpu, DataPlan(False, 32, 10**6))
    assert staged.images is splits.train.images  # not copied: the host path keeps the split
    pairs = list(zip(resident.epoch(seed=5), staged.epoch(seed=5), strict=True))
    assert len(pairs) == len(resident) > 2  # several chunks of two batches
    for (images_a, labels_a), (images_b, labels_b) in pairs:
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)
    # 720 training images (800 less the validation tenth) x 3,072 bytes = 2,211,840 B
    assert staged.describe() == (
        "data: 720 images (2 MB) too large for cpu (1 MB free): kept in host memory, uploaded "
        "per chunk of 32"
    )


def test_the_host_path_brings_the_shuffle_to_the_host_once_an_epoch(splits):
    """Issue 31 item 8: `indices.cpu()` per chunk waits for the GPU's queue before every host
    gather; the host path copies the epoch's order once. Counted as calls of our code."""
    from nas.data.batches import DeviceBatches
    from nas.data.device_memory import DataPlan

    config = quick(augment="none", batch_size=16)
    cpu = torch.device("cpu")
    staged = DeviceBatches(splits.train, *config, splits, cpu, DataPlan(False, 32, 10**6))
    resident = DeviceBatches(splits.train, *config, splits, cpu, DataPlan(True, 32, 10**6))
    with TorchCalls() as calls:
        assert len(list(staged.epoch(seed=5))) == 45  # 720 images: 23 chunks of 32
    ours = [name for name, module in calls.calls if module == "nas.data.batches"]
    assert ours.count("cpu") == 1
    with TorchCalls() as calls:
        list(resident.epoch(seed=5))
    assert [name for name, module in calls.calls if module == "nas.data.batches"].count("cpu") == 0


def test_fit_sizes_the_evaluation_batch_once_and_records_autotuning_as_it_ran(splits, monkeypatch):
    """Issue 31 items 8 and 9: the evaluation batch is sized once per fit (not from each
    epoch's free memory), from the model's architecture; `cudnn_benchmark` is what the epochs
    ran with (off on the CPU), not the setting fit restores afterwards."""
    sized = []
    real = nas.train.fit.eval_batch_size

    def counted(machine, data, device, arch=None):
        sized.append(arch)
        return real(machine, data, device, arch)

    monkeypatch.setattr(nas.train.fit, "eval_batch_size", counted)
    model = fresh_model()
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # a setting the caller had: fit restores it
    try:
        result = fit(model, splits, *quick(epochs=3), progress=False)
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before
    assert len(result.history) == 3
    assert sized == [model.arch]  # once, for the architecture trained
    # what the run records it ran with: the data path `auto` resolves to, the CPU's float32,
    # the CPU's evaluation batch (the configured one) and no autotuning on the CPU
    assert result.extra == {
        "data_path": "device",
        "precision": "fp32",
        "eval_batch_size": 1000,
        "cudnn_benchmark": False,
    }
    assert result.extra["cudnn_benchmark"] is False  # a bool, not 0


def test_fit_says_which_data_path_it_took(splits, capsys):
    fit(fresh_model(), splits, *quick(epochs=1))  # progress is on unless asked off
    lines = capsys.readouterr().out.splitlines()
    # the CPU: the split stays where it is, chunks are the most batches of 64 within 8,192
    assert lines == ["data: 720 images (2 MB) on cpu, augmented in chunks of 8,192"]


def test_the_default_layout_is_nhwc_on_cuda_only_and_can_be_forced():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert memory_format(Machine(), cpu) == torch.contiguous_format
    assert memory_format(Machine(), cuda) == torch.channels_last
    assert memory_format(Machine(channels_last=True), cpu) == torch.channels_last
    assert memory_format(Machine(channels_last=False), cuda) == torch.contiguous_format


@pytest.mark.slow  # two real retrain processes (a fresh interpreter each): ~11-15 s on 2 cores
def test_the_oneDNN_crash_case_of_issue_10_trains_and_exits_cleanly(tmp_path):
    """On AVX-512 CPUs, torch 2.14.1's oneDNN corrupted the heap (a segfault, or "free():
    invalid next size") in the backward pass of this architecture's 1x1 stride-2 shortcut in
    channels_last with two threads, on the 7-image last batch that subsets of 135 and 71 leave.
    It must train and exit 0 on every CPU: run as a user would, in its own process (the two
    subsets side by side: each process pays its ~7 s of imports at the same time)."""
    arch = tmp_path / "A.json"
    arch.write_text('{"channels": [8, 16], "blocks": [1, 1], "stem": 8}')
    runs = {}
    for subset in (135, 71):
        out = tmp_path / f"run-{subset}"
        command = [
            sys.executable, str(ROOT / "scripts" / "retrain_best.py"), "--arch", str(arch),
            "--dataset", "synthetic", "--subset", str(subset), "--epochs", "4",
            "--device", "cpu", "--out", str(out),
        ]  # fmt: skip
        runs[out] = subprocess.Popen(
            command,
            cwd=tmp_path,
            env={**os.environ, "OMP_NUM_THREADS": "2"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    for out, process in runs.items():
        try:
            _, err = process.communicate(timeout=300)
        finally:
            process.kill()
        assert process.returncode == 0, (out.name, err[-2000:])
        assert (out / "model.safetensors").is_file()
        assert json.loads((out / "metrics.json").read_text())["epochs_completed"] == 4


class Untouchable:
    """Stands in for the test split: any use of it (an attribute, its length, iterating it)
    fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was touched ({name})")

    def __len__(self):
        raise AssertionError("the test split was touched (len)")

    def __iter__(self):
        raise AssertionError("the test split was touched (iter)")


@pytest.mark.parametrize("data_path", ["device", "loader"])
def test_fit_never_touches_the_test_split(splits, data_path):
    guarded = dataclasses.replace(splits, test=Untouchable())
    result = fit(fresh_model(), guarded, *quick(epochs=1, data_path=data_path), progress=False)
    assert len(result.history) == 1


HOST_SYNCS = {"item", "cpu", "tolist", "numpy", "nonzero", "__bool__", "__int__", "__float__"}


def host_syncs(splits, chunk: int, batch_size: int) -> Counter:
    """The calls our own code (nas.*) makes during one epoch of `fit` on the device path that
    would wait for a GPU (a value copied to the host), by calling module."""
    config = quick(
        epochs=1, augment="recipe", data_path="device", batch_size=batch_size, chunk_size=chunk
    )
    with TorchCalls() as calls:
        fit(fresh_model(), splits, *config, progress=False)
    return Counter(
        module for name, module in calls.calls if name in HOST_SYNCS and module.startswith("nas.")
    )


def test_the_device_path_syncs_once_per_chunk_and_never_per_batch():
    small = load_splits(DataConfig(dataset="synthetic", synthetic_size=300, synthetic_classes=4))
    assert len(small.train) == 270
    fine = host_syncs(small, chunk=48, batch_size=8)  # 34 batches, 6 chunks
    coarse = host_syncs(small, chunk=48, batch_size=24)  # 12 batches, 6 chunks
    few = host_syncs(small, chunk=144, batch_size=24)  # 12 batches, 2 chunks
    assert fine == coarse  # almost three times the batches, not one sync more
    assert coarse.total() - few.total() == 6 - 2  # one per chunk
    # the step loop's loss and accuracy, and the validation pass's: two values each per epoch,
    # all read in nas.train.fit (the epoch loop and `evaluate`)
    assert fine["nas.train.fit"] == 4 and "nas.train.step" not in fine


def augmented_chunks_alive(chunk: int) -> int:
    """How many float images of `chunk` images exist right now (gc sees every tensor; a batch
    sliced from a chunk shares its memory, so memory blocks are counted, not tensors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some of torch's lazy modules warn when looked at
        tensors = [obj for obj in gc.get_objects() if type(obj) is torch.Tensor]
    return len(
        {
            tensor.untyped_storage().data_ptr()
            for tensor in tensors
            if tensor.dim() == 4 and tensor.shape[0] == chunk and tensor.dtype == torch.float32
        }
    )


def test_the_device_path_holds_two_augmented_chunks_at_most(splits):
    # 720 images: 6 chunks of one batch
    config = quick(augment="recipe", data_path="device", batch_size=120, chunk_size=120)
    batches = nas.data.batches.make_batches(splits.train, *config, splits, torch.device("cpu"))
    gc.collect()  # what earlier tests left in reference cycles
    assert augmented_chunks_alive(120) == 0
    alive = [augmented_chunks_alive(120) for _ in batches.epoch(seed=1)]
    assert len(alive) == 6 and max(alive) == 2  # the chunk trained on and the one ahead


def test_zero_epochs_give_the_initial_weights_as_the_best(few):
    model = fresh_model()
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    result = fit(model, few, *quick(epochs=0), progress=False)
    assert result.history == [] and result.best_epoch == 0  # none ran
    assert result.best_state.keys() == initial.keys()
    for name, tensor in initial.items():
        assert torch.equal(result.best_state[name], tensor), name


def test_a_model_that_is_not_one_of_ours_trains_too(few):
    # no `arch` attribute: the evaluation batch and the one-image rule do without it
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    result = fit(model, few, *quick(epochs=2), progress=False)
    assert [row.epoch for row in result.history] == [1, 2]
    assert result.extra["eval_batch_size"] == 1000  # the CPU's configured batch


def epochs_of(trainer: Trainer, splits, count: int) -> tuple[FitResult, list[float], list[float]]:
    """`count` epochs of `trainer` as `fit` runs them: the result, the compile seconds after
    each epoch, and the seconds each epoch's call took (the same clock, read around it)."""
    recipe, machine = quick(epochs=count)
    device = torch.device("cpu")
    batches = make_batches(splits.train, recipe, machine, splits, device)
    result, after, spans = FitResult(), [], []
    for epoch in range(1, count + 1):
        started = time.perf_counter()
        nas.train.fit._run_epoch(trainer, batches, splits, recipe, machine, device, epoch, result)
        spans.append(time.perf_counter() - started)
        after.append(result.compile_seconds)
    return result, after, spans


class RecordedStep:
    """A training step that records the batch sizes it is given; its first call can take
    `first_call_seconds` more, as a compiled graph's first call compiles."""

    def __init__(self, step, first_call_seconds: float = 0.0):
        self.step, self.first_call_seconds, self.sizes = step, first_call_seconds, []

    def __call__(self, images, labels):
        if not self.sizes:
            time.sleep(self.first_call_seconds)
        self.sizes.append(len(labels))
        return self.step(images, labels)


def test_only_a_compiled_runs_first_step_is_timed_apart_from_its_epoch(few):
    # what the flag decides, without compiling (the steps stay eager): a compiled run's first
    # step is the compilation, timed once and kept out of epoch 1's seconds; its full batches
    # go to the compiled step, a smaller last batch to the eager one (no new graph for its
    # shape); an eager run's first steps are part of their epochs
    recipe, machine = quick()
    eager = make_trainer(fresh_model(), recipe, machine, torch.device("cpu"))
    result, after, spans = epochs_of(eager, few, 2)
    assert after == [0.0, 0.0]
    assert all(0 < row.seconds <= span for row, span in zip(result.history, spans, strict=True))
    trainer = make_trainer(fresh_model(), recipe, machine, torch.device("cpu"))
    full, last = RecordedStep(trainer.step, first_call_seconds=0.05), RecordedStep(trainer.step)
    compiled = dataclasses.replace(trainer, step=full, last_step=last, compiled=True)
    result, after, spans = epochs_of(compiled, few, 3)
    images = len(few.train)
    assert images % 64 != 0  # a smaller last batch in every epoch
    assert full.sizes == [64] * (images // 64) * 3 and last.sizes == [images % 64] * 3
    assert after[0] >= 0.05  # epoch 1's first step, the one that "compiled"
    assert after[1] == after[2] == after[0]  # timed once
    # epoch 1's seconds leave the compile time out: both fit in the time its call took
    first = result.history[0]
    assert 0 < first.seconds and first.seconds + after[0] <= spans[0]
    assert all(0 < row.seconds <= span for row, span in zip(result.history, spans, strict=True))


@pytest.mark.parametrize("images", [None, 1])  # the whole split (3 batches), one image
def test_an_epochs_training_loss_and_accuracy_are_the_means_over_its_images(few, images):
    # at lr 1e-30 no float32 weight can move, and a linear model has no batch statistics: the
    # epoch's loss and accuracy are then those of one pass over the normalised training split,
    # computed here by torch alone
    train = TensorData(few.train.images[:images], few.train.labels[:images])
    few = dataclasses.replace(few, train=train)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    result = fit(model, few, *quick(epochs=1, lr=1e-30, flip=False), progress=False)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # the premise: nothing moved
    images = few.train.images.float() / 255
    mean, std = torch.tensor(few.mean)[:, None, None], torch.tensor(few.std)[:, None, None]
    with torch.no_grad():
        logits = model((images - mean) / std)
    row = result.history[0]
    assert row.train_loss == pytest.approx(F.cross_entropy(logits, few.train.labels).item())
    right = (logits.argmax(1) == few.train.labels).sum().item()
    assert row.train_accuracy == right / len(few.train)


def test_the_trainer_follows_the_recipe_and_the_machine():
    recipe, machine = quick(lr_factor=0.5, lr_patience=3, batch_size=32, channels_last=True)
    model = fresh_model()
    trainer = make_trainer(model, recipe, machine, torch.device("cpu"))
    assert (trainer.scheduler.factor, trainer.scheduler.patience) == (0.5, 3)
    assert trainer.scheduler.mode == "min"  # it lowers the rate when the validation loss stalls
    assert trainer.batch_size == 32 and trainer.compiled is False
    assert trainer.step is trainer.last_step  # eager: one step for every batch
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # NHWC, as forced
    assert not conv.weight.is_contiguous()


def test_a_compiled_trainer_steps_its_full_batches_through_the_compiled_model():
    # torch.compile compiles at the first call: building the trainer compiles nothing here
    recipe, machine = quick(compile=True)
    model = fresh_model()
    trainer = make_trainer(model, recipe, machine, torch.device("cpu"))
    full, last = trainer.step, trainer.last_step
    assert trainer.compiled is True and full is not last
    assert last.model is model and full.model is not model  # the compiled wrapper of it
    assert [p is q for p, q in zip(full.model.parameters(), model.parameters(), strict=True)] == (
        [True] * len(list(model.parameters()))
    )  # the same weights
    # one optimizer, one precision and one loss scale for both steps
    assert full.optimizer is last.optimizer is trainer.optimizer
    assert full.precision == last.precision and full.scaler is last.scaler
