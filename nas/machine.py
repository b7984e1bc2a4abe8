"""Owns what this process may use of the machine: the CPUs (`usable_cpus`).

Claims: `usable_cpus()` counts the CPUs this process is allowed to run on (its affinity mask,
which containers and `taskset` restrict) where the platform tells, else all the machine's
CPUs; never less than 1. No torch, no optuna.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity where the platform has one (Linux), else
    `os.cpu_count()`; at least 1."""
    if hasattr(os, "sched_getaffinity"):  # respects container and taskset CPU limits
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
