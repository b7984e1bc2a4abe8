"""Owns the search: the loop that asks for trials until the study holds its target, stop rules
and resume. Its settings are `SearchConfig`; what a study records and a resume must match is
nas.search.study_setup; one trial is nas.search.objective; counts and waits nas.search.progress.

Claims:
- Feasibility first: a space whose smallest architecture is over the parameter or MAC budget is
  refused before any trial exists.
- Budgets (`nas.costs.budgets`): parameters always, MACs, latency and training memory when asked;
  `objective="pareto"` makes a two-objective study (validation accuracy up, `minimize` down)
  whose samplers see every budget as a constraint and which prunes nothing (Optuna cannot prune
  several objectives).
- `trials` counts trained candidates (`trial_view.TrialKind.trained`) over the whole study (every
  run, every worker); a run asks for no new trial once trained + running trials reach it.
- A study remembers its budgets, objective, space text, dataset, recipe and tool version;
  resuming with a different budget, objective, space, or any setting declared `kept` on
  `DataConfig`/`Recipe` is refused. Trials left RUNNING by a killed process are failed by
  `nas.search.reaper` (their heartbeats, `nas.store.steady`) and their parameters retried.
- With a `TimeBudget` (`nas.search.time_budget`, counted from the command's start) no new trial
  starts once the time left cannot hold a full trial at this run's slowest epoch plus the
  confirmation runs still to come and the closing the study last measured
  (`time_budget.reserve_closing`; `time_budget.stopped` set, said in one sentence); a trial or
  confirmation run still training when the time is out stops after its epoch (the trial is
  failed and its candidate enqueued for the next run, as after a stop request) and the run
  returns normally; a confirmation run that does not fit in the time left is skipped with one
  sentence. Its account is recorded on the study however the run ends (SIGTERM too).
- Before a single-objective search returns, every worker that reaches the end of its search
  runs the confirmation race (`nas.search.confirm.race`, at most `confirm` runs each; a trial
  is confirmed once study-wide), and the winner is recorded on the study (`records.WINNER`).
- `should_stop()` (e.g. set by SIGTERM) is checked after every epoch and before every new trial:
  the running trial is failed with `StopRequested` after its epoch. A trial interrupted that way
  or by Ctrl-C has its parameters enqueued, so the next run retries it first.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas import records, trial_view
from nas.arch.space import SearchSpace
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.costs.budgets import Budgets, check_feasible
from nas.data.batches import data_path_line
from nas.data.loading import Splits, class_count, load_splits
from nas.errors import StopRequested, UserError
from nas.search.confirm import confirm
from nas.search.objective import Objective
from nas.search.progress import (
    RejectionStreak,
    TrialOutcome,
    WaitWatch,
    outcome_of,
    sleep_unless_stopped,
    trial_counts,
)
from nas.search.reaper import TOLD_ELSEWHERE, StaleTrialReaper, TrialWatch
from nas.search.study_setup import open_study
from nas.search.time_budget import (
    Ending,
    TimeBudget,
    confirmation_reserve,
    format_duration,
    reserve_closing,
)
from nas.store.opening import check_url, open_storage
from nas.store.steady import unavailable_in
from nas.train.devices import resolve_device

BUDGET_KINDS = {  # what a time budget books a finished trial's time to
    trial_view.TrialKind.TRAINED: "trained",
    trial_view.TrialKind.STOPPED: "pruned",
    trial_view.TrialKind.REJECTED: "rejected",
    trial_view.TrialKind.DUPLICATE: "duplicate",
}


# ---- the loop ----------------------------------------------------------------------------


def prepare_study(
    config: SearchConfig,
    data: DataConfig,
    recipe: Recipe,
    machine: Machine,
    splits: Splits | None = None,
    announce: Callable[[str], None] | None = None,
) -> tuple[SearchSpace, optuna.Study, Splits, StaleTrialReaper]:
    """Check the space, device and data, then open (or create) the study and fail its stale
    trials: what a search does first, and what a parent of several workers does once. The data
    is loaded before the study is touched, so a missing dataset leaves the store as it was.
    Returns the reaper that goes on watching the study's store."""
    check_url(config.storage)
    space = SearchSpace.resolve(config.space)
    # the parameter budget, refused before the data loads (a folder's classes are counted from
    # its folders, one where it is missing); MACs at the data's image size follow the loading
    check_feasible(space, config.budget, class_count(data) or 1, None, 0)
    resolve_device(machine.device)  # refuse an unusable device before anything is stored
    if Budgets.of(config).latency_measured:  # the same for the latency device
        try:
            resolve_device(config.latency_device)
        except UserError as error:
            raise UserError(f"--latency-device: {error}") from None
    splits = splits or load_splits(data)
    size = splits.image_shape[-1]
    data = dataclasses.replace(data, image_size=size)  # the study records the size it trains at
    check_feasible(space, config.budget, splits.num_classes, config.max_macs, size)
    # an outage is said among the progress lines (`announce`), not across a bar
    storage = open_storage(
        config.storage, heartbeat=config.heartbeat, outage=config.store_wait, say=announce
    )
    study = open_study(
        config, space, data, recipe, announce,
        num_classes=splits.num_classes, image_size=size, storage=storage,
    )  # fmt: skip
    reap = StaleTrialReaper(config.grace, storage)
    reap(study)  # a trial whose worker died while another reached the target must not stay RUNNING
    return space, study, splits, reap


