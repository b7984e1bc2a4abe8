"""Training one model: `model` (the PyTorch network of an `Architecture`), `optimizer` (the
recipe's optimizer for a device), `step` (the one training step), `precision` (the precision
policy per device), `fit` (`fit`, the trainer it builds, its epochs, and `evaluate`), `state`
(what a fit carries and checkpoints), `checkpoint` (the checkpoint file) and `devices` (a
device name as a torch device, made current for a run).

Imports: the foundations, `nas.arch` and `nas.data`.
"""
