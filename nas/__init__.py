"""Neural architecture search for ResNet image classifiers under a hard parameter budget.

The public names are re-exported here; `build_model` and the other torch-backed names are
imported on first use, so `import nas` stays fast for the torch-free parts (arch, space).

`nas.search(...)` runs a search (`nas.api.search.search`). `nas.search` is also the package
`nas/search/`, and Python sets a package's attribute on its parent whenever the subpackage is
imported (by this tool itself, the moment a search runs), so a function stored under that name
would be replaced by the module. Instead the package's module object is made callable (its
class becomes `_CallableSearch`, a `ModuleType`): `nas.search` stays the package for every
import, and calling it runs the search, in whatever order things were imported.
"""

import types

import nas.search as _search_package  # its __init__ is a docstring: this imports nothing more
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
    "load_search",
    "predict",
    "retrain",
    "search",
]


class _CallableSearch(types.ModuleType):
    """The `nas.search` package, which called runs `nas.api.search.search` (see above)."""

    def __call__(self, *args, **kwargs):
        from nas.api.search import search

        return search(*args, **kwargs)


_search_package.__class__ = _CallableSearch


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
    if name == "load_search":
        from nas.api.search import load_search

        return load_search
    if name == "retrain":
        from nas.api.retrain import retrain

        return retrain
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
