"""Owns the machine a run is on, apart from the recipe: `Machine` (device, precision, loader
workers, memory layout, data path, chunk sizes, compile: switches that change how fast a run
goes, never what it computes, so a resume or a retrain may change them), the CPUs this process
may use, which device a name means and which GPU each worker gets, as plain functions of the
GPUs this process can see. No torch, no optuna: the CPU suite tests every decision at its
boundaries (no GPU, one, two; more workers than GPUs) without a GPU.
`nas.train.devices.resolve_device` reads the count and the current GPU from torch and asks
`device_name`; `nas.search.workers.plan_devices` asks `worker_devices`.

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
- Every value a `Machine` accepts means something (an unknown precision, a chunk of 0 images is
  a `UserError` of one sentence); `Machine.from_dict` reads an earlier release's recipe, which
  held these settings (`amp` before `precision`), and ignores the recipe's own names.
- `sharing_line` names, once, the GPUs that several workers share and what that changes; None
  when no GPU is shared.
- `gpu_shared_by` counts the workers on a worker's GPU (itself included; 1 on the CPU).
- `parent_may_use_cuda`: the process that starts several workers on GPUs runs no CUDA work of
  its own (it would hold a CUDA context, several hundred MB, on its first GPU for the whole
  search); one process that trains itself may.
- `shared_latency_refusal`: latency timed on a GPU another worker trains on is refused in one
  sentence (the timing would count that worker's kernels); None where no worker's latency GPU
  is another's training GPU.
- `oom_is_the_candidates`: running out of memory on the GPU a run trains on is the candidate's
  own verdict only when no other worker shares that GPU.
- `channels_last_on`: training defaults to channels_last (NHWC) on CUDA, except for fp32 below
  compute capability 8.0 (no TF32 tensor cores there: NCHW); never on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from nas.config.fields import from_known, require, require_whole
from nas.config.recipe import Recipe
from nas.errors import UserError

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"  # what --device accepts, for error messages
DATA_PATHS = ("auto", "device", "loader")  # where training batches are augmented
# what a training step computes in (nas.train.precision decides what auto means on a device)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
PRECISION_HELP = (
    "auto: bf16 at compute capability 8.0 or more, fp16 with a gradient scaler below, "
    "fp32 on the CPU"
)


@dataclass(frozen=True)
class Machine:
    """How a run uses the machine it is on. Recorded with each run (metrics.json), never kept
    by a study: another machine may resume it."""

    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (PRECISION_HELP)
    workers: int | None = None  # loader processes for the per-image path; None: the machine's
    # NHWC memory layout. None (the default): on CUDA (bf16 tensor cores want it), off on the
    # CPU, where oneDNN 3.12 (torch 2.14) corrupts the heap in the backward pass of a 1x1
    # stride-2 convolution on small channels_last batches on AVX-512 CPUs (issue 10); the
    # contiguous layout costs a few per cent there (benchmarks/RESULTS.md). True forces NHWC.
    channels_last: bool | None = None
    data_path: str = "auto"  # auto (= device: batched augmentation) | device | loader (per image)
    eval_batch_size: int = 1000  # most images per batch when evaluating (fewer where device
    # memory is short: nas.data.device_memory); no gradients, so large
    chunk_size: int = 8192  # most images augmented at once on the device path (fewer where
    # device memory is short: nas.data.device_memory): enough to fill a GPU, more gains nothing
    compile: bool = False  # torch.compile the model (CUDA); compile time is reported apart
    gpu_shared_by: int = 1  # worker processes training on this run's GPU (nas.search.workers
    # sets it; more than 1 when workers outnumber GPUs): an out-of-memory there may be another
    # worker's peak, so it is not taken as the candidate's own (`oom_is_the_candidates`)

    def __post_init__(self) -> None:
        require(
            isinstance(self.device, str) and bool(self.device),
            f"device must be one of {DEVICE_NAMES}, got {self.device!r}",
        )
        for name in ("eval_batch_size", "chunk_size", "gpu_shared_by"):
            require_whole(name, getattr(self, name), 1)
        if self.workers is not None:
            require_whole("workers", self.workers, 0)
        for name, choices in (("data_path", DATA_PATHS), ("precision", PRECISIONS)):
            value = getattr(self, name)
            require(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")
        require(
            isinstance(self.compile, bool), f"compile must be true or false, got {self.compile!r}"
        )
        require(
            self.channels_last is None or isinstance(self.channels_last, bool),
            f"channels_last must be true, false or null, got {self.channels_last!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        """Every setting; `gpu_shared_by` only where a GPU is shared (records stay as before)."""
        settings = asdict(self)
        if self.gpu_shared_by == 1:
            del settings["gpu_shared_by"]
        return settings

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Machine:
        """The machine's settings in `data` (its own dict, or an earlier release's recipe, which
        held them beside the recipe's: those are ignored here)."""
        settings = dict(data)
        if "amp" in settings:  # stored before `precision`: amp on meant reduced precision on CUDA
            amp = settings.pop("amp")
            settings.setdefault("precision", "auto" if amp else "fp32")
        recipe = {f.name for f in fields(Recipe)}
        own = {k: v for k, v in settings.items() if k not in recipe}
        return cls(**from_known(cls, own, "machine"))


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity where the platform has one (Linux), else
    `os.cpu_count()`; at least 1."""
    if hasattr(os, "sched_getaffinity"):  # respects container and taskset CPU limits
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes of host memory available to a new allocation without swapping (Linux's
    MemAvailable, which counts reclaimable caches), None where the platform does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # given in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


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


def _sharers(devices: list[str]) -> dict[str, list[int]]:
    """Each CUDA device several workers train on, with those workers' indices."""
    workers: dict[str, list[int]] = {}
    for index, device in enumerate(devices):
        if device.startswith("cuda"):
            workers.setdefault(device, []).append(index)
    return {device: found for device, found in workers.items() if len(found) > 1}


