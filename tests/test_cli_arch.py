"""`nas params`, `nas space` and `--arch`: what a user sees, and exit statuses."""

import contextlib
import io
import json
import random
from pathlib import Path

import pytest

from nas.arch.architecture import Architecture
from nas.arch.presets import PRESETS
from nas.arch.space import SearchSpace
from nas.cli.common import parse_count
from nas.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: the retrains' tiny nets


@pytest.mark.parametrize(
    "text, value",
    [
        ("5e6", 5_000_000),
        ("5000000", 5_000_000),
        ("5M", 5_000_000),
        ("500k", 500_000),
        ("2.5M", 2_500_000),
        ("1.5e6", 1_500_000),
    ],
)
def test_budget_spellings(text, value):
    assert parse_count(text) == value


def test_params_for_a_preset_prints_the_table_and_exact_total(capsys):
    assert main(["params", "--preset", "paper-model1"]) == 0
    out = capsys.readouterr().out
    assert "total: 4,951,338 parameters" in out
    assert "layer4  256x4x4    2,361,856" in out


def test_params_from_flags_and_from_json_agree(tmp_path, capsys):
    path = tmp_path / "a.json"
    path.write_text(PRESETS["paper-model1"].to_json())
    assert main(["params", "--arch", str(path)]) == 0
    from_file = capsys.readouterr().out
    flags = ["--channels", "64,128,128,256", "--blocks", "5,4,3,2", "--skip-kernel", "3"]
    assert main(["params", *flags]) == 0
    assert capsys.readouterr().out == from_file


