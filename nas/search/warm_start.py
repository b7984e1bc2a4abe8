"""Owns what a new study trains first, its warm start: a Pareto study's ladder of sizes across
the budget, then the reference study's models the space holds within the budgets, each queued
with `records.WARM_START` naming it (`nas.search.study_setup` calls it once, when it creates a
study).

Claims:
- The reference models queued are those the space can express whose parameters and MACs,
  counted with the data's classes and image size, are within the budgets.
- A Pareto study's ladder holds three sizes, cheapest first: the space's smallest architecture,
  then up to near the budget, never over the parameter or MAC budget; they are queued first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna

from nas import records
from nas.arch.counts import count_macs, count_params
from nas.arch.presets import PRESET_RECIPES, PRESETS, REPORTED_ACCURACY
from nas.arch.space import SearchSpace
from nas.config.search import SearchConfig
from nas.costs.budgets import Budgets


def warm_start(
    study: optuna.Study,
    config: SearchConfig,
    space: SearchSpace,
    announce: Callable[[str], None],
    num_classes: int,
    image_size: int,
) -> None:
    """Queue a new study's first candidates: a Pareto study's size ladder, then the reference
    study's models the space holds within the budgets; say what was queued."""
    budgets = Budgets.of(config)
    if config.pareto:
        rungs = enqueue_size_ladder(study, space, budgets, num_classes, image_size)
        if rungs:
            announce(
                f"warm start: a ladder of {len(rungs)} sizes ({', '.join(rungs)}) trains "
                "first, so the front spans the space from the start"
            )
    queued = enqueue_reference_models(study, space, budgets, num_classes, image_size)
    if queued:
        announce(
            f"warm start: {', '.join(queued)} (the reference study's models) train first; "
            "--no-warm-start turns this off"
        )
    elif not config.pareto:
        announce(
            f"warm start: the space {space.name} holds none of the reference study's models "
            "within the budget; starting from sampled candidates"
        )


def warm_start_models(
    space: SearchSpace, budgets: Budgets | int, num_classes: int, image_size: int
) -> list[tuple[str, dict[str, Any]]]:
    """The reference study's models that `space` can express within the analytic budgets
    (parameters, MACs; the gate checks the measured ones) with the data's classes and image
    size, best reported accuracy first, each architecture once, with the trial parameters that
    build it."""
    if isinstance(budgets, int):
        budgets = Budgets(params=budgets)
    chosen: list[tuple[str, dict[str, Any]]] = []
    # the search trains with its own recipe: presets that differ only in theirs are left out
    names = [name for name in REPORTED_ACCURACY if name not in PRESET_RECIPES]
    for name in sorted(names, key=lambda n: -REPORTED_ACCURACY[n]):
        arch = replace(PRESETS[name], num_classes=num_classes)  # the head the data needs
        params = space.params_for(arch)
        if params is None or count_params(arch) > budgets.params:
            continue
        if budgets.macs is not None and count_macs(arch, image_size) > budgets.macs:
            continue
        chosen.append((name, params))
    return chosen


def enqueue_reference_models(
    study: optuna.Study,
    space: SearchSpace,
    budgets: Budgets | int,
    num_classes: int,
    image_size: int,
) -> list[str]:
    """Queue the reference models first (`records.WARM_START` names each): a search then
    starts from what the reference study found by hand instead of from random candidates.
    Returns their names."""
    models = warm_start_models(space, budgets, num_classes, image_size)
    for name, params in models:
        study.enqueue_trial(params, user_attrs={records.WARM_START: name})
    return [name for name, _ in models]


LADDER_RUNGS = 3  # a Pareto study's first candidates: the cheapest, the middle, the largest
LADDER_GRID = 20  # steps of the search for the largest rung within the budgets


def size_ladder(
    space: SearchSpace, budgets: Budgets, num_classes: int, image_size: int
) -> list[tuple[str, dict[str, Any]]]:
    """Architectures from the space's cheapest to its largest within the analytic budgets
    (`SearchSpace.at_fraction`), evenly spaced, with the trial parameters that build each.

    A Pareto search needs the front's ends as much as its middle; random first candidates
    cluster around the space's typical size, so the ladder anchors both ends from the start."""

    def fits(arch) -> bool:
        within = count_params(arch) <= budgets.params
        return within and (budgets.macs is None or count_macs(arch, image_size) <= budgets.macs)

    grid = [space.at_fraction(step / LADDER_GRID, num_classes) for step in range(LADDER_GRID + 1)]
    fitting = [arch for arch in grid if fits(arch)]
    if not fitting:
        return []
    low, high = count_params(fitting[0]), count_params(fitting[-1])
    # rungs evenly spaced in log parameters: sizes span orders of magnitude
    targets = [low * (high / low) ** (i / (LADDER_RUNGS - 1)) for i in range(LADDER_RUNGS)]
    rungs: list[tuple[str, dict[str, Any]]] = []
    for target in targets:
        arch = min(fitting, key=lambda a: abs(math.log(count_params(a) / target)))
        params = space.params_for(arch)
        if params is not None and params not in [p for _, p in rungs]:
            rungs.append((f"{count_params(arch):,} params", params))
    return rungs


def enqueue_size_ladder(
    study: optuna.Study, space: SearchSpace, budgets: Budgets, num_classes: int, image_size: int
) -> list[str]:
    """Queue `size_ladder`'s rungs, cheapest first (`records.WARM_START` names each); returns
    their names."""
    rungs = size_ladder(space, budgets, num_classes, image_size)
    for name, params in rungs:
        study.enqueue_trial(params, user_attrs={records.WARM_START: f"size ladder, {name}"})
    return [name for name, _ in rungs]
