"""Owns the numerics a training step runs with on a device: the precision policy (which
autocast dtype, whether a gradient scaler runs) and cuDNN autotuning around a run.

The policy (`choose_precision`) is a pure function of what was asked (`auto`, `bf16`, `fp16`,
`fp32`), the device type and the GPU's compute capability:

- `auto`: bf16 autocast at compute capability 8.0 and above (A100, H100, L4, ...); fp16
  autocast with a gradient scaler below it (a T4 is 7.5: PyTorch sends no bf16 convolution to
  cuDNN below 8.0, so bf16 there runs a slow emulated path); float32 on the CPU.
- `bf16` on a GPU below 8.0 is allowed (it works, only slowly) with a one-line warning saying
  so; `fp16` is allowed anywhere on CUDA.
- `bf16` or `fp16` asked for on the CPU trains in float32, with a one-line warning: precision
  is a device setting, so a run moved to a CPU (a retrain of a GPU study, a resumed
  checkpoint) still runs rather than refusing.

Claims:
- This is the only module of `nas/` and `benchmarks/` that names a reduced-precision dtype or
  opens an autocast: every training step (`nas.train.step`) takes its `Precision`.
- `Precision.grad_scaler()` is enabled only for fp16; disabled, it is a pass-through, so the
  same step code serves every precision.
- `cudnn_autotuning(enabled)` sets `torch.backends.cudnn.benchmark` for its block and restores
  the value it found afterwards, also when the block raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from nas.config.machine import PRECISIONS
from nas.errors import UserError

BF16_MIN_CAPABILITY = (8, 0)  # Ampere: the first compute capability cuDNN runs bf16 convolutions at
# the autocast dtype of each precision that autocasts; fp32 runs without autocast
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What a training step runs in on one device type, and why."""

    name: str  # bf16 | fp16 | fp32: what the step computes in
    device_type: str  # cuda | cpu: the autocast's device type
    reason: str  # one phrase: why this precision, e.g. "auto: compute 9.0 >= 8.0"
    warning: str | None = None  # one line for the user when the request was questionable
    # (the command line prints it once per run: `precision_warnings`)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.name)

    @property
    def uses_scaler(self) -> bool:
        """fp16's range is narrow: small gradients underflow unless the loss is scaled up."""
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast a training or evaluation forward pass runs under (a no-op for fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for fp16 (disabled, its calls pass straight through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.uses_scaler)

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def choose_precision(
    requested: str, device_type: str, capability: tuple[int, int] | None
) -> Precision:
    """The precision a run asking for `requested` uses on a `device_type` device whose compute
    capability is `capability` (None where there is none: the CPU). See the module docstring."""
    if requested not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device_type != "cuda":
        if requested in ("auto", "fp32"):
            return Precision("fp32", device_type, f"{requested}: the {device_type} trains in fp32")
        warning = (
            f"--precision {requested} applies to CUDA GPUs; this run is on the {device_type}, "
            "which trains in fp32"
        )
        return Precision(
            "fp32", device_type, f"{requested} asked for on the {device_type}", warning
        )
    compute = _compute(capability)
    modern = capability is not None and tuple(capability) >= BF16_MIN_CAPABILITY
    if requested == "auto":
        if modern:
            return Precision("bf16", "cuda", f"auto: compute {compute} >= 8.0")
        return Precision("fp16", "cuda", f"auto: compute {compute} < 8.0, no cuDNN bf16 below 8.0")
    if requested == "bf16" and not modern:
        warning = (
            f"--precision bf16 on a GPU of compute {compute}: PyTorch has no cuDNN bf16 "
            "convolution below 8.0 and runs a several times slower path; --precision auto "
            "picks fp16 with a gradient scaler there"
        )
        return Precision("bf16", "cuda", f"bf16 asked for at compute {compute}", warning)
    return Precision(requested, "cuda", f"{requested} asked for")


def _compute(capability: tuple[int, int] | None) -> str:
    return "unknown" if capability is None else f"{capability[0]}.{capability[1]}"


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """The compute capability of a CUDA device; None for any other."""
    if device.type != "cuda":
        return None
    return tuple(torch.cuda.get_device_capability(device))


def precision_for(requested: str, device: torch.device) -> Precision:
    """`choose_precision` for a resolved device."""
    return choose_precision(requested, device.type, device_capability(device))


def precision_warnings(requested: str, devices: Iterable[torch.device]) -> list[str]:
    """The distinct warning lines `requested` gives on `devices` (the workers' GPUs), in
    order: what a command prints once before it trains, where a search's every trial would
    otherwise repeat it."""
    lines = (precision_for(requested, device).warning for device in devices)
    return list(dict.fromkeys(line for line in lines if line))


@contextlib.contextmanager
def cudnn_autotuning(enabled: bool) -> Iterator[None]:
    """cuDNN autotuning (`torch.backends.cudnn.benchmark`: time each convolution's algorithms on
    its first shape, keep the fastest) for the block, then the setting found before it."""
    found = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = found
