"""Owns the confirmation runs of a search's candidates: the race the winner rule
(`nas.search.winner`) asks for, run once per trial study-wide, so the winner is a good
architecture rather than one lucky training run.

Claims:
- `race` trains, one at a time, the candidate `nas.search.winner.next_to_confirm` names once
  more, all epochs, with the recipe's seed + `SEED_OFFSET`, until the race is settled, `allowed`
  runs are spent, or `fits(trial)` says the next run does not fit (the time limit). Each result
  is recorded on the study under `records.confirm_key(trial number)` (a `records.Confirmation`:
  the seed, that run's best validation accuracy, the mean with the trial's own, its epochs and
  seconds); a finished trial is immutable in Optuna, so the record is a study user attribute
  (optuna-dashboard shows them with the study), as a retrain's is. A run whose loss turned
  non-finite records 0.0 with its reason. The winner and its evidence are recorded after every
  run (`records.WINNER`).
- Once per trial, study-wide: before training, a process claims the trial in the store (a
  RUNNING trial carrying `records.CONFIRMS`, `claim`); of the live claims on one trial the
  lowest-numbered holds it, so two workers or machines never train the same confirmation; the
  others end their race (the holder goes on with it). A claim is finished (FAIL: it holds no
  candidate) when its run is recorded or stopped; a claim of a process that died is failed by
  `nas.search.reaper.StaleTrialReaper` (at once on its machine, on any other once its
  heartbeat is older than the grace period), not queued again, and the trial may be claimed
  again.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.loading import Splits
from nas.errors import StopRequested
from nas.search.reaper import worker_record
from nas.search.time_budget import Ending, format_duration
from nas.search.winner import confirmations, next_to_confirm, winner_record
from nas.train.fit import NonFiniteLossError, fit, set_seed
from nas.train.model import build_model
from nas.train.state import EpochRow

SEED_OFFSET = 1  # a confirmation run trains with the recipe's seed + this


def race(
    study: optuna.Study,
    splits: Splits,
    recipe: Recipe,
    machine: Machine,
    allowed: int,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_run: Callable[[int, records.Confirmation], None] | None = None,
    fits: Callable[[FrozenTrial], bool] | None = None,
) -> list[int]:
    """Confirm candidates in the race's order (see the module's claims). Returns the trial
    numbers this call confirmed."""
    confirmed: list[int] = []
    while len(confirmed) < allowed:
        trial = next_to_confirm(study)
        if trial is None or (fits is not None and not fits(trial)):
            break
        claimed = claim(study, trial.number)
        if claimed is None:
            break  # another process confirms it and goes on with the race
        try:
            if trial.number in confirmations(study):
                continue  # recorded by a holder that finished before this claim
            record = confirm_one(trial, splits, recipe, machine, should_stop)
            study.set_user_attr(records.confirm_key(trial.number), record.to_dict())
            confirmed.append(trial.number)
        finally:
            release(study, claimed)
        study.set_user_attr(records.WINNER, winner_record(study))
        if on_run is not None:
            on_run(trial.number, record)
    return confirmed


def confirm(
    study: optuna.Study,
    allowed: int,
    splits: Splits,
    recipe: Recipe,
    machine: Machine,
    end: Ending,
) -> None:
    """Run the confirmation race (`nas.search.confirm`) before the search names its best, and
    record the winner: at most `allowed` runs, each only while it fits in the time left."""
    budget = end.time_budget
    clock = budget.clock if budget is not None else time.monotonic
    started = clock()

    def fits(trial: FrozenTrial) -> bool:
        pace = budget.per_epoch() if budget is not None else None
        needed = recipe.epochs * pace if pace is not None else 0.0
        if budget is None or (budget.fits(needed) and not budget.expired()):
            return True
        left = format_duration(budget.left())
        end.say(f"the confirmation run of trial {trial.number} (about "
                f"{format_duration(needed)}) does not fit in the {left} left; skipped (rerun "
                "the search to confirm it)")  # fmt: skip
        return False

    def booked(_number: int, record: records.Confirmation) -> None:
        nonlocal started
        if budget is not None:
            budget.record("confirmation", clock() - started, record.epochs)
        started = clock()

    try:
        race(study, splits, recipe, machine, allowed, should_stop=end.halt,
             on_run=booked, fits=fits)  # fmt: skip
    except StopRequested:
        if end.stop() or not end.out_of_time():
            raise
        end.say("the time ran out during a confirmation run; it stopped after its epoch, "
                "unrecorded (rerun the search to confirm it)")  # fmt: skip
    finally:
        record = winner_record(study)
        if record is not None:
            study.set_user_attr(records.WINNER, record)


def claim(study: optuna.Study, number: int) -> int | None:
    """Claim trial `number`'s confirmation in the store; the claim's trial number, or None when
    an earlier live claim holds it. Trial numbers are handed out in the order trials are
    created, so a claim sees every claim made before it: of two claims on one trial, only the
    later one can miss the other, and it is the one that loses."""
    token = uuid.uuid4().hex
    attrs = {records.CONFIRMS: number, records.CLAIM_TOKEN: token, records.WORKER: worker_record()}
    study.add_trial(create_trial(state=TrialState.RUNNING, user_attrs=attrs))
    claims = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if trial_view.classify(t) == trial_view.TrialKind.CONFIRMATION
        and t.user_attrs.get(records.CONFIRMS) == number
    ]
    mine = next(t.number for t in claims if t.user_attrs.get(records.CLAIM_TOKEN) == token)
    if min(t.number for t in claims) == mine:
        return mine
    release(study, mine)
    return None


def release(study: optuna.Study, claimed: int) -> None:
    """Finish a claim: FAIL, so that no sampler reads it as a trial."""
    try:
        study.tell(claimed, state=TrialState.FAIL)
    except (ValueError, RuntimeError):  # failed meanwhile by a reaper
        pass


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
