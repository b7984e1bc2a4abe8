"""Which device a name means and which GPU each worker gets (nas.config.machine), decided from the
number of visible GPUs alone: every case here is a machine this CPU-only suite is not."""

from __future__ import annotations

import pytest

from nas.config.machine import device_name, latency_device, worker_devices
from nas.errors import UserError


@pytest.mark.parametrize(
    ("name", "visible", "current", "expected"),
    [
        ("auto", 0, 0, "cpu"),
        ("cpu", 0, 0, "cpu"),
        ("cpu", 2, 1, "cpu"),
        ("auto", 1, 0, "cuda:0"),
        ("auto", 2, 1, "cuda:1"),  # a worker that owns GPU 1
        ("cuda", 1, 0, "cuda:0"),
        ("cuda", 2, 1, "cuda:1"),
        ("cuda:0", 1, 0, "cuda:0"),
        ("cuda:1", 2, 0, "cuda:1"),
    ],
)
def test_every_cuda_name_gets_the_index_of_a_gpu_that_exists(name, visible, current, expected):
    assert device_name(name, visible, current) == expected


@pytest.mark.parametrize(
    ("name", "visible", "message"),
    [
        ("cuda:1", 1, "device cuda:1 does not exist: 1 GPU is visible (cuda:0)"),
        ("cuda:2", 2, "device cuda:2 does not exist: 2 GPUs are visible (cuda:0 to cuda:1)"),
        ("cuda", 0, "device cuda was asked for but no CUDA GPU is visible; use cpu"),
        ("cuda:0", 0, "device cuda:0 was asked for but no CUDA GPU is visible; use cpu"),
        ("tpu", 2, "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
        ("cuda:x", 2, "unknown device 'cuda:x'; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_an_unusable_device_is_one_sentence(name, visible, message):
    with pytest.raises(UserError) as caught:
        device_name(name, visible)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("visible", "workers", "device", "expected"),
    [
        (0, None, "auto", ["cpu"]),
        (0, 3, "auto", ["cpu", "cpu", "cpu"]),
        (0, 2, "cpu", ["cpu", "cpu"]),
        (1, None, "auto", ["cuda:0"]),
        (1, None, "cuda", ["cuda:0"]),
        (1, 2, "cuda", ["cuda:0", "cuda:0"]),
        (2, None, "auto", ["cuda:0", "cuda:1"]),
        (2, None, "cuda", ["cuda:0", "cuda:1"]),
        (2, 1, "cuda", ["cuda:0"]),
        (2, 5, "auto", ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]),  # round robin
        (2, 2, "cuda:1", ["cuda:1", "cuda:1"]),  # a named GPU: every worker on it
        (2, None, "cpu", ["cpu"]),
    ],
)
def test_each_worker_gets_a_gpu_of_its_own_while_there_are_enough(
    visible, workers, device, expected
):
    planned = worker_devices(visible, workers, device)
    assert planned == expected
    # each is a name the worker's resolver keeps as it is
    assert all(device_name(name, visible) == name for name in planned)


@pytest.mark.parametrize(
    ("visible", "device", "message"),
    [
        (1, "cuda:1", "device cuda:1 does not exist: 1 GPU is visible (cuda:0)"),
        (0, "cuda", "device cuda was asked for but no CUDA GPU is visible; use cpu"),
    ],
)
def test_a_worker_plan_on_a_gpu_that_is_not_there_is_refused(visible, device, message):
    with pytest.raises(UserError) as caught:
        worker_devices(visible, 2, device)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("latency", "train", "expected"),
    [
        ("cuda", "cuda:1", "cuda:1"),  # the worker's own GPU, not GPU 0
        ("cuda", "cuda:0", "cuda:0"),
        ("cuda", "cpu", "cuda"),  # training on the CPU: the current GPU, resolved later
        ("cuda:0", "cuda:1", "cuda:0"),  # named by the user: kept
        ("cpu", "cuda:1", "cpu"),
    ],
)
def test_a_bare_cuda_latency_device_is_the_gpu_the_search_trains_on(latency, train, expected):
    assert latency_device(latency, train) == expected
