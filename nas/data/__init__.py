"""The data: `loading` (datasets, the fixed validation split, normalisation statistics, loader
workers), `readers` (each dataset read from disk in its real format, or generated), `augment`
(the recipe's training augmentation and the normalisation of images), `autoaugment`
(AutoAugment on whole batches), `batches` (where each epoch's training batches come from) and
`device_memory` (whether the training split lives on the device, and how many images are
augmented or evaluated at once).

Imports: the foundations and `nas.arch`.
"""
