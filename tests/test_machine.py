"""nas.config.machine: the CPUs this process may use follow its affinity, not the machine's size."""

from __future__ import annotations

import os

import pytest

from nas.config.machine import channels_last_on, usable_cpus


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_usable_cpus_follows_this_process_s_affinity():
    allowed = os.sched_getaffinity(0)
    one = min(allowed)
    try:
        os.sched_setaffinity(0, {one})
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert usable_cpus() == len(allowed)


def test_usable_cpus_is_at_least_one_and_at_most_the_machine_s():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("device_type", "precision", "capability", "expected"),
    [
        ("cuda", "auto", (9, 0), True),  # bf16 on an H100: tensor cores want NHWC
        ("cuda", "auto", (7, 5), True),  # fp16 on a T4: tensor cores too
        ("cuda", "fp32", (8, 0), True),  # TF32 tensor cores from compute 8.0 (A100)
        ("cuda", "fp32", (7, 5), False),  # a T4 in fp32: no tensor cores, NCHW (issue 31)
        ("cuda", "fp32", (7, 0), False),  # a V100 in fp32
        ("cuda", "fp32", None, True),  # capability unknown: the CUDA default
        ("cpu", "auto", None, False),
        ("cpu", "fp32", None, False),
    ],
)
def test_channels_last_is_cudas_default_but_not_for_fp32_before_ampere(
    device_type, precision, capability, expected
):
    assert channels_last_on(device_type, precision, capability) is expected
