"""Owns the one training step (forward, cross-entropy loss, backward, optimizer step, under a
`nas.train.precision.Precision`) and the optimizer it steps. The trainer (`nas.train.fit`), the
memory measurement (`nas.costs.memory`), the step timing (`nas.costs.step_timing`), `nas doctor` and
the benchmarks all train through `TrainingStep`, so a fix to the step is made once.

Claims:
- `TrainingStep` reads nothing back to the host: it returns the loss and the logits as
  detached device tensors, so an epoch loop can sum them on the device and synchronise once.
  Under fp16 the gradient scaler checks for infinite gradients; with a fused optimizer (CUDA)
  that check stays on the device too.
- In fp32 on the CPU a step is exactly torch's own: the same model, batch and seed give the
  same weights as `loss.backward(); optimizer.step()` written by hand.
- `make_optimizer` is the only place an optimizer is built: fused kernels on CUDA where the
  installed torch's optimizer takes `fused` (`speed_options`), foreach elsewhere;
  `reapply_speed_options` puts that choice back after `load_state_dict` (which copies the
  saved run's flags), so a CUDA checkpoint resumed on the CPU does not keep `fused=True`;
  `match_optimizer_state` then puts each state tensor where that update wants it: moment
  buffers with their parameter's device, dtype and memory format, `step` on the parameter's
  device for a fused update (`step_home`), so a CPU checkpoint resumes under fused Adam on CUDA.
- `restore_scaler` carries fp16's loss scale over a resume (the checkpoint holds the scaler's
  state) and leaves a scaler of another precision as it is.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.config.recipe import Recipe
from nas.train.precision import Precision

OPTIMIZER_CLASSES = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SPEED_FLAGS = ("fused", "foreach")  # how an optimizer's update runs, not what it computes


def accepts_fused(optimizer_class: type) -> bool:
    """Whether the installed torch's optimizer class takes `fused` (its constructor says)."""
    return "fused" in inspect.signature(optimizer_class).parameters


def speed_options(device_type: str, fused_available: bool) -> dict[str, bool | None]:
    """How the optimizer updates: one fused kernel for every parameter on CUDA when the
    optimizer has one, else the foreach (multi-tensor) implementation."""
    if device_type == "cuda" and fused_available:
        return {"fused": True, "foreach": None}
    return {"fused": None, "foreach": True}


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    """The recipe's optimizer (`recipe.optimizer`, `lr`, `momentum`, `weight_decay`) for
    `model`'s parameters, with the update implementation for `device`."""
    optimizer_class = OPTIMIZER_CLASSES[recipe.optimizer]
    speed = speed_options(device.type, accepts_fused(optimizer_class))
    if recipe.optimizer == "sgd":
        return optimizer_class(
            model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            **speed,
        )
    return optimizer_class(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, **speed
    )


def reapply_speed_options(optimizer: torch.optim.Optimizer) -> None:
    """After `optimizer.load_state_dict`: each parameter group takes back the fused/foreach
    choice the optimizer was built with for this device (the loaded groups carry the saved
    run's, which may have been another device's)."""
    for group in optimizer.param_groups:
        for flag in SPEED_FLAGS:
            group[flag] = optimizer.defaults[flag]


def step_home(group: dict[str, Any], param_device: torch.device) -> torch.device:
    """Where Adam's `step` counter lives for a parameter on `param_device` in `group`: on that
    device for the fused or capturable update (whose kernels read it there, as float32), else on
    the CPU (the foreach and single-tensor updates read it on the host)."""
    if group.get("fused") or group.get("capturable"):
        return param_device
    return torch.device("cpu")


def match_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After `load_state_dict` and `reapply_speed_options`: every state tensor where this run's
    update wants it. A moment buffer (Adam's exp_avg, exp_avg_sq; SGD's momentum) takes its
    parameter's device, dtype and strides (a channels_last parameter's buffer is channels_last:
    `load_state_dict` keeps the checkpoint's layout, and the fused update refuses a mix); the
    `step` counter goes where `step_home` says, as float32 beside a fused update. A checkpoint
    written on the CPU so resumes on a GPU, and one written on a GPU on the CPU."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in list(state.items()):
                if not isinstance(value, torch.Tensor):
                    continue
                if key == "step":
                    home = step_home(group, param.device)
                    dtype = torch.float32 if home.type != "cpu" else value.dtype
                    state[key] = value.to(device=home, dtype=dtype)
                elif value.shape == param.shape:
                    dtype = param.dtype if value.is_floating_point() else value.dtype
                    # empty_like keeps the parameter's strides (its memory format)
                    state[key] = torch.empty_like(param, dtype=dtype).copy_(value)
                else:
                    state[key] = value.to(device=param.device)


def restore_scaler(scaler: torch.amp.GradScaler, saved: dict[str, Any] | None) -> bool:
    """Load a checkpoint's gradient-scaler state into `scaler` when both are fp16's (the loss
    scale carries over); a resume in another precision starts its scaler anew. True if loaded."""
    if not saved or not scaler.is_enabled():
        return False
    scaler.load_state_dict(saved)
    return True


def float_logits(model: nn.Module, inputs: torch.Tensor, precision: Precision) -> torch.Tensor:
    """`model`'s logits for `inputs`, computed under `precision` and returned in float32: the
    loss's softmax wants the range, and an argmax of bf16 logits (ties, rounding) could differ
    from the float32 export's."""
    with precision.autocast():
        logits = model(inputs)
    return logits.float()


class TrainingStep:
    """One optimizer step of `model` on a batch under `precision`; call it per batch."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.precision = precision
        # a step that shares another's scaler (the eager twin of a compiled step) passes it
        self.scaler = scaler if scaler is not None else precision.grad_scaler()

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of the batch before the update, both detached, on the device."""
        logits = float_logits(self.model, images, self.precision)
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # disabled scaler (bf16, fp32): the loss as it is
        self.scaler.step(self.optimizer)  # skips the update if fp16 gradients overflowed
        self.scaler.update()
        return loss.detach(), logits.detach()
