"""Owns how a setting is declared part of a study's identity: what a resume must keep.

A dataclass field declared with `kept(default)` is one whose value makes trials comparable:
the search refuses to resume a study with another value (its trials would rank candidates on
different terms), and a retrain of a study inherits it from the study. Every other field
(devices, folders, seeds, speed switches) may differ between runs and machines.

Declared once, on the config dataclasses themselves (`DataConfig`, `TrainConfig`), so a new
recipe field is either kept or not by the line that adds it, never by a list elsewhere.
No torch, no optuna.
"""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any

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
