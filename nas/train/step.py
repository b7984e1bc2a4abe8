"""Owns the one training step (forward, cross-entropy loss, backward, optimizer step, under a
`nas.train.precision.Precision`); the optimizer it steps is built by `nas.train.optimizer`. The
trainer (`nas.train.fit`), the
memory measurement (`nas.costs.memory`), the step timing (`nas.costs.step_timing`), `nas doctor` and
the benchmarks all train through `TrainingStep`, so a fix to the step is made once.

Claims:
- `TrainingStep` reads nothing back to the host: it returns the loss and the logits as
  detached device tensors, so an epoch loop can sum them on the device and synchronise once.
  Under fp16 the gradient scaler checks for infinite gradients; with a fused optimizer (CUDA)
  that check stays on the device too.
- In fp32 on the CPU a step is exactly torch's own: the same model, batch and seed give the
  same weights as `loss.backward(); optimizer.step()` written by hand.
- `restore_scaler` carries fp16's loss scale over a resume (the checkpoint holds the scaler's
  state) and leaves a scaler of another precision as it is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.train.precision import Precision


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
