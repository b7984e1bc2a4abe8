"""Training one model: `model` (the PyTorch network of an `Architecture`), `step` (the one
training step and the optimizer it steps), `precision` (the precision policy per device),
`fit` (`fit`, its epochs, and `evaluate`), `state` (what a fit carries and checkpoints),
`checkpoint` (the checkpoint file) and `devices` (a device name as a torch device, made
current for a run).

Imports: the foundations, `nas.arch` and `nas.data`.
"""
