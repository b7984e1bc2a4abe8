"""Owns the named architectures (`--preset`, `--arch NAME`): the reference study's final models
(docs/reference-study.md) with their recipes and reported accuracy, and ResNet-18's layout for
comparison. No torch, no optuna.
"""

from __future__ import annotations

from typing import Any

from nas.arch.architecture import Architecture

_MODEL1 = Architecture((64, 128, 128, 256), (5, 4, 3, 2), conv_kernel=3, skip_kernel=3)
_MODEL5 = Architecture((32, 64, 128, 128, 256), (5, 4, 4, 3, 2), conv_kernel=3, skip_kernel=3)

PRESETS: dict[str, Architecture] = {
    # The reference study's final models (docs/reference-study.md); model 4 and 6 reuse model 1
    # and 5's shapes with another recipe (PRESET_RECIPES).
    "paper-model1": _MODEL1,
    "paper-model2": Architecture((32, 64, 128, 256), (10, 8, 6, 2), conv_kernel=3, skip_kernel=3),
    "paper-model3": Architecture((32, 128, 128, 256), (10, 4, 4, 2), conv_kernel=3, skip_kernel=3),
    "paper-model4": _MODEL1,
    "paper-model5": _MODEL5,
    "paper-model6": _MODEL5,
    # The classic ResNet-18 layout on a 32-channel stem, for comparison (11M parameters).
    "resnet18": Architecture((64, 128, 256, 512), (2, 2, 2, 2), conv_kernel=3, skip_kernel=1),
}
# Each preset's departures from the reference recipe (Recipe field -> value).
PRESET_RECIPES: dict[str, dict[str, Any]] = {
    "paper-model4": {"augment": "none"},  # trained without augmentation
    "paper-model6": {"optimizer": "sgd", "momentum": 0.9},  # SGD with momentum, not Adam
}
# The reference study's test accuracy of each of its final models, in percent (150 epochs).
REPORTED_ACCURACY: dict[str, float] = {
    "paper-model1": 94.63,
    "paper-model2": 94.39,
    "paper-model3": 94.10,
    "paper-model4": 84.02,
    "paper-model5": 93.77,
    "paper-model6": 93.79,
}
