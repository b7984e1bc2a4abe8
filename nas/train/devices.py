"""Owns the torch side of devices: a device name as a usable `torch.device` (the decision is
`nas.config.machine.device_name`, from the GPUs torch sees), waiting for a device's queued work
before a clock is read, and making the training GPU the current one while a run uses it.

Why the current GPU matters: `--device cuda:1` names the GPU for the tensors we place, but work
that names no device goes to the current GPU, GPU 0 unless someone says otherwise: the
DataLoader's pin-memory thread (it pins on `torch.accelerator.current_device_index()`), pinned
host copies, and any bare `cuda`. Worker processes set theirs (`nas.search.workers.own_device`); an
in-process search or retrain gets it from `nas.train.fit.fit`, which runs under `current_gpu`.

Claims:
- `gpu_to_make_current(device)` is the index of a CUDA device and None for any other device.
- `resolve_device` initialises no CUDA in a process that has not (a parent of GPU workers):
  without `torch.cuda.set_device` the current GPU is GPU 0.
- `current_gpu(device)` makes that GPU the current one while its block runs, and on the CPU is
  a no-op: it initialises no CUDA.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from nas.config.machine import device_name


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` -> a usable device with an index on CUDA (`cuda` is the
    current GPU: `nas.config.machine.device_name`), or a UserError saying why not."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # asked only for a name without an index, and only of a process that has initialised CUDA
    # (set_device does): else GPU 0 is current, and asking would open a context on it, which a
    # parent of GPU workers must not hold (nas.config.machine.parent_may_use_cuda)
    asks = visible and name in ("auto", "cuda") and torch.cuda.is_initialized()
    current = torch.cuda.current_device() if asks else 0
    return torch.device(device_name(name, visible, current))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it counts that work (a no-op
    on the CPU, which computes as it is called)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_to_make_current(device: torch.device) -> int | None:
    """The GPU index a run on `device` makes current; None off CUDA (a CUDA device without an
    index, which `resolve_device` never returns, means the current GPU: 0 if none was set)."""
    if device.type != "cuda":
        return None
    return 0 if device.index is None else device.index


def current_gpu(device: torch.device) -> AbstractContextManager[object]:
    """A context under which `device`'s GPU is the current one (restored on leaving); nothing on
    the CPU."""
    index = gpu_to_make_current(device)
    if index is None:
        return contextlib.nullcontext()
    return torch.cuda.device(index)
