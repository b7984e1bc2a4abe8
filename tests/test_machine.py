"""nas.config.machine: the CPUs this process may use follow its affinity, not the machine's size."""

from __future__ import annotations

import os

import pytest

from nas.config.machine import (
    channels_last_on,
    gpu_shared_by,
    oom_is_the_candidates,
    parent_may_use_cuda,
    shared_latency_refusal,
    sharing_line,
    usable_cpus,
)


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


# ---- more workers than GPUs (issue 31 items 5 and 6) -----------------------------------------

FOUR_ON_TWO = ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]


def test_sharing_is_said_once_naming_each_shared_gpu_and_its_workers():
    assert sharing_line(["cuda:0", "cuda:1"]) is None  # one worker per GPU
    assert sharing_line(["cpu", "cpu", "cpu"]) is None  # CPU workers share no GPU
    assert sharing_line(["cuda:0"]) is None
    assert sharing_line(FOUR_ON_TWO) == (
        "4 workers share 2 GPUs: cuda:0 runs workers 0, 2; cuda:1 runs workers 1, 3; each "
        "trial trains beside another (slower), and an out-of-memory there is measured again "
        "by a later trial, not recorded as does-not-fit"
    )
    line = sharing_line(["cuda:0", "cuda:1", "cuda:0"])
    assert line.startswith("3 workers share 2 GPUs: cuda:0 runs workers 0, 2; each")


def test_each_worker_knows_how_many_train_on_its_gpu():
    three = ["cuda:0", "cuda:1", "cuda:0"]
    assert [gpu_shared_by(three, i) for i in range(3)] == [2, 1, 2]
    assert [gpu_shared_by(["cpu", "cpu"], i) for i in range(2)] == [1, 1]


def test_the_parent_of_several_gpu_workers_runs_no_cuda_work():
    assert parent_may_use_cuda(["cuda:0", "cuda:1"]) is False
    assert parent_may_use_cuda(["cuda:0", "cuda:0"]) is False
    assert parent_may_use_cuda(["cuda:0"]) is True  # it trains in this process itself
    assert parent_may_use_cuda(["cpu", "cpu"]) is True


def test_latency_timed_beside_another_worker_s_training_is_refused():
    assert shared_latency_refusal("cuda", ["cuda:0", "cuda:1"]) is None  # each its own GPU
    assert shared_latency_refusal("cpu", FOUR_ON_TWO) is None
    assert shared_latency_refusal("cuda:0", ["cuda:0"]) is None
    assert shared_latency_refusal("cuda", FOUR_ON_TWO) == (
        "--latency-device cuda would time worker 0's candidates on cuda:0, where worker 2 "
        "trains, which skews the timing; use as many workers as GPUs (the default), one GPU "
        "each, or --latency-device cpu"
    )
    # one worker per GPU, but every worker times on GPU 0, where worker 0 trains
    refusal = shared_latency_refusal("cuda:0", ["cuda:0", "cuda:1"])
    assert refusal.startswith("--latency-device cuda:0 would time worker 1's candidates on cuda:0")


def test_an_out_of_memory_on_a_shared_gpu_is_not_the_candidate_s_own():
    assert oom_is_the_candidates("cuda:0", "cuda:0", 1) is True
    assert oom_is_the_candidates("cuda:0", "cuda:0", 2) is False
    assert oom_is_the_candidates("cpu", "cuda:0", 2) is True  # latency on the CPU
    assert oom_is_the_candidates("cuda:1", "cuda:0", 2) is True  # not the shared GPU


def test_a_worker_s_machine_carries_its_sharing_and_other_records_stay_as_they_were():
    from nas.config.machine import Machine

    shared = Machine(device="cuda:0", gpu_shared_by=2)
    assert Machine.from_dict(shared.to_dict()) == shared  # as a worker's settings carry it
    assert "gpu_shared_by" not in Machine().to_dict()  # a GPU of its own: recorded as before
