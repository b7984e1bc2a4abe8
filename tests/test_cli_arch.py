"""`python -m nas params` and `python -m nas space`: what a user sees, and exit statuses."""

import subprocess
import sys
from pathlib import Path

import pytest

from nas.arch import PRESETS
from nas.cli import main, parse_count

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["params", "--preset", "paper-model9"], "invalid choice"),
        (["params", "--channels", "64,128", "--blocks", "1"], "blocks has 1 entries"),
        (["params", "--channels", "64", "--blocks", "1", "--conv-kernel", "9"], "conv_kernel"),
        (["params"], "give --preset"),
        (["params", "--arch", "missing.json"], "cannot read architecture file"),
        (["space", "search_spaces/resnet.yaml", "--budget", "five"], "not a parameter count"),
        (["space", "search_spaces/resnet.yaml", "--budget", "-3"], "not a parameter count"),
        (["space", "search_spaces/resnet.yaml", "--budget", "0"], "positive whole number"),
    ],
)
def test_bad_command_lines_give_one_sentence_and_exit_2(argv, fragment):
    result = subprocess.run(
        [sys.executable, "-m", "nas", *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