def sharing_line(devices: list[str]) -> str | None:
    """One line naming the GPUs that workers share, e.g. `4 workers share 2 GPUs: cuda:0 runs
    workers 0, 2; cuda:1 runs workers 1, 3 ...`; None when every GPU has one worker at most."""
    shared = _sharers(devices)
    if not shared:
        return None
    gpus = sorted({device for device in devices if device.startswith("cuda")})
    who = "; ".join(
        f"{device} runs workers {', '.join(map(str, found))}" for device, found in shared.items()
    )
    return (
        f"{len(devices)} workers share {len(gpus)} GPU{'s' if len(gpus) > 1 else ''}: {who}; "
        "each trial trains beside another (slower), and an out-of-memory there is measured "
        "again by a later trial, not recorded as does-not-fit"
    )


def gpu_shared_by(devices: list[str], index: int) -> int:
    """How many of the workers on `devices` train on worker `index`'s GPU (1 off CUDA)."""
    device = devices[index]
    return devices.count(device) if device.startswith("cuda") else 1


def parent_may_use_cuda(devices: list[str]) -> bool:
    """Whether the process planning a search may run CUDA work itself (the cost estimate's
    timed step): yes when it trains itself (one worker) or nothing trains on a GPU."""
    return len(devices) <= 1 or not any(device.startswith("cuda") for device in devices)


def shared_latency_refusal(latency: str, devices: list[str]) -> str | None:
    """Why latency cannot be timed with these workers, or None: when a worker would time it
    (`latency_device`) on a GPU another worker trains on, the timing counts that worker's
    kernels and is cached for the study, so it is refused rather than skewed."""
    for index, device in enumerate(devices):
        where = latency_device(latency, device)
        others = [i for i, other in enumerate(devices) if other == where and i != index]
        if where.startswith("cuda") and others:
            return (
                f"--latency-device {latency} would time worker {index}'s candidates on {where}, "
                f"where worker {others[0]} trains, which skews the timing; use as many workers "
                "as GPUs (the default), one GPU each, or --latency-device cpu"
            )
    return None


def oom_is_the_candidates(device: str, train_device: str, shared_by: int) -> bool:
    """Whether running out of memory on `device` while measuring says the candidate does not
    fit: not on the training GPU when `shared_by` workers (more than 1) train there, where the
    other worker's peak may be what filled it."""
    return not (device == train_device and device.startswith("cuda") and shared_by > 1)
