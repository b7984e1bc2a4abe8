"""Owns how a setting is declared and checked: `kept` (part of a study's identity: what a
resume must keep), and the one-sentence checks every configuration dataclass applies to its
values (`require`, `require_whole`, `is_finite`).

A dataclass field declared with `kept(default)` is one whose value makes trials comparable:
the search refuses to resume a study with another value (its trials would rank candidates on
different terms), and a retrain of a study inherits it from the study. Every other field
(devices, folders, seeds, speed switches) may differ between runs and machines.

Declared once, on the config dataclasses themselves (`DataConfig`, `Recipe`), so a new
recipe field is either kept or not by the line that adds it, never by a list elsewhere.
No torch, no optuna.
"""

from __future__ import annotations

import math
from dataclasses import field, fields
from typing import Any

from nas.errors import UserError

KEPT = "kept_on_resume"  # the field-metadata key


def kept(default: Any) -> Any:
    """A dataclass field default that a resume must keep (see the module docstring)."""
    return field(default=default, metadata={KEPT: True})


def kept_names(config_class: type) -> tuple[str, ...]:
    """The names of the fields of `config_class` declared with `kept`, in declaration order."""
    return tuple(f.name for f in fields(config_class) if f.metadata.get(KEPT))


def kept_values(config: Any) -> dict[str, Any]:
    """The kept fields of a config instance, by name."""
    return {name: getattr(config, name) for name in kept_names(type(config))}


def from_known(config_class: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """`data`'s settings, refusing names `config_class` does not have (one sentence naming
    them; `what` says whose settings they are)."""
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(data) - known)
    require(not unknown, f"unknown {what} setting(s): {', '.join(unknown)}")
    return dict(data)


def require(condition: bool, message: str) -> None:
    """A `UserError` of `message` unless `condition` holds."""
    if not condition:
        raise UserError(message)


def require_whole(name: str, value: object, minimum: int) -> None:
    """A `UserError` unless `value` is a whole number (not a bool) of at least `minimum`."""
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be a whole number of at least {minimum}, got {value!r}",
    )


def is_finite(value: object) -> bool:
    """A real number (not a bool, not NaN or infinite): comparisons then mean something."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
