"""Owns what a study records when it is created and what a resume must match: the study's
directions, sampler and pruner, its records (`records.BUDGET`, `BUDGETS`, `OBJECTIVE`, the
space text, data, recipe, tool version), and the refusal of a resume whose trials would not
compare with the study's. What a new study trains first is `nas.search.warm_start`'s.

Claims:
- Of several processes opening a new study at once (machines sharing a store), one creates it
  and writes its record and warm start; the others wait until the record is complete and resume
  it (a record is never read half-written); a record its creator never finished is written.
- A study created with some budgets, objective, space or kept data/recipe setting is never
  resumed with others (one sentence naming the difference, and nothing stored changes).
- A study of the earlier version (parameter budget only, accuracy objective) resumes with those.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna

from nas import records
from nas.arch.space import SearchSpace
from nas.config.costs import COSTS
from nas.config.data import DataConfig
from nas.config.fields import kept_values
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.costs.budgets import Budgets
from nas.errors import UserError
from nas.search.samplers import make_pruner, make_sampler
from nas.search.warm_start import warm_start
from nas.store.opening import open_storage
from nas.store.steady import SteadyStore
from nas.version import VERSION

RECORD_WAIT_SECONDS = 60.0  # how long a resume waits for a study's creator to finish its record
RECORD_POLL_SECONDS = 0.2  # how often it looks


def open_study(
    config: SearchConfig,
    space: SearchSpace,
    data: DataConfig,
    recipe: Recipe,
    announce: Callable[[str], None] | None = None,
    *,
    num_classes: int,
    image_size: int,
    record_wait: float = RECORD_WAIT_SECONDS,
    storage: SteadyStore | None = None,
) -> optuna.Study:
    """Create the study or resume it, refusing a resume whose trials would not compare.
    `num_classes` and `image_size` are the loaded data's: the warm start's costs depend on them.
    A study another process is creating is read once its record is complete (at most
    `record_wait` seconds; after that its creator is taken for dead and the record written).
    The study records the data at `image_size`, and a resume must keep it. `storage`: the
    store opened for `config.storage`, when the caller holds it already."""
    data = replace(data, image_size=image_size)
    storage = storage or open_storage(config.storage, heartbeat=config.heartbeat)
    sampler = make_sampler(config.sampler, config.seed, config.trials)
    # Optuna cannot prune a study of several objectives
    pruner = make_pruner("none" if config.pareto else config.pruner, recipe.epochs)
    try:
        # the store's unique study name makes exactly one process the creator, even when
        # several machines start at once; only the creator writes the record and the warm start
        study = optuna.create_study(
            study_name=config.study,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=["maximize", "minimize"] if config.pareto else ["maximize"],
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=config.study, storage=storage, sampler=sampler, pruner=pruner
        )
        created = False
    recorded = study.user_attrs if created else _wait_for_record(study, record_wait)
    if records.BUDGET not in recorded:  # ours to write: new, or its creator died mid-record
        names = [records.METRIC_NAME, config.minimize] if config.pareto else [records.METRIC_NAME]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
        for key, value in study_record(config, space, data, recipe).items():
            study.set_user_attr(key, value)
        if config.warm_start:
            warm_start(
                study, config, space, announce or (lambda line: None), num_classes, image_size
            )
        return study
    check_resume(config, recorded, space, data, recipe)
    return study


def _wait_for_record(study: optuna.Study, seconds: float) -> dict[str, Any]:
    """The study's attributes once its creator has written the whole record (`records.BUDGET`
    comes last), or as they are after `seconds` (a creator killed mid-record never finishes)."""
    deadline = time.monotonic() + seconds
    while True:
        recorded = study.user_attrs
        if records.BUDGET in recorded or time.monotonic() >= deadline:
            return recorded
        time.sleep(RECORD_POLL_SECONDS)


def check_resume(
    config: SearchConfig,
    recorded: dict[str, Any],
    space: SearchSpace,
    data: DataConfig,
    recipe: Recipe,
) -> None:
    """Refuse settings under which the study's trials would not be comparable."""
    how = f"pass --study NEW_NAME to start a new study (the store keeps {config.study!r})"
    if recorded[records.BUDGET] != config.budget:
        raise UserError(
            f"study {config.study!r} was created with a budget of "
            f"{recorded[records.BUDGET]:,} parameters, not {config.budget:,}; {how}"
        )
    # studies of the earlier version had the parameter budget only, and accuracy as objective
    before = recorded.get(records.BUDGETS, {"params": config.budget})
    for key, value in Budgets.of(config).to_dict().items():
        if before.get(key) != value:
            raise UserError(
                f"study {config.study!r} was created with {_budget_words(key, before.get(key))}, "
                f"not {_budget_words(key, value)}; repeat the original flags to resume, or {how}"
            )
    objective = recorded.get(
        records.OBJECTIVE,
        {records.OBJECTIVE_KIND: "accuracy", records.OBJECTIVE_MINIMIZE: "params"},
    )
    now = _objective_record(config)
    if objective != now:
        raise UserError(
            f"study {config.study!r} was created with {_objective_words(objective)}, not "
            f"{_objective_words(now)}; {how}"
        )
    if recorded.get(records.SPACE_TEXT) != space.text:
        raise UserError(
            f"study {config.study!r} was created with another search space "
            f"({recorded.get(records.SPACE_FILE)}); {how}"
        )
    for what, now in ((records.DATASET, kept_values(data)), (records.RECIPE, kept_values(recipe))):
        before = recorded.get(what, {})
        for key, value in now.items():
            # a setting the earlier version did not record compares equal to its default
            if key in before and before[key] != value:
                # a folder's size may have been chosen, not given: name the flag that keeps it
                flags = f" (--image-size {before[key]})" if key == "image_size" else ""
                raise UserError(
                    f"study {config.study!r} was created with {key} = {before[key]!r}, not "
                    f"{value!r}; repeat the original flags{flags} to resume, or {how}"
                )


