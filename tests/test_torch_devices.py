"""The torch side of devices (nas.train.devices): which GPU a run makes current, and that doing
so is a no-op on the CPU. The CUDA side runs only where a GPU is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas.train.devices import current_gpu, gpu_to_make_current

from helpers import fresh_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cpu", None), ("cuda:0", 0), ("cuda:1", 1), ("cuda:3", 3), ("cuda", 0), ("meta", None)],
)
def test_the_gpu_a_run_makes_current_is_its_device_s_index(name, expected):
    # torch.device names a GPU without one being present: no CUDA is touched here
    assert gpu_to_make_current(torch.device(name)) == expected


def test_current_gpu_on_the_cpu_is_a_no_op_that_initialises_no_cuda():
    # a fresh interpreter: this one may have initialised CUDA where a GPU is
    code = (
        "import torch\n"
        "from nas.train.devices import current_gpu\n"
        "with current_gpu(torch.device('cpu')):\n"
        "    inside = torch.cuda.is_initialized()\n"
        "print(inside, torch.cuda.is_initialized())"
    )
    assert fresh_python(code) == "False False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_current_gpu_makes_the_device_current_and_restores_the_previous_one():
    last = torch.device(f"cuda:{torch.cuda.device_count() - 1}")
    before = torch.cuda.current_device()
    with current_gpu(last):
        assert torch.cuda.current_device() == last.index
    assert torch.cuda.current_device() == before
