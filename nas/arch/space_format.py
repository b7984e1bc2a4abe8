"""Owns the search-space file format: its YAML keys, their validation, and the one-sentence
`SpaceError` that names the file, the key and the problem (`nas.arch.space.SearchSpace` holds the
result and samples from it). No torch, no optuna.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nas.arch.architecture import DEFAULT_STEM_TYPE, KERNEL_RANGE, STEMS
from nas.errors import UserError

KNOWN_KEYS = (
    "name",
    "description",
    "stem",
    "stem_type",
    "layers",
    "channels",
    "blocks",
    "conv_kernel",
    "skip_kernel",
    "kernels",
)
KERNEL_MODES = ("shared", "per_layer")


class SpaceError(UserError):
    """A search-space file that cannot be used; the message names the file, key and problem."""


def parse_space(text: str, source: str) -> dict[str, Any]:
    """The validated values of a space file's text, as `SearchSpace`'s fields by name."""

    def fail(key: str, problem: str) -> SpaceError:
        return SpaceError(f"{source}: {key}: {problem}")

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpaceError(f"{source}: is not valid YAML{where}; check the indentation") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: must be a YAML mapping of the keys {', '.join(KNOWN_KEYS)}")
    unknown = sorted(str(key) for key in data if key not in KNOWN_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; the known keys are {', '.join(KNOWN_KEYS)}")
    for key in ("layers", "channels", "blocks", "conv_kernel"):
        if key not in data:
            raise fail(key, "is required")

    min_layers, max_layers = _int_range(data["layers"], "layers", fail)
    channel_choices = _per_layer(
        data["channels"], "channels", max_layers, _is_int_list, _choices, fail
    )
    block_ranges = _per_layer(data["blocks"], "blocks", max_layers, _is_pair, _int_range, fail)
    conv_kernels = _kernel_choices(data["conv_kernel"], "conv_kernel", fail)
    skip_kernels = _kernel_choices(data.get("skip_kernel", [1]), "skip_kernel", fail)
    mode = data.get("kernels", "shared")
    if mode not in KERNEL_MODES:
        raise fail("kernels", f"must be one of {', '.join(KERNEL_MODES)}, got {mode!r}")
    stem = data.get("stem", 32)
    stem_choices = _choices([stem] if _is_int(stem) else stem, "stem", fail)
    stem_types = _stem_types(data.get("stem_type", DEFAULT_STEM_TYPE), fail)
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise fail("name", "must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", f"must be one line of text, got {description!r}")
    return dict(
        name=name,
        stem_choices=stem_choices,
        min_layers=min_layers,
        max_layers=max_layers,
        channel_choices=channel_choices,
        block_ranges=block_ranges,
        conv_kernels=conv_kernels,
        skip_kernels=skip_kernels,
        kernels_per_layer=mode == "per_layer",
        stem_types=stem_types,
        description=" ".join(description.split()),
    )


# ---- validation helpers (each raises through `fail(key, problem)`) -------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(item) for item in value)


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)


def _choices(value: Any, key: str, fail) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise fail(key, f"must be a list of positive integers, got {value!r}")
    if not value:
        raise fail(key, "the list of choices is empty; give at least one value")
    for item in value:
        if not _is_int(item) or item <= 0:
            raise fail(key, f"choices must be positive integers, got {item!r}")
    if len(set(value)) != len(value):
        raise fail(key, f"choices repeat a value: {value}")
    return tuple(value)


def _stem_types(value: Any, fail) -> tuple[str, ...]:
    """`stem_type: imagenet` or a list to search, such as `[cifar, imagenet]`."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise fail("stem_type", f"must be one of {', '.join(STEMS)} or a list of them")
    for item in items:
        if item not in STEMS:
            raise fail("stem_type", f"must be one of {', '.join(STEMS)}, got {item!r}")
    if len(set(items)) != len(items):
        raise fail("stem_type", f"choices repeat a value: {items}")
    return tuple(items)


def _int_range(value: Any, key: str, fail) -> tuple[int, int]:
    if not _is_pair(value):
        raise fail(key, f"must be an inclusive range [min, max] of integers, got {value!r}")
    low, high = value
    if low < 1:
        raise fail(key, f"the minimum must be at least 1, got {low}")
    if low > high:
        raise fail(key, f"the range is inverted: min {low} is greater than max {high}")
    return low, high


def _kernel_choices(value: Any, key: str, fail) -> tuple[int, ...]:
    choices = _choices([value] if _is_int(value) else value, key, fail)
    low, high = KERNEL_RANGE
    for kernel in choices:
        if not low <= kernel <= high:
            raise fail(key, f"kernel sizes must be between {low} and {high}, got {kernel}")
    return choices


def _per_layer(value: Any, key: str, layers: int, is_single, parse, fail) -> tuple:
    """One entry for every layer (`is_single(value)`), or a list of exactly `layers` entries."""
    if is_single(value):
        return (parse(value, key, fail),) * layers
    if not isinstance(value, list) or not value:
        raise fail(key, "must be one entry for every layer or a list with one entry per layer")
    if len(value) != layers:
        raise fail(
            key,
            f"has {len(value)} per-layer entries but layers allows up to {layers}; "
            "give one entry per layer or a single entry for all",
        )
    return tuple(parse(item, f"{key}[{index + 1}]", fail) for index, item in enumerate(value))
