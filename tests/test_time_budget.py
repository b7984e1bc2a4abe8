"""nas.search.time_budget: reading --time-limit, the stop rule at its boundary with a fake clock,
and a
real search (tiny space, synthetic data, SQLite) stopped by a budget whose clock counts epochs."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import os
import subprocess
import sys
import time

import optuna
import pytest

from nas import records, trial_view
from nas.config.data import DataConfig
from nas.config.search import SearchConfig
from nas.errors import UserError
from nas.process import command_start_from, skip_final_collection
from nas.search.loop import run_search
from nas.search.time_budget import (
    TimeBudget,
    account_line,
    format_duration,
    may_start,
    may_start_workers,
    parse_duration,
    record_closing,
    recorded_closing,
    run_lines,
    workers_refusal,
)
from nas.search.winner import confirmation_epochs, confirmations


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8h", 28_800.0),
        ("90m", 5_400.0),
        ("3600s", 3_600.0),
        ("3600", 3_600.0),
        ("1.5h", 5_400.0),
        ("0.5", 0.5),
        ("1s", 1.0),
    ],  # fmt: skip
)
def test_durations_read_as_seconds(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0", "0s", "8x", "", "h", "-5m", "1e3"])
def test_a_bad_duration_is_one_sentence(text):
    with pytest.raises(UserError) as raised:
        parse_duration(text)
    message = str(raised.value)
    assert message.startswith("--time-limit must be")
    assert "\n" not in message


def test_the_stop_rule_at_its_boundary():
    # 100 s limit, 10 s a trial: at 90 s elapsed one more fits exactly, a hair later it does not
    assert may_start(90.0, 100.0, 10.0)
    assert not may_start(90.5, 100.0, 10.0)
    # a reserve for confirmation runs moves the boundary by its size
    assert may_start(70.0, 100.0, 10.0, reserve=20.0)
    assert not may_start(70.5, 100.0, 10.0, reserve=20.0)
    # before any trial trained the pace is unknown: any time left starts one
    assert may_start(99.0, 100.0, None)
    assert not may_start(100.0, 100.0, None)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_the_next_trial_is_priced_as_a_full_trial_at_the_slowest_epoch():
    clock = FakeClock()
    budget = TimeBudget(limit=60.0, clock=clock, epochs=4)
    assert budget.allows_trial()  # nothing measured yet
    clock.now += 2.0
    budget.record("rejected", 2.0)  # a rejection's time is spent but sets no pace
    assert budget.per_trial() is None
    clock.now += 20.0
    budget.record("trained", 20.0, epochs=4)  # 5 s an epoch
    clock.now += 12.0
    budget.record("pruned", 12.0, epochs=2)  # 6 s an epoch: the slowest
    # 4 epochs at 6 s: 24 s (the mean of the two trials, 16 s, would let a full one overrun)
    assert budget.per_trial() == 24.0
    assert budget.per_epoch() == 6.0
    clock.now = 1_000.0 + 36.0  # 24 s left: exactly one full trial
    assert budget.allows_trial() and not budget.stopped
    clock.now += 0.5
    assert not budget.allows_trial()
    assert budget.stopped
    account = budget.account(lambda s: f"{s:g}s")
    assert account == (
        "time limit 60s: 36.5s used: trained 1 (20s), stopped by the pruner 1 (12s), "
        "rejected 1 (2s)"
    )


def test_the_time_before_the_budget_was_made_counts():
    # a worker started 7 s after its command: its 10 s limit has 3 s left
    clock = FakeClock()
    budget = TimeBudget(limit=10.0, clock=clock, offset=7.0)
    assert budget.elapsed() == 7.0
    assert budget.fits(3.0) and not budget.fits(3.5)
    assert not budget.expired()
    clock.now += 3.0
    assert not budget.expired()  # a trial that fitted exactly ends at the limit, not cut
    clock.now += 0.5
    assert budget.expired()
    assert budget.to_record()["used"] == 10.5


TINY_SPACE = """\
name: tinytime
stem: 4
layers: [1, 2]
channels: [4, 8]
blocks: [1, 1]
conv_kernel: [1, 3]
skip_kernel: [1]
kernels: shared
"""


def epoch_clock(storage: str, study_name: str, seconds_an_epoch: float = 1.0):
    """A clock that reads the study's training epochs (trained trials and confirmation runs)
    and counts `seconds_an_epoch` for each."""

    def clock() -> float:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            return 0.0
        trials = study.get_trials(deepcopy=False)
        spent = sum(t.user_attrs.get(records.EPOCHS, 0) for t in trials if trial_view.is_trained(t))
        # the epochs of a trial still training (or cut) count as they end
        spent += sum(len(t.intermediate_values) for t in trials if not trial_view.is_trained(t))
        return seconds_an_epoch * (spent + confirmation_epochs(study))

    return clock


@pytest.mark.parametrize("confirm, trained, confirmed", [(0, 3, 0), (1, 2, 1)])
def test_a_search_starts_no_trial_the_budget_cannot_hold(tmp_path, confirm, trained, confirmed):
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe

    config, storage = tiny_search(tmp_path, confirm)
    recipe = Recipe(epochs=2, batch_size=16, augment="none", flip=False)
    # 1.5 s an epoch (not 1, so seconds are not epochs), 10.5 s: room for 7 epochs; a trial
    # takes 2. Without confirmation: trials start at epochs 0, 2, 4 (3 left >= 2) and not at 6.
    # With one confirmation run (2 epochs) reserved: at 0, 2 (5 left >= 2 + 2), not at 4 (3
    # left); then the confirmation run.
    budget = TimeBudget(limit=10.5, clock=epoch_clock(storage, "t", seconds_an_epoch=1.5))
    study = run_search(
        config,
        DataConfig(dataset="synthetic", subset=48),
        recipe,
        Machine(device="cpu"),
        time_budget=budget,
    )
    assert budget.stopped
    assert sum(trial_view.is_trained(t) for t in study.get_trials()) == trained
    assert budget.counts["trained"] == trained
    assert len(confirmations(study)) == confirmed
    assert budget.counts["confirmation"] == confirmed
    assert budget.elapsed() == 1.5 * 2 * (trained + confirmed)  # 2 epochs a trial and a run
    # each is booked at its own duration: 2 epochs of 1.5 s
    assert budget.spent["trained"] == 3.0 * trained
    assert budget.spent["confirmation"] == 3.0 * confirmed


def tiny_search(tmp_path, confirm: int, trials: int = 50):
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = SearchConfig(
        budget=100_000, trials=trials, space=str(space), study="t", storage=storage,
        sampler="random", pruner="none", warm_start=False, confirm=confirm,
    )  # fmt: skip
    return config, storage


def test_a_trial_still_training_when_the_time_is_out_stops_after_its_epoch(tmp_path):
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe

    config, storage = tiny_search(tmp_path, confirm=1)
    # 4 epochs a trial, 2.5 "seconds" (epochs) allowed: the first trial starts (no pace yet) and
    # is cut after epoch 3, the first epoch ending past the limit; nothing is left to confirm
    budget = TimeBudget(limit=2.5, clock=epoch_clock(storage, "t"))
    said = []
    study = run_search(
        config, DataConfig(dataset="synthetic", subset=48),
        Recipe(epochs=4, batch_size=16, augment="none", flip=False), Machine(device="cpu"),
        time_budget=budget, announce=said.append,
    )  # fmt: skip
    cut, retry = study.get_trials()
    assert cut.state == optuna.trial.TrialState.FAIL
    assert cut.user_attrs[records.STOPPED_AFTER_EPOCH] == 3 and len(cut.intermediate_values) == 3
    assert retry.state == optuna.trial.TrialState.WAITING  # the next run trains it first
    assert retry.user_attrs[records.RETRY_OF] == 0
    assert budget.elapsed() == 3.0  # within one epoch of the limit
    assert [line for line in said if line.startswith("time limit: ")] == [
        "time limit: the time ran out while a trial trained; it stopped after its epoch and "
        "the next run retries it"
    ]
    (run,) = [v for k, v in study.user_attrs.items() if k.startswith(records.TIME_BUDGET_PREFIX)]
    assert run["counts"]["other"] == 1 and run["used"] == 3.0
    assert run["stopped_by_limit"] is True  # its line says the limit stopped it, not "within"


def test_a_confirmation_that_does_not_fit_is_skipped_with_one_sentence(tmp_path):
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe

    config, storage = tiny_search(tmp_path, confirm=1, trials=1)
    # one trial of 2 epochs ends the search at 2 of 3 epochs; its confirmation needs 2: skipped
    # (at 3 s an epoch: the run is priced at its epochs times the pace, 6 s, with 3 s left)
    budget = TimeBudget(limit=9.0, clock=epoch_clock(storage, "t", seconds_an_epoch=3.0))
    said = []
    study = run_search(
        config, DataConfig(dataset="synthetic", subset=48),
        Recipe(epochs=2, batch_size=16, augment="none", flip=False), Machine(device="cpu"),
        time_budget=budget, announce=said.append,
    )  # fmt: skip
    assert confirmations(study) == {}
    assert [line for line in said if line.startswith("time limit: ")] == [
        "time limit: the confirmation run of trial 0 (about 6 s) does not fit in the 3 s left; "
        "skipped (rerun the search to confirm it)"
    ]
    assert study.user_attrs[records.WINNER] == {
        "trial": 0, "score": study.trials[0].value, "runs": [study.trials[0].value],
        "settled": False,
    }  # fmt: skip


def test_a_sigterm_during_the_confirmation_still_writes_the_time_record(tmp_path):
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe
    from nas.errors import StopRequested

    config, storage = tiny_search(tmp_path, confirm=1, trials=1)

    def sigterm_once_confirming() -> bool:  # as the SIGTERM flag reads once the signal came
        study = optuna.load_study(study_name="t", storage=storage)
        return any(records.CONFIRMS in t.user_attrs for t in study.get_trials(deepcopy=False))

    budget = TimeBudget(limit=3600.0)
    with pytest.raises(StopRequested) as stopped:
        run_search(
            config, DataConfig(dataset="synthetic", subset=48),
            Recipe(epochs=2, batch_size=16, augment="none", flip=False), Machine(device="cpu"),
            time_budget=budget, should_stop=sigterm_once_confirming,
        )  # fmt: skip
    assert stopped.value.epoch == 1  # the stop is said with the confirmation's last epoch
    study = optuna.load_study(study_name="t", storage=storage)
    (run,) = [v for k, v in study.user_attrs.items() if k.startswith(records.TIME_BUDGET_PREFIX)]
    assert run["counts"]["trained"] == 1 and run["counts"]["confirmation"] == 0
    assert confirmations(study) == {}  # stopped unrecorded: the next run confirms it
    (claimed,) = [t for t in study.get_trials() if records.CONFIRMS in t.user_attrs]
    assert claimed.state == optuna.trial.TrialState.FAIL  # released: it may be claimed again


# ---- nas search --time-limit, in this process -----------------------------------------------


@pytest.mark.slow  # a real 20 s run; the rule is proven fast by the stop-rule tests above
def test_a_smoke_search_with_a_time_limit_stops_starting_trials_and_says_why(tmp_path, monkeypatch):
    from nas.cli.main import search_main

    from helpers import run_in_process

    monkeypatch.chdir(tmp_path)
    started = datetime.datetime.now(datetime.UTC)
    # a target it cannot reach in 20 s: only the time limit can end this search
    argv = ["--smoke", "--time-limit", "20s", "--trials", "1000", "--subset", "48"]
    status, out, err = run_in_process(search_main, argv)
    assert status == 0, err
    study = optuna.load_study(study_name="smoke", storage="sqlite:///studies/nas.db")
    trials = study.get_trials()
    assert 1 <= sum(trial_view.is_trained(t) for t in trials) < 1000
    # the rule refuses a trial the time left cannot hold: every trial started within the limit,
    # counted from the moment the run's budget started (recorded with the run)
    (run,) = [v for k, v in study.user_attrs.items() if k.startswith(records.TIME_BUDGET_PREFIX)]
    assert list(run) == ["started", "limit", "used", "stopped_by_limit", "spent", "counts"]
    budget_started = datetime.datetime.fromisoformat(run["started"])
    assert started <= budget_started and run["limit"] == 20.0 and run["stopped_by_limit"]
    limit = budget_started + datetime.timedelta(seconds=20)
    assert all(t.datetime_start.astimezone(datetime.UTC) < limit for t in trials)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    (line,) = [line for line in out.splitlines() if line.startswith("run of ")]
    assert "stopped by the time limit: no further trial fitted in the time left" in line
    assert "time limit 20 s: " in line and " trained " in line


@pytest.mark.parametrize("value", ["0", "8x"])
def test_a_bad_time_limit_is_one_sentence_and_exit_2(tmp_path, monkeypatch, value):
    from nas.cli.main import search_main

    from helpers import run_in_process

    monkeypatch.chdir(tmp_path)
    status, out, err = run_in_process(search_main, ["--smoke", "--time-limit", value])
    assert status == 2
    assert err.startswith("error: --time-limit must be") and err.count("\n") == 1
    assert not (tmp_path / "studies").exists()  # refused before anything was stored


# ---- the whole command: its start, its closing, the workers' start-up ----------------------


def test_a_process_start_is_its_age_before_now():
    # field 2, the command's name, holds a space and ')': the fields are counted after the last
    # ')'. Field 22 (12345 ticks at 100 a second) is the process's start, 123.45 s after boot;
    # 200 s after boot it is 76.55 s old: at now=1000 it started at 923.45
    after_name = ["S"] + ["7"] * 18 + ["12345"] + ["9"] * 30  # fields 3..52
    stat = "4242 (nas (x) y) " + " ".join(after_name)
    started = command_start_from(stat, "200.00 390.12\n", 100, now=1_000.0)
    assert started == pytest.approx(923.45)


def test_this_process_start_is_read_back_from_proc():
    from helpers import fresh_python

    before = time.time()
    code = "import time; from nas.process import command_start; "
    code += "print(command_start(), time.time())"
    started, now = map(float, fresh_python(code).split())
    # /proc counts in clock ticks (10 ms): the start lies between the launch and the reading
    assert before - 0.05 <= started <= now


def test_the_closing_is_held_back_from_the_limit():
    clock = FakeClock()
    budget = TimeBudget(limit=10.0, clock=clock, epochs=1, closing=2.0)
    clock.now += 7.0
    assert budget.left() == 1.0
    assert budget.fits(1.0) and not budget.fits(1.5) and not budget.expired()
    budget.record("trained", 1.0, epochs=1)  # 1 s a full trial
    assert budget.allows_trial()  # 1 s left before the closing: exactly one more
    clock.now += 0.5
    assert not budget.allows_trial() and budget.stopped
    clock.now += 0.5
    assert not budget.expired()  # 8 of 10 s: ending at the closing is within it
    clock.now += 0.5
    assert budget.expired()  # a running trial stops after this epoch
    assert budget.to_record()["limit"] == 10.0 and budget.to_record()["used"] == 8.5


def test_workers_start_only_while_their_start_up_and_the_closing_fit():
    # 10 s limit, the command's own start-up took 4.75 s, the closing 0.5 s: 5.25 s left holds
    # another 4.75 + 0.5 exactly; a hundredth later it does not
    assert may_start_workers(4.75, 10.0, 4.75, 0.5)
    assert workers_refusal(4.75, 10.0, 0.5) is None
    assert not may_start_workers(4.76, 10.0, 4.76, 0.5)
    assert workers_refusal(6.0, 10.0, 0.5) == (
        "time limit: the 4 s left cannot hold the workers' start-up (about 6 s, as this "
        "command's took) and the closing report; no worker started"
    )


def test_the_study_keeps_its_closing_and_the_next_run_reserves_it(tmp_path):
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe

    config, storage = tiny_search(tmp_path, confirm=0, trials=1)
    recipe = Recipe(epochs=2, batch_size=16, augment="none", flip=False)
    data = DataConfig(dataset="synthetic", subset=48)
    study = run_search(config, data, recipe, Machine(device="cpu"))  # one trial, no budget
    assert recorded_closing(study.user_attrs) == 0.0  # none measured yet
    record_closing(study, 3.0)  # in this test's clock: epochs
    assert recorded_closing(study.user_attrs) == 3.0
    # 7 epochs allowed, 3 held back for the closing: trials start at 0 and 2 (2 left >= 2), not
    # at 4; without the closing a third would start at 4 (as in the test above)
    budget = TimeBudget(limit=7.0, clock=epoch_clock(storage, "t"))
    study = run_search(
        dataclasses.replace(config, trials=50), data, recipe, Machine(device="cpu"),
        time_budget=budget,
    )  # fmt: skip
    assert budget.closing == 3.0 and budget.stopped
    assert budget.counts["trained"] == 2
    assert sum(trial_view.is_trained(t) for t in study.get_trials()) == 1 + 2


def test_workers_that_cannot_start_in_the_time_left_are_skipped_in_one_sentence(tmp_path):
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe
    from nas.search.workers import run_workers

    config, storage = tiny_search(tmp_path, confirm=0)
    config = dataclasses.replace(config, time_limit=50.0)
    said = []
    result = run_workers(
        config, DataConfig(dataset="synthetic", subset=48),
        Recipe(epochs=2, batch_size=16, augment="none", flip=False), Machine(device="cpu"),
        ["cpu", "cpu"], announce=said.append, started=time.time() - 100.0,  # 100 s ago
    )  # fmt: skip
    assert result.status == 0
    (line,) = [line for line in said if line.startswith("time limit: ")]
    assert line.startswith("time limit: the 0 s left cannot hold the workers' start-up (about ")
    assert line.endswith("and the closing report; no worker started")
    assert optuna.load_study(study_name="t", storage=storage).get_trials() == []


def test_a_search_command_counts_from_its_start_and_keeps_its_closing(tmp_path, monkeypatch):
    from nas.cli.common import run
    from nas.cli.main import build_parser

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["search", "--smoke", "--time-limit", "20s"])
    args.started = time.time() - 30.0  # the command started 30 s ago: nothing fits
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run(args.handler, args) == 0
    study = optuna.load_study(study_name="smoke", storage="sqlite:///studies/nas.db")
    assert study.get_trials() == []
    assert "time limit: no further trial fits in the 0 s left" in out.getvalue()
    assert "store:  sqlite:///studies/nas.db" in out.getvalue()  # the summary, as always
    assert isinstance(study.user_attrs[records.CLOSING], float)  # measured for the next run


def test_freezing_before_exit_keeps_the_objects_from_the_final_collection():
    import gc

    try:
        skip_final_collection()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.slow
def test_the_command_line_counts_from_the_process_start(tmp_path):
    """The command line's time limit counts from the process's start, before main() ran: here
    a 13 s sleep in front of a 12 s limit, so no trial may start (counted from main's call,
    the 12 s would leave time after the start-up, and the first trial, not yet priced, would
    start)."""
    from helpers import ROOT

    code = (
        "import sys, time; time.sleep(13); "
        "sys.argv = ['nas', 'search', '--smoke', '--time-limit', '12s']; "
        "from nas.cli.main import main; sys.exit(main())"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "time limit: no further trial fits in the 0 s left" in done.stdout
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path}/studies/nas.db")
    assert study.get_trials() == []


@pytest.mark.parametrize(
    "seconds, said",
    [
        (7530, "2 h 05 min"),  # 2 h 5 min 30 s: hours and minutes
        (3600, "1 h 00 min"),  # an hour exactly is said in hours
        (3660, "1 h 01 min"),  # the first minute past an hour
        (3599.9, "59 min 59 s"),  # just under: minutes and seconds
        (60, "1 min 00 s"),
        (59.4, "59 s"),
        (-5, "0 s"),  # a clock that ran back says nothing negative
    ],
)
def test_durations_are_said_in_hours_minutes_or_seconds(seconds, said):
    assert format_duration(seconds) == said


def test_the_closing_is_kept_to_the_millisecond(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    record_closing(study, 1.23456)
    assert study.user_attrs[records.CLOSING] == 1.235


def test_a_runs_account_names_each_kind_of_trial_in_order_with_its_time():
    spent = {"trained": 11.2, "pruned": 2.0, "rejected": 1.0, "duplicate": 0.4, "other": 0.0}
    counts = {"trained": 3, "pruned": 1, "rejected": 2, "duplicate": 2, "other": 0}
    assert account_line(20, 14.6, spent, counts) == (
        "time limit 20 s: 15 s used: trained 3 (11 s), stopped by the pruner 1 (2 s), "
        "rejected 2 (1 s), duplicates 2 (0 s)"
    )  # a kind with no trial ("other") is left out
    assert account_line(20, 3, {}, {}) == "time limit 20 s: 3 s used"


def test_each_run_with_a_limit_is_one_line_oldest_first_since_the_asked_moment():
    def account(started: str, stopped: bool, trained: int) -> dict:
        return records.TimeAccount(
            started=started, limit=60.0, used=50.0, stopped_by_limit=stopped,
            spent={"trained": 45.0}, counts={"trained": trained},
        ).to_dict()  # fmt: skip

    attrs = {
        f"{records.TIME_BUDGET_PREFIX}20261206T101500_2": account("2026-12-06T10:15:00", True, 4),
        f"{records.TIME_BUDGET_PREFIX}20261206T090000_1": account("2026-12-06T09:00:00", False, 2),
        "not_a_time_account": {"started": "2026-12-06T11:00:00"},
    }
    lines = run_lines(attrs)
    assert lines == [
        "run of 2026-12-06 09:00 UTC ended within the time limit; time limit 1 min 00 s: "
        "50 s used: trained 2 (45 s)",
        "run of 2026-12-06 10:15 UTC stopped by the time limit: no further trial fitted in the "
        "time left; time limit 1 min 00 s: 50 s used: trained 4 (45 s)",
    ]
    # since a moment: runs started at it (to the second) or after; earlier ones left out
    assert run_lines(attrs, since=datetime.datetime(2026, 12, 6, 10, 15, 0, 700_000)) == lines[1:]
    assert run_lines(attrs, since=datetime.datetime(2026, 12, 6, 10, 15, 1)) == []


def test_the_account_adds_up_each_kind_and_only_trained_epochs_set_the_pace():
    budget = TimeBudget(limit=100.0, clock=lambda: 0.0)
    budget.record("trained", 0.5, epochs=1)  # under a second: the pace is 0.5, not a floor of 1
    budget.record("trained", 0.3, epochs=1)
    budget.record("rejected", 30.0, epochs=2)  # epochs of what did not train set no pace
    budget.record("pruned", 4.0)  # no epochs recorded: no pace from it
    assert budget.spent["trained"] == pytest.approx(0.8) and budget.counts["trained"] == 2
    assert budget.spent["rejected"] == 30.0 and budget.counts["rejected"] == 1
    assert budget.per_epoch() == 0.5


def test_a_runs_record_holds_its_limit_use_refusal_and_account():
    now = [0.0]
    budget = TimeBudget(limit=10.0, clock=lambda: now[0], offset=1.0)
    budget.record("trained", 4.0, epochs=2)
    now[0] = 6.0  # 7 of 10 used: a full trial at 2 per epoch (1 epoch) fits, then not
    budget.epochs = 2  # a full trial: 4, more than the 3 left
    assert not budget.allows_trial()
    record = records.TimeAccount.from_dict(budget.to_record())
    assert (record.limit, record.used, record.stopped_by_limit) == (10.0, 7.0, True)
    assert record.spent["trained"] == 4.0 and record.counts == {
        "trained": 1, "pruned": 0, "rejected": 0, "duplicate": 0, "other": 0, "confirmation": 0,
    }  # fmt: skip
    assert datetime.datetime.fromisoformat(record.started).tzinfo is not None  # UTC, named