def run_search(
    config: SearchConfig,
    data: DataConfig,
    recipe: Recipe,
    machine: Machine,
    *,
    on_trial: Callable[[TrialOutcome, int], None] | None = None,
    on_wait: Callable[[int], None] | None = None,
    splits: Splits | None = None,
    should_stop: Callable[[], bool] | None = None,
    announce: Callable[[str], None] | None = None,
    memory_meter: Callable[..., Any] | None = None,
    time_budget: TimeBudget | None = None,
) -> optuna.Study:
    """Run (or resume) the study until it holds `config.trials` trained candidates, or until
    `time_budget` refuses a new trial (`time_budget.stopped` then says so). `memory_meter`
    replaces `nas.costs.memory.training_memory` in the gate (`costs.budgets`). With
    `should_stop`, raises `StopRequested` at the next safe point once it returns True: after the
    running trial's epoch (that trial is failed and its parameters enqueued for the
    next run) or before asking for a new trial.
    """
    stop = should_stop or (lambda: False)
    end = ending(config, recipe, stop, time_budget, announce)
    space, study, splits, reap = prepare_study(config, data, recipe, machine, splits, announce)
    reserve_closing(end.time_budget, study)  # the command's report and summary follow the loop
    if trial_counts(study)[0] >= config.trials:
        return finish_run(study, config, splits, recipe, machine, end)
    if announce is not None:  # where the data goes on this device, and why (its free memory)
        announce(data_path_line(splits.train, recipe, machine, resolve_device(machine.device)))
    objective = Objective(
        space, splits, recipe, machine, Budgets.of(config),
        pareto_cost=config.minimize if config.pareto else None, target=config.trials,
        should_stop=end.halt, memory_meter=memory_meter,
    )  # fmt: skip
    streak = RejectionStreak(config, recipe.batch_size)
    waiting = WaitWatch(config.max_wait)
    while True:
        reap(study)
        move, running = next_move(study, config, stop, end.time_budget, recipe.epochs)
        if move == FINISH:
            return finish_run(study, config, splits, recipe, machine, end)
        if move == WAIT:
            waiting.check(study)  # a UserError once other workers' trials stop progressing
            if on_wait is not None:
                on_wait(running)
            sleep_unless_stopped(config.poll, stop)  # another worker's trial may finish it
            continue
        waiting.reset()
        trial = train_one(study, objective, end)
        if trial is None:  # the time ran out while it trained
            return finish_run(study, config, splits, recipe, machine, end)
        if trial is LOST:  # another process failed it meanwhile: said once, not counted
            continue
        if trial_view.is_trained(trial):
            gc.collect()  # a trained model's tensors; ~0.6 s, so not after every rejection
        streak.record(trial)
        if on_trial is not None:
            on_trial(outcome_of(trial), trial_counts(study)[0])
        streak.check()