def test_space_summary_counts_and_estimates(capsys):
    space_file = str(ROOT / "search_spaces" / "tiny.yaml")
    assert main(["space", space_file, "--budget", "20k", "--samples", "2000"]) == 0
    out = capsys.readouterr().out
    assert "distinct architectures: 1,008" in out
    assert "smallest: 1,490 parameters" in out
    assert "under a budget of 20,000" in out
    # MACs at the size asked for. tiny's cheapest by hand, at 64 px: stem 3*8*9*64^2 = 884,736;
    # layer 1 two 8->8 2x2 convs 2*256*64^2 = 2,097,152; layer 2 at 32 px two convs
    # 2*256*32^2 = 524,288 and a 1x1 projection 64*32^2 = 65,536; head 80: 3,571,792
    assert main(["space", space_file, "--image-size", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "fewest MACs per 64x64 image: 3.6M  (8,8 / 1,1 / k2 / s1 / stem8)" in out
    assert "most MACs per 64x64 image: 53.4M  (16,16,16 / 2,2,2 / k3 / s3 / stem8)" in out


def test_the_space_list_names_each_built_in_space_and_what_it_is_for(capsys):
    assert main(["space", "--list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "images of 64-224 px" in rows["large-images"]
    assert {"resnet", "tiny", "large-images"} <= set(rows)
    # every shipped space says what it is for, and the repository's copy is the package's
    for name in ("resnet", "tiny", "large-images"):
        assert (ROOT / "search_spaces" / f"{name}.yaml").resolve() == (
            ROOT / "nas" / "spaces" / f"{name}.yaml"
        )
        assert SearchSpace.resolve(name).description, name


RESNET_YAML = str(ROOT / "search_spaces" / "resnet.yaml")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["params", "--preset", "paper-model9"], "invalid choice"),
        (["params", "--channels", "64,128", "--blocks", "1"], "blocks has 1 entries"),
        (["params", "--channels", "64", "--blocks", "1", "--conv-kernel", "9"], "conv_kernel"),
        (["params"], "give --preset"),
        (["params", "--arch", "missing.json"], "cannot read architecture file"),
        (["space", RESNET_YAML, "--budget", "five"], "'five' is not a"),
        (["space", RESNET_YAML, "--budget", "-3"], "'-3' is not a"),
        (["space", RESNET_YAML, "--budget", "0"], "positive whole number"),
    ],
)
def test_bad_command_lines_give_one_sentence_and_exit_2(argv, fragment, tmp_path, monkeypatch):
    """In this process (argparse's refusals exit through SystemExit, ours return 2): a refusal
    that raises instead (a traceback), says more than one line or misses the fragment fails.
    That a real `python -m nas` process ends such a refusal with exit status 2 and one line is
    test_faults.py's test_real_processes_give_one_sentence_exit_2_and_never_run_a_...."""
    monkeypatch.chdir(tmp_path)  # missing.json is missing here
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code
    assert status == 2
    assert fragment in err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1


@pytest.mark.parametrize("space", ["resnet", "tiny", "large-images"])
def test_the_printed_form_reads_back_as_the_same_architecture(space):
    from nas.arch.counts import count_params
    from nas.arch.space import SearchSpace

    rng = random.Random(0)
    sampled = SearchSpace.resolve(space)
    for _ in range(300):
        arch = sampled.sample(rng, 10)
        text = arch.describe()
        assert Architecture.parse(text) == arch, text
        assert Architecture.parse(text.replace(" ", "")) == arch  # spaces are optional
        assert count_params(Architecture.parse(text)) == count_params(arch)


def test_the_printed_form_says_what_differs_from_the_defaults():
    arch = Architecture((8, 16, 12), (1, 2, 2), conv_kernel=(2, 3, 3), stem=8, num_classes=100)
    assert arch.describe() == "8,16,12 / 1,2,2 / k2,3,3 / s1 / stem8 / classes100"
    assert PRESETS["paper-model1"].describe() == "64,128,128,256 / 5,4,3,2 / k3 / s3"
    pooled = Architecture((8, 16), (1, 2), stem_type="imagenet")
    assert pooled.describe() == "8,16 / 1,2 / k3 / s1 / imagenet-stem"
    assert Architecture.parse("8,16/1,2/imagenet-stem") == pooled
    assert Architecture.parse("8,16/1,2/cifar-stem") == Architecture((8, 16), (1, 2))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("64,128", "unknown preset or architecture"),
        ("64/5/q3", "is not one of"),
        ("64/5/k3/k5", "gives k twice"),
        ("64,x/5,4", "comma-separated numbers"),
        ("64,128/5", "blocks has 1 entries"),
        ("64/5/resnet-stem", "imagenet-stem"),
        ("64/5/imagenet-stem/cifar-stem", "names the stem type twice"),
    ],
)
def test_a_bad_printed_form_is_one_sentence(text, fragment, capsys):
    assert main(["params", "--arch", text]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_params_takes_the_printed_form_pasted_from_the_search(capsys):
    assert main(["params", "--arch", "64,128,128,256 / 5,4,3,2 / k3 / s3"]) == 0
    assert "total: 4,951,338 parameters" in capsys.readouterr().out


def test_every_final_model_of_the_reference_study_is_a_preset_with_its_recipe():
    from nas.arch.counts import count_params
    from nas.arch.presets import PRESET_RECIPES, REPORTED_ACCURACY

    assert sorted(REPORTED_ACCURACY) == [f"paper-model{n}" for n in range(1, 7)]
    assert PRESETS["paper-model4"] == PRESETS["paper-model1"]
    assert PRESET_RECIPES["paper-model4"] == {"augment": "none"}
    assert PRESETS["paper-model6"] == PRESETS["paper-model5"]
    assert PRESET_RECIPES["paper-model6"] == {"optimizer": "sgd", "momentum": 0.9}
    assert count_params(PRESETS["paper-model1"]) == 4_951_338


def test_a_retrain_takes_a_printed_architecture_and_records_the_recipe_it_was_given(tmp_path):
    out = tmp_path / "run"
    status = main(
        [
            "retrain",
            "--arch",
            "8,16/1,1/k3/s3/stem8",
            "--optimizer",
            "sgd",
            "--momentum",
            "0.8",
            "--augment",
            "none",
            "--lr",
            "0.01",
            "--dataset",
            "synthetic",
            "--subset",
            "48",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]  # fmt: skip
    )
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    recipe = metrics["config"]
    assert (recipe["optimizer"], recipe["momentum"], recipe["augment"], recipe["lr"]) == (
        "sgd",
        0.8,
        "none",
        0.01,
    )
    assert Architecture.from_json((out / "architecture.json").read_text()) == Architecture.parse(
        "8,16/1,1/k3/s3/stem8"
    )


def test_a_preset_brings_its_recipe_and_a_flag_overrides_it(tmp_path, capsys, monkeypatch):
    from nas.arch.presets import PRESET_RECIPES

    monkeypatch.setitem(PRESETS, "tiny-sgd", Architecture((8, 8), (1, 1), stem=8))
    monkeypatch.setitem(PRESET_RECIPES, "tiny-sgd", {"optimizer": "sgd", "momentum": 0.9})
    common = ["--dataset", "synthetic", "--subset", "48", "--epochs", "1", "--device", "cpu"]
    assert main(["retrain", "--arch", "tiny-sgd", *common, "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["config"]["optimizer"] == "sgd"
    flags = ["--optimizer", "adamw", "--out", str(tmp_path / "b")]
    assert main(["retrain", "--arch", "tiny-sgd", *common, *flags]) == 0
    assert "changed from the recipe: optimizer 'adamw' (was 'sgd')" in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "b" / "metrics.json").read_text())["config"]["optimizer"] == "adamw"
    )
