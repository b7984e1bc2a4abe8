"""The images a run trains on: `readers` (each on-disk format, read into uint8 tensors),
`loading` (a dataset's splits, the validation split and the normalisation), `augment` and
`autoaugment` (the recipe's augmentation, per image and batched on the device), `batches`
(where each training batch comes from) and `device_memory` (how much of the device the data
path and the evaluation may use).

Imports: the foundations and `nas.arch`.
"""
