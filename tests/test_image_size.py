"""Images at their own size (issue 25), end to end in this process: a folder of 64-px PNGs
searched with `--image-size 64` and retrained, exported and predicted at 64 px; a folder of
96-px PNGs searched without the flag says once which size it trains at and why; the size a
study was created with is kept on resume. Smoke-sized: the tiny space, a few trials, 1 epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

import nas
from nas import records
from nas.arch.architecture import Architecture
from nas.arch.counts import count_macs
from nas.cli.main import main
from nas.config.machine import Machine, available_memory
from nas.config.recipe import Recipe
from nas.costs.memory import training_memory
from nas.data.loading import DataConfig, check_memory, choose_image_size, load_splits
from nas.errors import DataError
from nas.records import ARCHITECTURE, DATASET
from nas.train.model import build_model
from nas.trial_view import macs_of

from helpers import hook_counted_macs, run_in_process

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.usefixtures("one_thread"),
]

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "search_spaces" / "tiny.yaml")
CLASSES = ("dark", "light")


def write_folder(root: Path, size: tuple[int, int], train: int = 12, test: int = 4) -> Path:
    """An image folder of two classes told apart by brightness, every PNG `size` (w, h)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                level = 60 + 120 * label
                pixels = rng.integers(level - 40, level + 40, (size[1], size[0], 3))
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.png")
    return root


