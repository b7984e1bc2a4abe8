"""nas.search.time_budget: reading --time-limit, the stop rule at its boundary with a fake clock,
and a
real search (tiny space, synthetic data, SQLite) stopped by a budget whose clock counts epochs."""

from __future__ import annotations

import datetime

import optuna
import pytest

from nas import records, trial_view
from nas.config.data import DataConfig
from nas.config.search import SearchConfig
from nas.errors import UserError
from nas.search.loop import run_search
from nas.search.time_budget import TimeBudget, may_start, parse_duration
from nas.search.winner import confirmation_epochs, confirmations


@pytest.mark.parametrize(
    "text, expected",
    [("8h", 28_800.0), ("90m", 5_400.0), ("3600s", 3_600.0), ("3600", 3_600.0), ("1.5h", 5_400.0)],
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


def test_a_budget_measures_its_pace_from_trained_trials_with_the_clock_it_is_given():
    clock = FakeClock()
    budget = TimeBudget(limit=60.0, clock=clock)
    assert budget.allows_trial()  # nothing measured yet
    clock.now += 2.0
    budget.record("rejected", 2.0)  # a rejection's time is spent but sets no pace
    assert budget.per_trial() is None
    clock.now += 20.0
    budget.record("trained", 20.0, epochs=4)
    clock.now += 10.0
    budget.record("pruned", 10.0, epochs=2)
    assert budget.per_trial() == 15.0  # (20 + 10) / 2
    assert budget.per_epoch() == 5.0  # 30 s over 6 epochs
    clock.now = 1_000.0 + 45.0  # 15 s left: exactly one trial at the pace
    assert budget.allows_trial() and not budget.stopped
    clock.now += 0.5
    assert not budget.allows_trial()
    assert budget.stopped
    account = budget.account(lambda s: f"{s:g}s")
    assert account == (
        "time limit 60s: 45.5s used: trained 1 (20s), stopped by the pruner 1 (10s), "
        "rejected 1 (2s)"
    )


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


def epoch_clock(storage: str, study_name: str):
    """A clock that reads the study's training epochs: trained trials and confirmation runs."""

    def clock() -> float:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            return 0.0
        trained = study.get_trials(deepcopy=False)
        spent = sum(
            t.user_attrs.get(records.EPOCHS, 0) for t in trained if trial_view.is_trained(t)
        )
        return float(spent + confirmation_epochs(study))

    return clock


@pytest.mark.parametrize("confirm, trained, confirmed", [(0, 3, 0), (1, 2, 1)])
def test_a_search_starts_no_trial_the_budget_cannot_hold(tmp_path, confirm, trained, confirmed):
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe

    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = SearchConfig(
        budget=100_000, trials=50, space=str(space), study="t", storage=storage,
        sampler="random", pruner="none", warm_start=False, confirm=confirm,
    )  # fmt: skip
    recipe = Recipe(epochs=2, batch_size=16, augment="none", flip=False)
    # 7 "seconds" are 7 epochs; a trial takes 2. Without confirmation: trials start at 0, 2, 4
    # (3 left >= 2) and not at 6. With one confirmation run (2 epochs) reserved: at 0, 2 (5
    # left >= 2 + 2), not at 4 (3 left); then the confirmation run.
    budget = TimeBudget(limit=7.0, clock=epoch_clock(storage, "t"))
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
    epochs_spent = budget.elapsed()  # the clock counts epochs: 2 per trial and per confirmation
    assert epochs_spent == 2 * (trained + confirmed)


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
