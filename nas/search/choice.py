"""Owns choosing from a study: opening a named study (`load_study`, for `nas retrain` and
`nas report`) and picking the trial a retrain takes (`choose_from_study`: a trial by number, or
the one a `nas.search.front.Pick` names), with the data and recipe settings the study recorded.

Claims:
- A retrain of a study inherits the study's data and the recipe settings a resume keeps
  (`nas.config.fields.kept`), never its devices or speed switches.
- `--pick best` in a single-objective study takes the winner the search names
  (`nas.search.winner`: the best mean over each candidate's runs, trained to the end), not the
  luckiest single run; in a Pareto study, the most accurate trial of its front.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.config.costs import format_cost
from nas.config.fields import kept_names
from nas.config.recipe import Recipe
from nas.errors import UserError
from nas.search.front import Pick, pick_trial
from nas.search.winner import candidates


@dataclass(frozen=True)
class StudyChoice:
    """An architecture picked from a study, with the settings the study recorded."""

    arch: Architecture
    trial: FrozenTrial
    data: dict[str, Any]  # the study's DataConfig as a dict
    recipe: dict[str, Any]  # the study's kept Recipe settings
    why: str = ""  # how it was picked, in words


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """An existing study, or a UserError naming the studies the store holds."""
    names = optuna.get_all_study_names(storage)
    if name not in names:
        known = f"the store holds: {', '.join(sorted(names))}" if names else "the store is empty"
        raise UserError(f"there is no study named {name!r}; {known}")
    return optuna.load_study(study_name=name, storage=storage)


def choose_from_study(
    study: optuna.Study, trial_number: int | None = None, pick: Pick | None = None
) -> StudyChoice:
    """Trial `trial_number`, or the trained trial `pick` names (`nas.search.front`: the most
    accurate, or the cheapest within some points of it), with the study's recorded settings."""
    if trial_number is not None:
        trial, why = _numbered_trial(study, trial_number), f"trial {trial_number}, as asked"
    else:
        trial, why = _picked_trial(study, pick or Pick())
    try:
        arch = Architecture.from_json(trial.user_attrs[records.ARCHITECTURE])
    except (KeyError, ValueError, TypeError):
        raise UserError(f"trial {trial.number} holds no readable architecture") from None
    study_recipe = study.user_attrs.get(records.RECIPE, {})
    return StudyChoice(
        arch=arch,
        trial=trial,
        data=dict(study.user_attrs.get(records.DATASET, {})),
        recipe={k: study_recipe[k] for k in kept_names(Recipe) if k in study_recipe},
        why=why,
    )


def _numbered_trial(study: optuna.Study, number: int) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    matches = [t for t in trials if t.number == number]
    if not matches:
        raise UserError(
            f"study {study.study_name!r} has no trial {number}; "
            f"its trials are numbered 0 to {len(trials) - 1}"
        )
    if records.ARCHITECTURE not in matches[0].user_attrs:
        raise UserError(f"trial {number} recorded no architecture; pick another --trial")
    return matches[0]


def _picked_trial(study: optuna.Study, pick: Pick) -> tuple[FrozenTrial, str]:
    """The trial `pick` names and why, in words: `the cheapest trial within 1 point of the most
    accurate: val accuracy 93.10%, 1,234 params`."""
    # a pruner-stopped trial ranks on fewer epochs, so only trials trained to the end
    cost = trial_view.objective_of(study.user_attrs)[1]
    trials = study.get_trials(deepcopy=False)
    if pick.how == "best" and trial_view.objective_of(study.user_attrs)[0] != "pareto":
        # the one definition of the winner (nas.search.winner): what the summary names
        ranked = candidates(study, trials)
        if ranked:
            best = ranked[0]
            runs = f"the mean of {len(best.runs)} runs" if best.confirmed else "one run"
            return best.trial, f"the search's winner: val accuracy {best.score:.2%} ({runs})"
    trial = pick_trial(trials, cost, pick)
    if trial is None:
        raise UserError(
            f"study {study.study_name!r} has no trial trained to the end yet; "
            "run the search (nas search) until one completes"
        )
    value = trial_view.cost_of(trial, cost)
    spent = f", {format_cost(cost, value)}" if value is not None else ""
    return trial, f"{pick.describe()}: val accuracy {trial_view.accuracy(trial):.2%}{spent}"