def search_argv(data_dir: Path, store: Path, *extra: str) -> list[str]:
    return [
        "search", "--dataset", "imagefolder", "--data-dir", str(data_dir), "--space", TINY,
        "--budget", "20000", "--trials", "2", "--epochs", "1", "--batch-size", "8",
        "--augment", "none", "--device", "cpu", "--storage", f"sqlite:///{store}",
        "--study", "s", "--no-warm-start", "--sampler", "random", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def searched_64(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("px64")
    data_dir = write_folder(root / "data", (64, 64))
    store = root / "s.db"
    status, out, err = run_in_process(main, search_argv(data_dir, store, "--image-size", "64"))
    assert status == 0, err
    return root, store, out


def test_a_search_at_64_px_records_64_on_the_study_and_its_trials_macs(searched_64):
    _, store, out = searched_64
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{store}")
    assert study.user_attrs[DATASET]["image_size"] == 64
    trained = [t for t in study.trials if ARCHITECTURE in t.user_attrs]
    assert len(trained) >= 2
    for trial in trained:
        arch = Architecture.from_json(trial.user_attrs[ARCHITECTURE])
        # counted from the built model's own layers as a 64-px image runs through it
        assert macs_of(trial) == hook_counted_macs(build_model(arch), 64)
        assert macs_of(trial) != count_macs(arch, 32)
    # the folder's size is said, with the size it trains at
    assert "images: median 64x64 px in 24 files; training at 64 px" in out.splitlines()
    # the report the search wrote names the size its costs were counted at
    report = next(line.split()[-1] for line in out.splitlines() if line.startswith("report"))
    assert "imagefolder at 64x64 px" in Path(report).read_text()


def test_a_resume_at_another_size_is_refused_in_one_sentence(searched_64):
    root, store, _ = searched_64
    argv = search_argv(root / "data", store, "--image-size", "32", "--trials", "3")
    status, _, err = run_in_process(main, argv)
    assert status == 2
    assert "image_size = 64, not 32" in err and len(err.strip().splitlines()) == 1
    assert "(--image-size 64)" in err
    assert "Traceback" not in err


def test_the_retrain_export_and_predict_work_at_the_study_s_64_px(searched_64):
    root, store, _ = searched_64
    run_dir = root / "run"
    argv = ["retrain", "--study", "s", "--storage", f"sqlite:///{store}", "--epochs", "1"]
    status, out, err = run_in_process(main, [*argv, "--device", "cpu", "--out", str(run_dir)])
    assert status == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dataset"]["image_size"] == 64  # taken from the study: no flag given
    arch = Architecture.from_json((run_dir / "architecture.json").read_text())
    card = (run_dir / "MODEL.md").read_text()
    assert "for 64x64 RGB images" in card
    assert f"| MACs per image | {count_macs(arch, 64):,} " in card
    assert "float32 (N, 3, 64, 64)" in card
    assert "--image-size" not in card  # a study's rebuild takes the size from the study

    status, out, err = run_in_process(main, ["export", str(run_dir), "--format", "onnx"])
    assert status == 0, err
    import onnx

    model = onnx.load(str(run_dir / "model.onnx"))
    shape = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert shape == ["batch", 3, 64, 64]
    meta = {entry.key: entry.value for entry in model.metadata_props}
    assert meta["nas.image_size"] == "64" and "(N, 3, 64, 64)" in meta["nas.input"]
    assert "(N, 3, 64, 64)" in out  # the export says its input contract
    # checked here too, independently of nas.run.export: onnxruntime on the run's 64-px test
    # images against the original model with metrics.json's normalisation
    import onnxruntime

    test = load_splits(DataConfig.from_dict(metrics["dataset"])).test.images
    assert test.shape[1:] == (3, 64, 64)
    inputs = test.to(torch.float32) / 255
    mean = torch.tensor(metrics["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(metrics["normalization"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = nas.load_model(run_dir)((inputs - mean) / std).numpy()
    session = onnxruntime.InferenceSession(str(run_dir / "model.onnx"))
    exported = session.run(None, {"images": inputs.numpy()})[0]
    assert np.abs(exported - expected).max() <= 1e-4

    # predict resizes any image to the run's 64 px: a 64-px test image and a 100x80 one
    big = root / "big.png"
    Image.fromarray(np.full((80, 100, 3), 200, dtype=np.uint8)).save(big)
    small = next((root / "data" / "test" / "light").iterdir())
    status, out, err = run_in_process(main, ["predict", str(run_dir), str(small), str(big)])
    assert status == 0, err
    assert str(big) in out and str(small) in out


def test_a_96_px_folder_without_the_flag_says_once_which_size_it_trains_at(tmp_path):
    data_dir = write_folder(tmp_path / "data", (96, 96), train=6, test=2)
    store = tmp_path / "s.db"
    status, out, err = run_in_process(main, search_argv(data_dir, store, "--trials", "1"))
    assert status == 0, err
    said = [line for line in out.splitlines() if "training at" in line]
    assert said == [
        "images: median 96x96 px in 12 files; training at 96 px (use --image-size to change)"
    ]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{store}")
    assert study.user_attrs[DATASET]["image_size"] == 96


@pytest.mark.parametrize(
    "sizes, expected",
    [
        ([(96, 96)] * 3 + [(500, 400)], 96),  # the median, not the mean: one big photo
        ([(40, 36), (32, 32), (40, 36), (32, 32)], 32),  # an even count: the lower middle
        ([(640, 480)] * 5, 224),  # large photos are trained at 224 px at most
        ([(28, 28)] * 2, 28),
    ],
)
def test_a_folder_is_trained_at_its_median_size_up_to_224(tmp_path, sizes, expected):
    root = tmp_path / "data"
    for split in ("train", "test"):
        folder = root / split / "only"
        folder.mkdir(parents=True)
        for index, size in enumerate(sizes):
            Image.new("RGB", size).save(folder / f"{index}.png")
    chosen, line = choose_image_size(DataConfig(dataset="imagefolder", data_dir=str(root)))
    assert chosen.image_size == expected
    assert f"training at {expected} px" in line
    if expected == 224:
        assert line == (
            "images: median 640x480 px in 5 files; training at 224 px "
            "(the most it picks by itself; use --image-size to change)"
        )


def test_cifar_stays_at_32_and_an_explicit_size_is_kept():
    chosen, line = choose_image_size(DataConfig(dataset="cifar10"))
    assert chosen.image_size == 32 and line is None
    chosen, line = choose_image_size(DataConfig(dataset="synthetic", image_size=48))
    assert chosen.image_size == 48 and line is None
    # CIFAR at another size than its own: said, not silent
    chosen, line = choose_image_size(DataConfig(dataset="cifar100", image_size=64))
    assert chosen.image_size == 64 and line == "images: CIFAR-100's 32x32 px resized to 64 px"


def test_a_large_folder_is_sized_from_an_evenly_spread_sample_of_headers(tmp_path, monkeypatch):
    import nas.data.counting

    monkeypatch.setattr(nas.data.counting, "SIZE_SAMPLE", 3)
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / split / "only").mkdir(parents=True)
    # seven files in sorted order 0..6; a sample of 3 over 7 takes indices 0, 2 and 4
    sides = [40, 99, 50, 99, 60, 99, 99]
    for index, side in enumerate(sides):
        Image.new("RGB", (side, side)).save(root / "train" / "only" / f"{index}.png")
    Image.new("RGB", (8, 8)).save(root / "test" / "only" / "0.png")
    chosen, line = choose_image_size(DataConfig(dataset="imagefolder", data_dir=str(root)))
    assert chosen.image_size == 50  # the median of 40, 50, 60: every 99 was left out
    assert line.startswith("images: median 50x50 px in 3 of 7 files; training at 50 px")


def test_the_memory_and_latency_budgets_are_measured_at_the_data_s_64_px(tmp_path, monkeypatch):
    import nas.costs.latency

    # a spy on our own seam: every latency measurement's image size, then the real measurement
    sizes: list[int] = []
    measure = nas.costs.latency.measure_latency

    def measured_at(arch, image_size, setup):
        sizes.append(image_size)
        return measure(arch, image_size, setup)

    monkeypatch.setattr(nas.costs.latency, "measure_latency", measured_at)
    store = tmp_path / "s.db"
    argv = [
        "search", "--dataset", "synthetic", "--subset", "48", "--image-size", "64",
        "--space", TINY, "--budget", "20000", "--trials", "2", "--epochs", "1",
        "--batch-size", "8", "--augment", "none", "--device", "cpu",
        "--storage", f"sqlite:///{store}", "--study", "s", "--no-warm-start",
        "--sampler", "random", "--max-memory-mb", "100000", "--max-latency-ms", "100000",
    ]  # fmt: skip
    status, _, err = run_in_process(main, argv)
    assert status == 0, err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{store}")
    gated = [t for t in study.trials if records.MEMORY_MB in t.user_attrs]
    assert len(gated) >= 2  # --trials counts trained ones; a duplicate may be gated too
    recipe = Recipe(epochs=1, batch_size=8, augment="none")
    machine = Machine(device="cpu")
    for trial in gated:
        arch = Architecture.from_json(trial.user_attrs[ARCHITECTURE])
        at_64 = training_memory(arch, 64, recipe, machine).megabytes
        assert at_64 != training_memory(arch, 32, recipe, machine).megabytes
        assert trial.user_attrs[records.MEMORY_MB] == pytest.approx(at_64)
    # the latency of each candidate within the analytic budgets was measured, always at 64 px
    timed = [t for t in gated if records.LATENCY_MS in t.user_attrs]
    assert timed and sizes and set(sizes) == {64}


# ---- a last batch of one image at a 1x1 map (issue 30) ------------------------------------------

ONE_BY_ONE = Architecture((8, 8, 8, 8, 8), (1, 1, 1, 1, 1), stem=8, stem_type="imagenet")


def test_a_retrain_whose_last_map_is_1x1_drops_only_a_last_batch_of_one():
    from nas.arch.counts import deepest_side
    from nas.train.fit import fit

    # ImageNet stem at 64 px: 16 px into layer 1, then 8, 4, 2, 1 through layers 2-5
    assert deepest_side(ONE_BY_ONE, 64) == 1 and deepest_side(ONE_BY_ONE, 96) == 2
    splits = load_splits(DataConfig(dataset="synthetic", subset=81, image_size=64))
    assert len(splits.train) == 81  # 5 batches of 16 and one of 1
    recipe = Recipe(epochs=1, batch_size=16, augment="none", flip=False)
    torch.manual_seed(0)
    model = build_model(ONE_BY_ONE)
    trained_on = []  # the batch sizes the model trained on (a forward pre-hook, torch's public)
    model.register_forward_pre_hook(
        lambda module, inputs: trained_on.append(len(inputs[0])) if module.training else None
    )
    result = fit(model, splits, recipe, Machine(device="cpu"), progress=False)
    assert len(result.history) == 1  # trained, no traceback (BatchNorm on 1 value per channel)
    assert trained_on == [16] * 5  # the last batch of one dropped, every other batch trained


def test_only_a_batch_of_one_image_whose_deepest_map_is_1x1_is_dropped():
    from torch import nn

    from nas.train.fit import _one_value_per_channel

    model = build_model(ONE_BY_ONE)
    assert _one_value_per_channel(model, torch.zeros(1, 3, 64, 64))
    assert not _one_value_per_channel(model, torch.zeros(2, 3, 64, 64))  # 2 values a channel
    assert not _one_value_per_channel(model, torch.zeros(1, 3, 96, 96))  # a 2x2 map: 4 values
    assert not _one_value_per_channel(model, torch.zeros(1, 3, 64, 96))  # 1x2: 2 values
    assert not _one_value_per_channel(model, torch.zeros(1, 3, 96, 64))  # 2x1: 2 values
    # two layers from 2 px: a 1x1 map (only the image's sides count, not its 3 channels)
    shallow = build_model(Architecture((8, 8), (1, 1), stem=8))
    assert _one_value_per_channel(shallow, torch.zeros(1, 3, 2, 2))
    assert not _one_value_per_channel(shallow, torch.zeros(1, 3, 3, 3))  # 2x2
    not_ours = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))  # no BatchNorm to spare
    assert not _one_value_per_channel(not_ours, torch.zeros(1, 3, 64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("size", [8, 16, 64])
def test_the_large_images_space_trains_or_rejects_every_candidate(tmp_path, size):
    from nas import trial_view
    from nas.config.search import SearchConfig
    from nas.search.loop import run_search

    # 81 training images at batch 16: a last batch of one in every epoch
    config = SearchConfig(
        budget=50_000_000, trials=2, space="large-images", study="l",
        storage=f"sqlite:///{tmp_path / 'l.db'}", sampler="random", pruner="none",
        warm_start=False, confirm=0,
    )  # fmt: skip
    recipe = Recipe(epochs=1, batch_size=16, augment="none", flip=False)
    data = DataConfig(dataset="synthetic", subset=81, image_size=size, synthetic_size=120)
    study = run_search(config, data, recipe, Machine(device="cpu"))
    kinds = [trial_view.classify(t) for t in study.get_trials()]
    assert kinds.count(trial_view.TrialKind.TRAINED) == 2
    assert all(k in (trial_view.TrialKind.TRAINED, trial_view.TrialKind.REJECTED) for k in kinds)


# ---- the memory an image size needs, checked before loading ----------------------------------


def test_an_image_size_the_memory_cannot_hold_is_refused_with_the_figures():
    cifar = DataConfig(dataset="cifar10", image_size=1024)
    # by hand: (2 x 50,000 + 10,000) images x 3 x 1024 x 1024 bytes = 346,030,080,000 bytes
    with pytest.raises(DataError) as refused:
        check_memory(cifar, available=24 * 10**9)
    assert str(refused.value) == (
        "at --image-size 1024 the 60,000 images need about 346.0 GB of memory to load "
        "(1024x1024 px, 3 bytes each, and the splits' copies), more than the 24.0 GB "
        "available: use a smaller --image-size"
    )
    # 64 px: (110,000) x 3 x 4,096 = 1,351,680,000 bytes; one byte short and exactly enough
    check_memory(DataConfig(dataset="cifar10", image_size=64), available=1_351_680_000)
    with pytest.raises(DataError):
        check_memory(DataConfig(dataset="cifar10", image_size=64), available=1_351_679_999)
    check_memory(cifar, available=None)  # a platform that does not say: no refusal


def test_the_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       24599712 kB\nMemFree:         1234567 kB\n"
        "MemAvailable:   20480000 kB\nBuffers:           12345 kB\n"
    )
    assert available_memory(meminfo) == 20_480_000 * 1024
    assert available_memory(tmp_path / "missing") is None
    meminfo.write_text("MemTotal:       24599712 kB\n")  # an old kernel without the line
    assert available_memory(meminfo) is None


def test_a_search_at_an_image_size_no_memory_holds_is_one_sentence_and_stores_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    argv = ["search", "--dataset", "synthetic", "--image-size", "1000000", "--trials", "1",
            "--device", "cpu"]  # fmt: skip
    status, _, err = run_in_process(main, argv)
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("error: at --image-size 1000000 the 1,200 images need about ")
    assert not (tmp_path / "studies").exists()
