"""Owns the peak memory of one training step of a candidate (issue 14): measured on CUDA,
estimated from the architecture alone anywhere else.

`training_memory`: on CUDA it is measured (`torch.cuda.max_memory_allocated` over one
steady-state training step of `nas.train.step.TrainingStep` under the run's precision, after
warm-up steps with cuDNN autotuning on as `nas.train.fit.fit` runs them:
`measure_steady_step`); anywhere else it is estimated from the architecture alone
(`estimate_training_memory`, whose docstring gives the model) and labelled `measured=False`.
Neither counts the data path's own device memory (`nas.data.batches` keeps the training split and
two augmented chunks on the device), torch's or CUDA's fixed overhead (the CUDA context,
autotuning's trial workspaces), or the allocator's rounding.

Claims:
- The estimate's activations are what autograd really saves for the backward pass of
  `build_model(arch)`, and they grow with the batch and the image; its weights, gradients and
  optimizer state follow from the parameter count and the optimizer.
- Off CUDA, `training_memory` is that estimate, labelled `measured=False` and with the device.
- An optimizer the estimate does not know is a UserError.
- `measure_steady_step` resets the peak after the last warm-up step and before the one measured
  step, and reads it after that step: autotuning's trial workspaces and the first steps'
  allocations are not counted.
- A `TrainingMemory` reads back from its dict (as a trial records it) unchanged.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from typing import Any

import torch

from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.costs.latency import YOUNG_GENERATIONS
from nas.data.batches import memory_format
from nas.errors import UserError
from nas.records import recorded_fields
from nas.train.devices import resolve_device
from nas.train.model import build_model
from nas.train.optimizer import make_optimizer
from nas.train.precision import cudnn_autotuning, precision_for
from nas.train.step import TrainingStep

MB = 2**20  # bytes in a megabyte as the flag counts them (MiB, as nvidia-smi shows)
FLOAT_BYTES = 4  # float32: weights, gradients, optimizer state and activations on the CPU
LABEL_BYTES = 8  # int64 class labels

# optimizer state in float32 copies of the weights (nas.train.optimizer.make_optimizer's optimizers)
OPTIMIZER_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}  # Adam: two moments; SGD: momentum buffer


@dataclass(frozen=True)
class TrainingMemory:
    """The peak memory of one training step, measured (CUDA) or estimated (anywhere else)."""

    megabytes: float  # peak bytes / MB of one training step
    measured: bool  # True: measured on CUDA (torch.cuda.max_memory_allocated); False: estimated
    device: str  # the device it is for, e.g. "cpu", "cuda:0"
    parts: dict[str, float]  # MB per part; an estimate: weights, gradients, optimizer,
    # activations, input; a measurement: peak (and weights, from the parameter count)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingMemory:
        values = recorded_fields(cls, data)
        values["parts"] = {str(key): float(value) for key, value in values["parts"].items()}
        return cls(**values)

    def describe(self) -> str:
        """E.g. `212.4 MB (estimated for cpu: weights 19.1, gradients 19.1, optimizer 38.1,
        activations 135.0, input 0.8)` or `198.0 MB (measured on cuda:0)`."""
        if self.measured:
            return f"{self.megabytes:.1f} MB (measured on {self.device})"
        parts = ", ".join(f"{name} {value:.1f}" for name, value in self.parts.items())
        return f"{self.megabytes:.1f} MB (estimated for {self.device}: {parts})"


def _padded(channels: int, size: int, kernel: int) -> int:
    """Floats of the copy `F.pad` makes for an even kernel (`PaddedConv2d`); 0 if odd."""
    return 0 if kernel % 2 else channels * (size + kernel - 1) ** 2


def activation_floats(arch: Architecture, image_size: int) -> tuple[int, int]:
    """(floats per image, floats per step) that autograd keeps for the backward pass of a
    training step of `build_model(arch)` in float32, by the model in `estimate_training_memory`."""
    stem = arch.stem_spec
    size = -(-image_size // stem.stride)  # the stem convolution's output side
    per_image = 2 * arch.stem * size * size  # stem: conv output (BN's input), ReLU's output
    if stem.pool:
        size = stem.output_size(image_size)
        per_image += 2 * arch.stem * size * size  # the max-pool's int64 indices (8 bytes each)
        # its output is kept by the first convolutions that read it unpadded (odd kernels)
        first = arch.layer_specs()[0]
        unpadded = [first.conv_kernel]
        if first.block_needs_projection(0):
            unpadded.append(first.skip_kernel)
        if any(kernel % 2 for kernel in unpadded):
            per_image += arch.stem * size * size
    bn_channels = arch.stem  # channels of every BatchNorm
    for spec in arch.layer_specs():
        for block_index in range(spec.blocks):
            stride = spec.stride if block_index == 0 else 1
            in_width = spec.in_channels if block_index == 0 else spec.out_channels
            in_size, size = size, -(-size // stride)  # every convolution keeps ceil(size/stride)
            out = spec.out_channels * size * size
            # conv1 output, ReLU output, conv2 output, the block's final ReLU output
            per_image += 4 * out
            per_image += _padded(in_width, in_size, spec.conv_kernel)  # conv1's padded input
            per_image += _padded(spec.out_channels, size, spec.conv_kernel)  # conv2's
            bn_channels += 2 * spec.out_channels
            if spec.block_needs_projection(block_index):
                per_image += out  # the shortcut convolution's output (its BN's input)
                per_image += _padded(in_width, in_size, spec.skip_kernel)
                bn_channels += spec.out_channels
    per_image += arch.channels[-1] + arch.num_classes  # pooled features, log-softmax output
    # every BN keeps its batch mean and inverse std per channel; the loss its total weight
    return per_image, 2 * bn_channels + 1


def estimate_training_memory(
    arch: Architecture, image_size: int, batch_size: int, optimizer: str, momentum: float = 0.9
) -> TrainingMemory:
    """The peak memory of a float32 training step of `arch` (the CPU's), from the numbers alone.

    The model, part by part (4 bytes a float):
    - weights: `count_params(arch)` floats; gradients: as many (`fit` frees the last step's
      gradients only after the next forward pass, so they coexist with the activations);
    - optimizer: Adam and AdamW keep two moments per weight, SGD one momentum buffer (none when
      `momentum` is 0);
    - activations: what autograd saves for the backward pass, per image times `batch_size`:
      in the stem the convolution's output (BatchNorm keeps its input) and the ReLU's output,
      and with the imagenet stem the max-pool's int64 indices and its output (unless only
      even-kernel convolutions read it, which keep their padded copy instead);
      in every block the outputs of conv1, its ReLU, conv2, the shortcut convolution (where
      there is one) and the final ReLU (a convolution keeps its input, which another layer
      already kept; BatchNorm keeps its input; ReLU its output; the addition nothing); a
      convolution with an even kernel also keeps the padded copy of its input that
      `PaddedConv2d` makes; then the pooled features and the log-softmax output; plus per step
      each BatchNorm's batch mean and inverse standard deviation, and the loss's total weight;
    - input: the float32 image batch and its int64 labels.
    Left out: the gradients of the activations alive during the backward pass (a few tensors of
    one layer's size at a time), the optimizer's temporaries, BatchNorm's running statistics
    (2 floats per channel), and what the module docstring lists. tests/test_costs.py checks
    the activations against what autograd really saves.
    """
    if optimizer not in OPTIMIZER_COPIES:
        raise UserError(f"optimizer must be one of {', '.join(OPTIMIZER_COPIES)}, got {optimizer}")
    weights = count_params(arch) * FLOAT_BYTES
    copies = 0 if optimizer == "sgd" and momentum == 0 else OPTIMIZER_COPIES[optimizer]
    per_image, per_step = activation_floats(arch, image_size)
    parts_bytes = {
        "weights": weights,
        "gradients": weights,
        "optimizer": copies * weights,
        "activations": (per_image * batch_size + per_step) * FLOAT_BYTES,
        "input": batch_size * (arch.in_channels * image_size**2 * FLOAT_BYTES + LABEL_BYTES),
    }
    return TrainingMemory(
        megabytes=sum(parts_bytes.values()) / MB,
        measured=False,
        device="cpu",
        parts={name: value / MB for name, value in parts_bytes.items()},
    )


def training_memory(
    arch: Architecture, image_size: int, recipe: Recipe, machine: Machine
) -> TrainingMemory:
    """The peak memory of a training step of `arch` at `recipe.batch_size` on the machine's
    device: measured on CUDA, else `estimate_training_memory` labelled with the device."""
    target = resolve_device(machine.device)
    if target.type != "cuda":
        estimate = estimate_training_memory(
            arch, image_size, recipe.batch_size, recipe.optimizer, recipe.momentum
        )
        return TrainingMemory(estimate.megabytes, False, str(target), estimate.parts)
    return _measure_cuda_memory(arch, image_size, recipe, machine, target)


WARM_UP_STEPS = 2  # the optimizer's state appears in step 1; step 2 is the first steady one


def measure_steady_step(ops) -> int:
    """Peak bytes of one steady-state training step, through `ops` (`CudaStepOps` on a GPU; a
    recorder in the CPU suite): `WARM_UP_STEPS` steps with cuDNN autotuning as the run has it
    (its trial workspaces, the optimizer's first state and the allocator's first blocks land
    there), a wait for them, the cache given back, the peak reset, then the one step that is
    measured. What that step peaks at is what every later step of the run peaks at, whatever
    was free or autotuned before."""
    ops.warm_up(WARM_UP_STEPS)
    ops.synchronize()
    ops.release_cache()
    ops.reset_peak()
    ops.measured_step()
    ops.synchronize()
    return ops.peak()


class CudaStepOps:
    """`measure_steady_step`'s phases on a CUDA device for one training step of `step`."""

    def __init__(self, step, images, labels, device: torch.device, before: int):
        self.step, self.images, self.labels = step, images, labels
        self.device = device
        self.before = before  # bytes allocated before the model existed

    def warm_up(self, steps: int) -> None:
        for _ in range(steps):
            self.step(self.images, self.labels)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def release_cache(self) -> None:
        torch.cuda.empty_cache()  # autotuning's freed trial workspaces leave the cache

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)  # the peak restarts at what is held now

    def measured_step(self) -> None:
        self.step(self.images, self.labels)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) - self.before


