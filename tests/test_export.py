"""`nas export`, `nas predict`, `nas.predict` and the model card, on real runs trained here.

Two runs are trained once per module: a tiny synthetic one (exports, verification, model card,
preprocessing), and one taught through `nas retrain` to tell red, blue and striped PNGs apart
(`nas predict` must name them). Exports are loaded in a fresh process that never imports `nas`
(plain onnxruntime and torch.jit), as a deployment would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nas
from nas.arch.architecture import Architecture
from nas.arch.counts import count_macs
from nas.cli.main import main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.loading import load_splits
from nas.errors import UserError
from nas.run.export import NormalizedModel, export_run, torchscript_bytes
from nas.run.export_check import verify_export
from nas.run.folder import RunMetrics
from nas.run.model_card import model_card
from nas.run.retrain import retrain
from nas.train.model import build_model

from helpers import fresh_python

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-4  # the bound on |exported - original| logits
COLOURS = ("blue", "red", "stripes")  # imagefolder classes, in their sorted (label) order


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("synthetic") / "run"
    data = DataConfig(
        dataset="synthetic", synthetic_size=200, synthetic_classes=3, data_dir=str(run_dir.parent)
    )
    recipe = Recipe(epochs=2, augment="none", batch_size=32)
    machine = Machine(device="cpu")
    retrain(Architecture((8, 16), (1, 1), stem=8), data, recipe, machine, run_dir, progress=False)
    return run_dir


def colour_image(kind: str, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Solid red, solid blue, or black-and-white horizontal stripes, with pixel noise."""
    height, width = size
    if kind == "stripes":
        rows = (np.arange(height) // 4) % 2 * 255
        pixels = np.repeat(np.repeat(rows[:, None, None], width, 1), 3, 2)
    else:
        colour = (220, 30, 30) if kind == "red" else (30, 30, 220)
        pixels = np.broadcast_to(np.array(colour), (height, width, 3))
    noisy = pixels.astype(np.int16) + rng.integers(-20, 21, (height, width, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> Path:
    """A run trained by `nas retrain` on an imagefolder of three visually distinct classes."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, count in (("train", 120), ("test", 4)):
        for kind in COLOURS:
            folder = root / "data" / split / kind
            folder.mkdir(parents=True)
            for index in range(count):  # two sizes: the run resizes both to 32x32
                size = (40, 36) if index % 2 else (32, 32)
                colour_image(kind, rng, size).save(folder / f"{index}.png")
    arch = Architecture((8, 16), (1, 1), stem=8, num_classes=3)
    (root / "arch.json").write_text(arch.to_json())
    run_dir = root / "run"
    status = main(
        ["retrain", "--arch", str(root / "arch.json"), "--dataset", "imagefolder",
         "--data-dir", str(root / "data"), "--epochs", "3", "--device", "cpu",
         "--out", str(run_dir)]
    )  # fmt: skip
    assert status == 0
    return run_dir


def run_test_inputs(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's test images as an export takes them (float RGB in [0, 1]) and the original
    model's logits on them, normalised here from metrics.json, independently of nas.run.export."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    images = load_splits(DataConfig.from_dict(metrics["dataset"])).test.images[:40]
    inputs = images.to(torch.float32) / 255
    mean = torch.tensor(metrics["normalization"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(metrics["normalization"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = nas.load_model(run_dir)((inputs - mean) / std)
    return inputs.numpy(), logits.numpy()


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    import onnxruntime
    import torch

    warnings.simplefilter("ignore")  # torch.jit's deprecation notice
    inputs_file, onnx_file, torchscript_file, out_file = sys.argv[1:]
    inputs = np.load(inputs_file)
    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    extra = {"nas.json": ""}
    module = torch.jit.load(torchscript_file, _extra_files=extra)
    with torch.no_grad():
        np.savez(
            out_file,
            onnx=session.run(None, {"images": inputs})[0],
            onnx_one=session.run(None, {"images": inputs[:1]})[0],
            torchscript=module(torch.from_numpy(inputs)).numpy(),
            torchscript_one=module(torch.from_numpy(inputs[:1])).numpy(),
        )
    print(json.dumps({
        "nas_imported": any(name == "nas" or name.startswith("nas.") for name in sys.modules),
        "onnx_metadata": session.get_modelmeta().custom_metadata_map,
        "torchscript_metadata": json.loads(extra["nas.json"]),
    }))
    """
)


def test_onnx_and_torchscript_exports_match_the_original_in_a_process_without_nas(
    synthetic_run, tmp_path, capsys
):
    onnx_file, torchscript_file = tmp_path / "model.onnx", tmp_path / "model.pt"
    for fmt, out in (("onnx", onnx_file), ("torchscript", torchscript_file)):
        assert main(["export", str(synthetic_run), "--format", fmt, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert f"exported {out}" in printed
        reported = float(printed.split("max abs difference ")[1].split()[0])
        assert reported <= TOLERANCE

    inputs, expected = run_test_inputs(synthetic_run)
    np.save(tmp_path / "inputs.npy", inputs)
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, "inputs.npy", str(onnx_file),
         str(torchscript_file), "outputs.npz"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["nas_imported"] is False
    outputs = np.load(tmp_path / "outputs.npz")
    for name in ("onnx", "torchscript"):
        assert outputs[name].shape == expected.shape
        assert np.abs(outputs[name] - expected).max() <= TOLERANCE
        assert np.abs(outputs[f"{name}_one"] - expected[:1]).max() <= TOLERANCE  # dynamic batch
    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    for metadata in (report["onnx_metadata"], report["torchscript_metadata"]):
        assert metadata["nas.normalization_included"] == "true"
        assert json.loads(metadata["nas.classes"]) == metrics["classes"]
        assert json.loads(metadata["nas.mean"]) == metrics["normalization"]["mean"]
        assert metadata["nas.batch"] == "dynamic"


def test_a_fixed_batch_onnx_export_takes_exactly_that_batch(synthetic_run, tmp_path):
    import onnxruntime

    result = export_run(synthetic_run, "onnx", out=tmp_path / "fixed.onnx", batch=5, opset=13)
    assert result.images == 5 and result.max_abs_diff <= TOLERANCE
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [5, 3, 32, 32]
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["nas.opset"] == "13" and "(5, 3, 32, 32)" in metadata["nas.input"]
    assert verify_export(synthetic_run, result.path)[0] <= TOLERANCE  # checked at batch 5


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_corrupted_export_is_refused_in_one_sentence(synthetic_run, tmp_path, fmt):
    good = export_run(synthetic_run, fmt, out=tmp_path / f"good.{fmt}").path
    assert verify_export(synthetic_run, good, fmt)[0] <= TOLERANCE
    broken = tmp_path / f"broken.{fmt}"
    data = good.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as refused:
        verify_export(synthetic_run, broken, fmt)
    assert "\n" not in str(refused.value) and str(broken) in str(refused.value)


def test_an_export_of_another_model_is_refused(synthetic_run, tmp_path):
    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    torch.manual_seed(123)  # same architecture, other weights
    impostor = build_model(nas.load_model(synthetic_run).arch).eval()
    wrapped = NormalizedModel(impostor, metrics["normalization"]["mean"], [1.0, 1.0, 1.0])
    example = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    path = tmp_path / "impostor.pt"
    path.write_bytes(torchscript_bytes(wrapped, example, {"nas.batch": "dynamic"}))
    with pytest.raises(UserError, match="differ from the run's model by up to") as refused:
        verify_export(synthetic_run, path)
    assert "\n" not in str(refused.value)


def test_onnx_export_without_the_extra_names_the_install_command(
    synthetic_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    out = tmp_path / "model.onnx"
    assert main(["export", str(synthetic_run), "--format", "onnx", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "pip install -e '.[export]'" in error and "onnxruntime" in error
    assert len(error.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(
    "flags",
    [["--format", "onnx", "--opset", "40"], ["--format", "torchscript", "--batch", "4"]],
)
def test_export_flag_mistakes_are_one_sentence_and_write_nothing(
    synthetic_run, tmp_path, capsys, flags
):
    out = tmp_path / "model.out"
    assert main(["export", str(synthetic_run), *flags, "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()


def test_the_model_card_names_accuracy_size_and_commands(synthetic_run):
    card = (synthetic_run / "MODEL.md").read_text()
    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    arch = nas.load_model(synthetic_run).arch
    assert f"{metrics['test_accuracy']:.2%}" in card
    assert f"{metrics['test_loss']:.4f}" in card
    assert f"{metrics['params']:,}" in card
    assert f"{count_macs(arch, 32):,}" in card
    assert f"nas export {synthetic_run} --format onnx" in card
    assert f"nas predict {synthetic_run}" in card
    assert f"nas retrain --arch {synthetic_run / 'architecture.json'}" in card
    assert "normalisation is inside the model" in card and "curves.html" in card


def test_the_model_card_of_a_study_run_rebuilds_from_the_study(synthetic_run):
    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    metrics["source"] = {"study": "s1", "storage": "sqlite:///studies/x.db", "trial": 7}
    metrics = RunMetrics.from_dict(metrics, synthetic_run / "metrics.json")
    card = model_card(nas.load_model(synthetic_run).arch, metrics, "runs/s1/trial-7")
    rebuild = "nas retrain --study s1 --trial 7 --storage sqlite:///studies/x.db --epochs 2"
    assert rebuild in card and "runs/s1/trial-7-rebuilt" in card
    assert "takes from its defaults" not in card  # the study supplies data and recipe


def test_predict_uses_the_runs_own_preprocessing(synthetic_run, tmp_path):
    inputs, expected = run_test_inputs(synthetic_run)
    pixels = (inputs[:6] * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    paths = []
    for index, image in enumerate(pixels):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
    probabilities = torch.softmax(torch.from_numpy(expected[:6]), dim=1).numpy()
    classes = json.loads((synthetic_run / "metrics.json").read_text())["classes"]
    mixed = nas.predict(synthetic_run, [*paths[:3], Image.open(paths[3]), pixels[4]], top=3)
    assert [p.image for p in mixed[:3]] == [str(p) for p in paths[:3]]
    stacked = nas.predict(synthetic_run, pixels[4:6], top=2)  # one (N, H, W, 3) array
    assert len(stacked) == 2 and all(len(p.top) == 2 for p in stacked)
    pairs = [*zip(mixed, probabilities), *zip(stacked, probabilities[4:])]
    assert len(pairs) == 7
    for prediction, row in pairs:
        for name, probability in prediction.top:
            assert probability == pytest.approx(row[classes.index(name)], abs=1e-5)
        assert [name for name, _ in prediction.top][0] == classes[int(row.argmax())]
    with pytest.raises(TypeError, match="run folder"):
        nas.predict(nas.load_model(synthetic_run), paths[0])


def write_holdout(folder: Path) -> dict[str, str]:
    """Two unseen images per class (new noise, other sizes) and one corrupt file."""
    rng = np.random.default_rng(99)
    truth = {}
    for kind in COLOURS:
        for index, size in enumerate(((48, 48), (28, 30))):
            path = folder / kind / f"{kind}-{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            colour_image(kind, rng, size).save(path)
            truth[str(path)] = kind
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    return truth


def test_predict_names_the_classes_of_a_folder_and_skips_a_corrupt_file(
    colour_run, tmp_path, capsys
):
    truth = write_holdout(tmp_path / "holdout")
    assert main(["predict", str(colour_run), str(tmp_path / "holdout"), "--top", "1"]) == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "skipped" in captured.err
    rows = captured.out.strip().splitlines()[2:]  # after the header and its rule
    assert {row.split()[0]: row.split()[1] for row in rows} == truth

    assert main(["predict", str(colour_run), str(tmp_path / "holdout"), "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {item["image"]: item["predictions"][0]["class"] for item in listed} == truth
    for item in listed:
        probabilities = [p["probability"] for p in item["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)


def test_predict_errors_are_one_sentence_naming_the_file(colour_run, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"nothing")
    missing, broken = tmp_path / "missing.png", tmp_path / "broken.png"
    for args, named in (([colour_run, missing], missing),
                        ([colour_run, broken], broken),
                        ([tmp_path, broken], tmp_path)):  # fmt: skip
        assert main(["predict", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
        assert str(named) in err  # the unreadable image is named by its "skipped:" line


def test_inference_imports_no_optuna():
    """A fresh interpreter (this process has imported everything): inference and its exports
    import neither optuna nor the search or the retrain. This holds test_cli.py's
    test_inference_imports_neither_optuna_nor_the_search too (same check, one more start-up)."""
    code = (
        "import nas, sys; nas.load_model; nas.predict; "
        "import nas.run.export, nas.run.export_check, nas.run.model_card; "
        "print(sorted(m for m in ('optuna', 'nas.search.loop', 'nas.run.retrain')"
        " if m in sys.modules))"
    )
    assert fresh_python(code) == "[]"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_shows_no_deprecation_notice(synthetic_run, tmp_path, fmt, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every notice, also one shown earlier in this process
        export_run(synthetic_run, fmt, out=tmp_path / f"model.{fmt}")
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert capfd.readouterr().err == ""
