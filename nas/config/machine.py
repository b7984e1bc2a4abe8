"""Owns the machine a run is on, apart from the recipe: the CPUs this process may use, which
device a name means and which GPU each worker gets, as plain functions of the GPUs this process
can see. No torch, no optuna: the CPU suite tests every decision at its boundaries (no GPU,
one, two; more workers than GPUs) without a GPU. `nas.train.devices.resolve_device` reads the
count and the current GPU from torch and asks `device_name`; `nas.search.workers.plan_devices`
asks `worker_devices`.

Claims:
- `usable_cpus()` counts the CPUs this process is allowed to run on (its affinity mask, which
  containers and `taskset` restrict) where the platform tells, else all the machine's CPUs;
  never less than 1.
- `device_name` gives every CUDA name an index: `auto` and `cuda` mean the current GPU
  (`cuda:<current>`; a worker's own, after `torch.cuda.set_device`), `cuda:N` is kept when GPU N
  exists; `auto` is `cpu` without a GPU.
- A CUDA name that cannot be used is a `UserError` of one sentence: `cuda` or `cuda:N` with no
  GPU visible, `cuda:N` past the last GPU (naming how many are visible), anything but
  auto/cpu/cuda/cuda:N.
- `worker_devices` gives worker i `cuda:<i mod GPUs>` when the device is `auto` or `cuda` and a
  GPU is visible (one worker per GPU by default, more workers share GPUs round robin); a named
  device (`cpu`, `cuda:N`) goes to every worker, and no GPU means `cpu`. Every name it returns
  is one `device_name` accepts as it is.
- `latency_device` makes a bare `cuda` latency device the GPU the search trains on.
- `channels_last_on`: training defaults to channels_last (NHWC) on CUDA, except for fp32 below
  compute capability 8.0 (no TF32 tensor cores there: NCHW); never on the CPU.
"""

from __future__ import annotations

import os

from nas.errors import UserError


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity where the platform has one (Linux), else
    `os.cpu_count()`; at least 1."""
    if hasattr(os, "sched_getaffinity"):  # respects container and taskset CPU limits
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"  # what --device accepts, for error messages


def device_name(name: str, visible: int, current: int = 0) -> str:
    """`name` (auto, cpu, cuda, cuda:N) as a device with an index on a machine where `visible`
    GPUs are visible and `current` is the current one; a UserError if it cannot be used."""
    if name == "cpu":
        return "cpu"
    if name == "auto" and visible == 0:
        return "cpu"
    if name in ("auto", "cuda"):
        index = current
    elif name.startswith("cuda:") and name[5:].isdigit():
        index = int(name[5:])
    else:
        raise UserError(f"unknown device {name!r}; use {DEVICE_NAMES}")
    if visible == 0:
        raise UserError(f"device {name} was asked for but no CUDA GPU is visible; use cpu")
    if index >= visible:
        which = "1 GPU is" if visible == 1 else f"{visible} GPUs are"
        last = "cuda:0" if visible == 1 else f"cuda:0 to cuda:{visible - 1}"
        raise UserError(f"device {name} does not exist: {which} visible ({last})")
    return f"cuda:{index}"


def worker_devices(visible: int, workers: int | None, device: str) -> list[str]:
    """The device of each of `workers` workers (None: one per visible GPU on CUDA, else 1)."""
    if device in ("auto", "cuda") and visible > 0:
        return [f"cuda:{i % visible}" for i in range(workers or visible)]
    return [device_name(device, visible)] * (workers or 1)


def latency_device(latency: str, train_device: str) -> str:
    """Where latency is timed: a bare `cuda` is the GPU the search trains on when it trains on
    one (`cuda:N`), so a worker never times its candidates on another worker's GPU."""
    if latency == "cuda" and train_device.startswith("cuda:"):
        return train_device
    return latency


def channels_last_on(device_type: str, precision: str, capability: tuple[int, int] | None) -> bool:
    """Whether training defaults to channels_last (NHWC): on CUDA, whose tensor-core
    convolutions (TF32, bf16, fp16) want it, except `--precision fp32` below compute capability
    8.0 (`capability`, None when unknown), which has no TF32 tensor cores: NCHW there, as the
    NHWC copies buy nothing. `precision` is the recipe's setting (`auto`: bf16 or fp16 on CUDA).
    """
    if device_type != "cuda":
        return False
    return not (precision == "fp32" and capability is not None and capability < (8, 0))
