"""Owns evaluating a model on a split: its mean cross-entropy loss and accuracy, normalised
only (no augmentation), in batches that fit the device (`nas.batches.eval_batch_size`). `fit`
validates with it after every epoch; the retrain evaluates the test split with it once.

Claims:
- `evaluate` takes loss and accuracy of float32 logits, as the float32 export computes them
  (the forward pass runs under the run's precision, `nas.step.float_logits`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.augment import normalize_batch
from nas.batches import eval_batch_size, memory_format
from nas.config import TrainConfig
from nas.data import Splits, TensorData
from nas.step import float_logits, recipe_precision


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    splits: Splits,
    config: TrainConfig,
    device: torch.device,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction) of `model` on `data`, normalised only.
    The forward pass runs under the run's precision; loss and argmax are taken of the logits
    in float32, so the accuracy agrees with the float32 export's. `device` is where `model` is."""
    precision = recipe_precision(config, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    layout = memory_format(config, device)
    batch = eval_batch_size(config, data, device)  # fewer images where device memory is short
    for start in range(0, len(data), batch):
        images = data.images[start : start + batch].to(device, non_blocking=True)
        labels = data.labels[start : start + batch].to(device, non_blocking=True)
        inputs = normalize_batch(images, splits.mean, splits.std)
        logits = float_logits(model, inputs.contiguous(memory_format=layout), precision)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train(was_training)
    count = max(1, len(data))
    return loss_sum.item() / count, correct.item() / count