def _budget_words(key: str, value: Any) -> str:
    """`a latency budget of 2.00 ms`, `no MAC budget`, `latency measured on cpu`."""
    cost = next((cost for cost in COSTS.values() if cost.key == key), None)
    if cost is not None:
        if value is None:
            return f"no {cost.budget_word} budget"
        return f"a {cost.budget_word} budget of {cost.format(value)}"
    if value is None:
        return "no latency measured"
    return f"latency measured with {key.replace('latency_', '')} {value}"


def _objective_record(config: SearchConfig) -> dict[str, str]:
    minimize = config.minimize if config.pareto else "params"  # accuracy: fronts over params
    return {records.OBJECTIVE_KIND: config.objective, records.OBJECTIVE_MINIMIZE: minimize}


def _objective_words(record: dict[str, Any]) -> str:
    if record.get(records.OBJECTIVE_KIND) == "pareto":
        return f"--objective pareto --minimize {record.get(records.OBJECTIVE_MINIMIZE)}"
    return "--objective accuracy"


def study_record(
    config: SearchConfig, space: SearchSpace, data: DataConfig, recipe: Recipe
) -> dict[str, Any]:
    """Everything a retrain needs besides the study name."""
    return {
        records.BUDGETS: Budgets.of(config).to_dict(),
        records.OBJECTIVE: _objective_record(config),
        records.SPACE_FILE: config.space,
        records.SPACE_TEXT: space.text,
        records.DATASET: data.to_dict(),
        records.RECIPE: recipe.to_dict(),
        records.SEARCH: {
            records.SEARCH_SAMPLER: config.sampler,
            records.SEARCH_PRUNER: config.pruner,
            records.SEARCH_SEED: config.seed,
        },
        records.TOOL_VERSION: VERSION,
        # last: a process that finds BUDGET recorded finds the whole record (open_study)
        records.BUDGET: config.budget,
    }
