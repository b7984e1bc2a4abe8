"""The precision policy (nas.train.precision): what each GPU generation and the CPU train in, the
warnings for questionable requests, the autocast and scaler each precision gives, cuDNN
autotuning restored around a block, and no module bypassing the policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nas.cli.main import build_parser, main
from nas.config.machine import Machine
from nas.errors import UserError
from nas.train.precision import (
    Precision,
    choose_precision,
    cudnn_autotuning,
    precision_warnings,
)

from helpers import run_in_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("device_type", "capability", "name", "dtype", "scaler"),
    [
        ("cuda", (7, 5), "fp16", torch.float16, True),  # T4: no cuDNN bf16 below 8.0
        ("cuda", (7, 0), "fp16", torch.float16, True),  # V100
        ("cuda", (8, 0), "bf16", torch.bfloat16, False),  # A100: the boundary itself
        ("cuda", (8, 9), "bf16", torch.bfloat16, False),  # L4
        ("cuda", (9, 0), "bf16", torch.bfloat16, False),  # H100, H200
        ("cpu", None, "fp32", None, False),
    ],
)
def test_auto_picks_by_compute_capability(device_type, capability, name, dtype, scaler):
    chosen = choose_precision("auto", device_type, capability)
    assert (chosen.name, chosen.autocast_dtype, chosen.uses_scaler) == (name, dtype, scaler)
    assert chosen.warning is None and chosen.reason.startswith("auto: ")


def test_the_reason_names_the_capability_and_the_threshold():
    assert choose_precision("auto", "cuda", (7, 5)).reason == (
        "auto: compute 7.5 < 8.0, no cuDNN bf16 below 8.0"
    )
    assert choose_precision("auto", "cuda", (9, 0)).reason == "auto: compute 9.0 >= 8.0"
    assert choose_precision("auto", "cpu", None).reason == "auto: the cpu trains in fp32"


def test_bf16_below_8_0_is_allowed_with_one_warning_line():
    chosen = choose_precision("bf16", "cuda", (7, 5))
    assert chosen.name == "bf16" and chosen.autocast_dtype == torch.bfloat16
    assert "\n" not in chosen.warning and "compute 7.5" in chosen.warning
    assert "slower" in chosen.warning and "fp16" in chosen.warning  # what to use instead
    assert choose_precision("bf16", "cuda", (8, 0)).warning is None


@pytest.mark.parametrize("capability", [(7, 5), (8, 0), (9, 0)])
def test_explicit_choices_on_cuda_are_kept(capability):
    assert choose_precision("fp16", "cuda", capability).name == "fp16"
    assert choose_precision("fp16", "cuda", capability).uses_scaler
    fp32 = choose_precision("fp32", "cuda", capability)
    assert (fp32.name, fp32.autocast_dtype, fp32.warning) == ("fp32", None, None)


@pytest.mark.parametrize("requested", ["bf16", "fp16"])
def test_half_precision_asked_for_on_the_cpu_trains_in_fp32_and_says_so(requested):
    chosen = choose_precision(requested, "cpu", None)
    assert (chosen.name, chosen.autocast_dtype, chosen.uses_scaler) == ("fp32", None, False)
    assert chosen.warning == (
        f"--precision {requested} applies to CUDA GPUs; this run is on the cpu, which trains "
        "in fp32"
    )
    # two workers on the CPU: the line once, not once per device or per trial
    cpus = [torch.device("cpu"), torch.device("cpu")]
    assert precision_warnings(requested, cpus) == [chosen.warning]
    assert precision_warnings("auto", cpus) == precision_warnings("fp32", cpus) == []


def test_an_unknown_precision_is_one_sentence():
    with pytest.raises(UserError) as refused:
        choose_precision("fp8", "cuda", (9, 0))
    assert str(refused.value) == "precision must be one of auto, bf16, fp16, fp32, got 'fp8'"


@pytest.mark.parametrize(
    ("name", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_the_autocast_computes_in_the_precision_s_dtype(name, dtype):
    precision = Precision(name, "cpu", "test")  # CPU autocast runs both half types
    weight = torch.randn(4, 4)
    with precision.autocast():
        assert (torch.randn(2, 4) @ weight).dtype == dtype


@pytest.mark.parametrize(("name", "enabled"), [("fp16", True), ("bf16", False), ("fp32", False)])
def test_only_fp16_scales_its_gradients(name, enabled):
    assert Precision(name, "cpu", "test").grad_scaler().is_enabled() is enabled


@pytest.mark.parametrize("found", [True, False])
def test_cudnn_autotuning_is_restored_after_the_block_also_when_it_raises(found):
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = found
        with cudnn_autotuning(not found):
            assert torch.backends.cudnn.benchmark is (not found)
        assert torch.backends.cudnn.benchmark is found
        with pytest.raises(RuntimeError), cudnn_autotuning(not found):
            assert torch.backends.cudnn.benchmark is (not found)
            raise RuntimeError("out of memory")
        assert torch.backends.cudnn.benchmark is found
    finally:
        torch.backends.cudnn.benchmark = before


def lines_matching(pattern: str, folders: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """`path:line` of every line under `folders` matching `pattern`, outside `allowed` files."""
    return [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(pattern, line)
    ]


def test_no_module_bypasses_the_policy():
    """Reduced-precision dtypes and torch's autocast are named in nas/train/precision.py alone (in
    nas/ and benchmarks/), and in nas/ only the one training step opens an autocast or runs a
    backward pass."""
    dtypes = r'bfloat16|torch\.float16|torch\.half\b|torch\.autocast|torch\.device\("cuda"\)'
    assert lines_matching(dtypes, ("nas", "benchmarks"), ("precision.py",)) == []
    assert lines_matching(r"autocast|\.backward\(\)", ("nas",), ("precision.py", "step.py")) == []


@pytest.mark.parametrize("command", ["search", "retrain"])
def test_search_and_retrain_take_precision_with_its_choices(command):
    status, out, _ = run_in_process(main, [command, "--help"])
    assert status == 0 and "--precision {auto,bf16,fp16,fp32}" in out
    status, _, err = run_in_process(main, [command, "--precision", "fp8"])
    assert status == 2 and "argument --precision: invalid choice: 'fp8'" in err


def test_the_flag_reaches_the_machine_of_a_search_and_of_a_retrain():
    from nas.cli.flags import machine_from
    from nas.cli.retrain import recipe_from
    from nas.cli.search_settings import search_settings

    assert Machine().precision == "auto"
    for flags, expected in (([], "auto"), (["--precision", "fp16"], "fp16")):
        _, _, recipe, machine = search_settings(build_parser().parse_args(["search", *flags]))
        assert machine.precision == expected
        assert "precision" not in recipe.to_dict()
        # a retrain takes this machine's flag, never the study's (a device setting): a study
        # recorded by an earlier release holds one, which the recipe leaves to the machine
        args = build_parser().parse_args(["retrain", *flags])
        assert machine_from(args).precision == expected
        assert "precision" not in recipe_from(args, {"precision": "bf16"}, {}).to_dict()
    with pytest.raises(UserError, match="precision must be one of auto, bf16, fp16, fp32"):
        Machine(precision="half")


def test_a_retrain_asked_for_bf16_on_the_cpu_says_so_once_and_trains_in_fp32(tmp_path):
    from nas.cli.main import retrain_main

    argv = ["--arch", "8 / 1 / k3 / s1 / stem8", "--dataset", "synthetic", "--subset", "32"]
    argv += ["--epochs", "1", "--device", "cpu", "--precision", "bf16", "--out", str(tmp_path)]
    status, out, err = run_in_process(retrain_main, argv)
    assert status == 0, out + err
    warning = (
        "warning: --precision bf16 applies to CUDA GPUs; this run is on the cpu, which trains "
        "in fp32"
    )
    assert err.splitlines().count(warning) == 1 and "Traceback" not in err


def test_a_gpu_whose_capability_cannot_be_read_is_taken_for_an_old_one():
    chosen = choose_precision("auto", "cuda", None)
    assert (chosen.name, chosen.reason) == (
        "fp16", "auto: compute unknown < 8.0, no cuDNN bf16 below 8.0"
    )  # fmt: skip


def test_the_cpu_has_no_compute_capability_and_a_scaler_is_for_its_precisions_device():
    from nas.train.precision import device_capability

    assert device_capability(torch.device("cpu")) is None  # never asks CUDA about the CPU
    # a precision's scaler belongs to its device: a CPU fp16 scaler works without CUDA
    scaler = Precision("fp16", "cpu", "fp16 asked for").grad_scaler()
    assert scaler.is_enabled() and scaler.get_scale() == 65536.0


@pytest.mark.parametrize(
    ("requested", "device_type", "capability", "expected"),
    [
        ("auto", "cpu", None, Precision("fp32", "cpu", "auto: the cpu trains in fp32")),
        ("fp16", "cpu", None, Precision(
            "fp32", "cpu", "fp16 asked for on the cpu",
            "--precision fp16 applies to CUDA GPUs; this run is on the cpu, which trains in fp32",
        )),
        ("auto", "cuda", (9, 0), Precision("bf16", "cuda", "auto: compute 9.0 >= 8.0")),
        ("auto", "cuda", (7, 5), Precision(
            "fp16", "cuda", "auto: compute 7.5 < 8.0, no cuDNN bf16 below 8.0"
        )),
        ("bf16", "cuda", (7, 5), Precision(
            "bf16", "cuda", "bf16 asked for at compute 7.5",
            "--precision bf16 on a GPU of compute 7.5: PyTorch has no cuDNN bf16 convolution "
            "below 8.0 and runs a several times slower path; --precision auto picks fp16 with "
            "a gradient scaler there",
        )),
        ("fp32", "cuda", (8, 0), Precision("fp32", "cuda", "fp32 asked for")),
    ],
)  # fmt: skip
def test_each_choice_is_the_precision_its_device_and_its_words(
    requested, device_type, capability, expected
):
    assert choose_precision(requested, device_type, capability) == expected
