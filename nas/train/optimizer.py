"""Owns the optimizer: the recipe's optimizer built for a device, and its state put back where
that device's update wants it after a resume.

Claims:
- `make_optimizer` is the only place an optimizer is built: fused kernels on CUDA where the
  installed torch's optimizer takes `fused` (`speed_options`), foreach elsewhere.
- `reapply_speed_options` puts that choice back after `load_state_dict` (which copies the
  saved run's flags), so a CUDA checkpoint resumed on the CPU does not keep `fused=True`.
- `match_optimizer_state` then puts each state tensor where that update wants it: moment
  buffers with their parameter's device, dtype and memory format, `step` on the parameter's
  device for a fused update (`step_home`), so a CPU checkpoint resumes under fused Adam on CUDA.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from nas.config.recipe import Recipe

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
