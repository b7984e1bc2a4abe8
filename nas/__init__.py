"""Neural architecture search for ResNet image classifiers under a hard parameter budget.

The public names are re-exported here; `build_model` and the other torch-backed names are
imported on first use, so `import nas` stays fast for the torch-free parts (arch, space).
"""

from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.arch.presets import PRESETS
from nas.arch.space import SearchSpace
from nas.version import VERSION as __version__

__all__ = [
    "PRESETS",
    "Architecture",
    "SearchSpace",
    "__version__",
    "build_model",
    "count_params",
    "load_model",
    "predict",
]


def __getattr__(name: str):
    # torch takes seconds to import; only pay for it when a torch-backed name is used
    if name == "build_model":
        from nas.train.model import build_model

        return build_model
    if name == "load_model":
        from nas.run.folder import load_model

        return load_model
    if name == "predict":
        from nas.run.inference import predict

        return predict
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