def _measure_cuda_memory(
    arch: Architecture, image_size: int, recipe: Recipe, machine: Machine, device: torch.device
) -> TrainingMemory:
    """Peak allocated bytes of one steady-state training step as `nas.train.fit.fit` takes it
    (its layout, precision, optimizer and `nas.train.step.TrainingStep`, cuDNN autotuning on as
    in `fit`), measured by `measure_steady_step`: the model, its gradients and optimizer state
    and the step's activations and chosen workspaces, not autotuning's trials. Without
    torch.compile (`machine.compile` is not applied). A CUDA out-of-memory error propagates
    after the clean-up: the candidate does not fit this GPU."""
    gc.collect(YOUNG_GENERATIONS)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    layout = memory_format(machine, device)
    model = step = images = labels = ops = None
    try:
        # the draws leave the global RNG alone; autotuning as `fit` runs, for this block only
        with torch.random.fork_rng(devices=[device]), cudnn_autotuning(True):
            model = build_model(arch).to(device=device, memory_format=layout).train()
            precision = precision_for(machine.precision, device)
            step = TrainingStep(model, make_optimizer(model, recipe, device), precision)
            shape = (recipe.batch_size, arch.in_channels, image_size, image_size)
            images = torch.randn(shape, device=device).contiguous(memory_format=layout)
            labels = torch.randint(0, arch.num_classes, (recipe.batch_size,), device=device)
            ops = CudaStepOps(step, images, labels, device, before)
            peak = measure_steady_step(ops)
    finally:
        del model, step, images, labels, ops
        gc.collect(YOUNG_GENERATIONS)
        torch.cuda.empty_cache()
    return TrainingMemory(
        megabytes=peak / MB,
        measured=True,
        device=str(device),
        parts={"peak": peak / MB, "weights": count_params(arch) * FLOAT_BYTES / MB},
    )
