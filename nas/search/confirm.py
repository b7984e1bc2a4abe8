"""Owns the confirmation of a search's winner: before a search names its best candidate, its top
candidates are trained again with another seed and ranked by the mean of both runs, so the
winner is a good architecture rather than one lucky training run.

Claims:
- `confirm_top` trains each of the top `n` candidates (`nas.search.winner.candidates`) not yet
  confirmed once more, all epochs, with the recipe's seed + `SEED_OFFSET`, and records the
  result on the study under `records.confirm_key(trial number)` (a `records.Confirmation`): the
  seed, that run's best validation accuracy, the mean with the trial's own, its epochs and
  seconds. A finished trial is immutable in Optuna, so the record is a study user attribute
  (optuna-dashboard shows them with the study), as a retrain's is. A candidate already
  confirmed is not trained again (a resume, another worker).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import optuna
from optuna.trial import FrozenTrial

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.loading import Splits
from nas.errors import StopRequested
from nas.search.winner import unconfirmed
from nas.train.fit import NonFiniteLossError, fit, set_seed
from nas.train.model import build_model
from nas.train.state import EpochRow

SEED_OFFSET = 1  # a confirmation run trains with the recipe's seed + this


def confirm_top(
    study: optuna.Study,
    splits: Splits,
    recipe: Recipe,
    machine: Machine,
    n: int,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_run: Callable[[int, records.Confirmation], None] | None = None,
) -> list[int]:
    """Train the top `n` candidates not yet confirmed once more with another seed; record
    each (see the module's claims). Returns the trial numbers confirmed now."""
    confirmed = []
    for trial in unconfirmed(study, n):
        record = confirm_one(trial, splits, recipe, machine, should_stop)
        study.set_user_attr(records.confirm_key(trial.number), record.to_dict())
        confirmed.append(trial.number)
        if on_run is not None:
            on_run(trial.number, record)
    return confirmed


def confirm_one(
    trial: FrozenTrial,
    splits: Splits,
    recipe: Recipe,
    machine: Machine,
    should_stop: Callable[[], bool] | None = None,
) -> records.Confirmation:
    """One more training run of `trial`'s architecture with the recipe's seed + SEED_OFFSET."""
    seed = recipe.seed + SEED_OFFSET
    arch = Architecture.from_json(trial.user_attrs[records.ARCHITECTURE])

    def stop_between_epochs(row: EpochRow) -> bool:
        if should_stop is not None and should_stop():
            raise StopRequested(row.epoch)  # nothing recorded: the next run confirms it
        return False

    started = time.monotonic()
    set_seed(seed)  # as the objective seeds a trial's model
    try:
        result = fit(
            build_model(arch),
            splits,
            replace(recipe, seed=seed),
            machine,
            callback=stop_between_epochs,
            progress=False,
        )
        accuracy, epochs = result.best_val_accuracy, len(result.history)
        note = ""
    except NonFiniteLossError as error:  # that seed diverged: the architecture is not robust
        accuracy, epochs, note = 0.0, recipe.epochs, f"non-finite loss: {error}"
    first = trial_view.accuracy(trial)
    return records.Confirmation(
        seed=seed,
        val_accuracy=accuracy,
        first_val_accuracy=first,
        mean_val_accuracy=statistics.fmean([first, accuracy]),
        epochs=epochs,
        seconds=time.monotonic() - started,
        note=note,
    )