def ending(config, recipe, stop, time_budget: TimeBudget | None, announce) -> Ending:
    """What ends this run besides its target; without a budget from the caller, one from
    `config.time_limit` starting now."""
    if time_budget is None and config.time_limit is not None:
        time_budget = TimeBudget(config.time_limit)  # from now: each run has its own limit
    if time_budget is not None:
        time_budget.epochs = recipe.epochs  # the next trial is priced as a full one
    return Ending(stop, time_budget, announce)


FINISH, WAIT, TRAIN = "finish", "wait", "train"  # what the search loop does next
LOST = "lost"  # train_one: another process failed the trial while it trained here


def next_move(
    study: optuna.Study,
    config: SearchConfig,
    stop: Callable[[], bool],
    time_budget: TimeBudget | None,
    epochs: int,
) -> tuple[str, int]:
    """What the loop does next, with the study's running trials: FINISH once the study holds
    its target or the time budget cannot hold one more trial (and the confirmations still to
    come), WAIT while other workers' trials may reach the target, else TRAIN. Raises
    `StopRequested` once `stop()` says so."""
    trained, running = trial_counts(study)
    if trained >= config.trials:
        return FINISH, running
    if stop():
        raise StopRequested()
    if time_budget is not None and not time_budget.allows_trial(
        confirmation_reserve(config, time_budget, epochs)
    ):
        return FINISH, running  # also while waiting: no time is left to wait in
    if trained + running >= config.trials:
        return WAIT, running
    return TRAIN, running


def train_one(study: optuna.Study, objective: Objective, end: Ending) -> FrozenTrial | str | None:
    """Ask for one trial and run it; book its time to the time budget. A trial interrupted by a
    stop request, Ctrl-C or the time limit has its candidate enqueued (the next run, any worker,
    retries it first); the interruption goes on, but for the time limit: None then. A trial
    another process failed while it trained here (`reaper.TrialWatch`) is LOST, said in one
    line (the reaper that failed it queued its candidate again)."""
    finished: list[FrozenTrial] = []  # filled by Optuna's callback after the trial
    budget = end.time_budget
    started = budget.clock() if budget is not None else 0.0
    watch = TrialWatch(objective)
    try:
        study.optimize(
            watch,
            n_trials=1,
            gc_after_trial=False,  # the loop collects after trained trials only
            callbacks=[lambda _study, trial: finished.append(trial)],
        )
    except (StopRequested, KeyboardInterrupt) as interruption:
        # Optuna has marked the interrupted trial FAIL; the next run retries its candidate
        if objective.training is not None:
            number, params = objective.training
            study.enqueue_trial(params, user_attrs={records.RETRY_OF: number})
        if not isinstance(interruption, StopRequested) or end.stop() or not end.out_of_time():
            raise
        budget.record("other", budget.clock() - started)
        budget.cut = True  # the limit ended this run: its record must not say "within"
        end.say("the time ran out while a trial trained; it stopped after its epoch and the "
                "next run retries it")  # fmt: skip
        return None
    except Exception as error:
        gone = unavailable_in(error)  # under Optuna's own error when it could not record the trial
        if gone is not None:
            raise gone from None
        lost = watch.lost(study) if isinstance(error, TOLD_ELSEWHERE) else None
        if lost is None:
            raise
        end.announce(lost)
        return LOST
    trial = finished[-1]
    if budget is not None:
        budget.record(
            BUDGET_KINDS.get(trial_view.classify(trial), "other"),
            budget.clock() - started,
            trial.user_attrs.get(records.EPOCHS, 0),
        )
    return trial


def finish_run(
    study: optuna.Study,
    config: SearchConfig,
    splits: Splits,
    recipe: Recipe,
    machine: Machine,
    end: Ending,
) -> optuna.Study:
    """What every run does last: confirm the winner, then record how the time went (however
    the confirmation ends: a SIGTERM during it too)."""
    budget = end.time_budget
    if budget is not None and budget.stopped:
        left = format_duration(budget.left())
        pace = budget.per_trial()
        end.say(f"no further trial fits in the {left} left" + (
            f" (a full trial takes about {format_duration(pace)})" if pace is not None else ""
        ))  # fmt: skip
    try:
        if not config.pareto:  # a Pareto study names a front, not one best: nothing to confirm
            confirm(study, config.confirm, splits, recipe, machine, end)
    finally:
        if budget is not None:
            study.set_user_attr(budget.record_key(), budget.to_record())
    return study
