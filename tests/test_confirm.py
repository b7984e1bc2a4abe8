"""nas.search.confirm and nas.search.winner: the race that decides which candidate a
confirmation run trains, the record it leaves on the study, its claim in the store, and which
trial the search names best (real Optuna studies on SQLite built through the public API, real
training runs on synthetic data). Expected winners are computed by hand in each test."""

from __future__ import annotations

import re
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

import nas.search.confirm
from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.loading import load_splits
from nas.search.choice import choose_from_study
from nas.search.confirm import claim, race, release
from nas.search.progress import trial_counts
from nas.search.winner import (
    candidates,
    confirmation_epochs,
    confirmations,
    next_to_confirm,
    settled,
    verdict_lines,
    winner,
    winner_record,
)
from nas.train.fit import fit, set_seed
from nas.train.model import build_model

SMALL = Architecture((4,), (1,), conv_kernel=3, skip_kernel=1, stem=4)
RUN = {"seed": 1, "epochs": 2, "seconds": 1.0}  # a confirmation record besides its accuracies
SYNTHETIC = DataConfig(dataset="synthetic", subset=48)  # the real runs' images
TWO_EPOCHS = Recipe(epochs=2, batch_size=16, augment="none", flip=False, seed=3)


def trained(value: float, arch: str, state=TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    attrs = {records.TRAINED: True, records.ARCHITECTURE: arch, records.EPOCHS: 2}
    if state == TrialState.PRUNED:
        attrs[records.BEST_VAL_ACCURACY] = value
        return create_trial(state=state, intermediate_values={1: value}, user_attrs=attrs)
    return create_trial(value=value, intermediate_values={1: value, 2: value}, user_attrs=attrs)


def new_study(tmp_path, trials) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}", direction="maximize")
    study.set_user_attr(records.RECIPE, {"seed": 0})
    for trial in trials:
        study.add_trial(trial)
    return study


def confirmed_as(study, number: int, first: float, second: float, note: str = "") -> None:
    """Record a confirmation run of trial `number` as the search writes it."""
    record = {**RUN, "first_val_accuracy": first, "val_accuracy": second}
    record["mean_val_accuracy"] = (first + second) / 2
    if note:
        record["note"] = note
    study.set_user_attr(records.confirm_key(number), record)


def arch_json(width: int) -> str:
    return Architecture((width,), (1,), conv_kernel=3, skip_kernel=1, stem=4).to_json()


def test_candidates_are_the_full_trials_one_per_architecture_with_all_their_runs(tmp_path):
    study = new_study(
        tmp_path,
        [
            trained(0.80, "a"),  # 0
            trained(0.95, "b", TrialState.PRUNED),  # 1: stopped by the pruner: not a candidate
            trained(0.90, "c"),  # 2
            trained(0.70, "c"),  # 3: the same architecture again: one more run of candidate 2
            trained(0.85, "d"),  # 4
            trained(0.85, "e"),  # 5: ties with 4, a higher number
        ],
    )
    ranked = candidates(study)
    # c: mean of 0.90 and 0.70 = 0.80, ties with a (0.80, one run): more runs first
    assert [(c.number, round(c.score, 4)) for c in ranked] == [
        (4, 0.85), (5, 0.85), (2, 0.80), (0, 0.80),
    ]  # fmt: skip
    assert [c.confirmed for c in ranked] == [False, False, True, False]


def test_without_confirmation_the_winner_is_the_best_trial_trained_to_the_end(tmp_path):
    # the pruner-stopped trial ranks on fewer epochs: neither the winner nor the retrain's pick
    stopped = trained(0.95, arch_json(8), TrialState.PRUNED)
    study = new_study(tmp_path, [trained(0.80, arch_json(4)), stopped])
    best, score = winner(study)
    assert (best.number, score) == (0, 0.80)
    assert choose_from_study(study).trial.number == 0
    assert verdict_lines(study)[0].startswith("winner: trial 0 (")


def test_with_confirmations_the_winner_has_the_best_mean(tmp_path):
    study = new_study(tmp_path, [trained(0.96, "a"), trained(0.94, "b"), trained(0.91, "c")])
    # trial 0 was lucky (0.96, then 0.88: mean 0.92), trial 1 is steady (0.94, 0.93: 0.935);
    # trial 2's one run (0.91) is below 0.935: the race is settled
    confirmed_as(study, 0, 0.96, 0.88)
    confirmed_as(study, 1, 0.94, 0.93)
    best, score = winner(study)
    assert (best.number, score) == (1, pytest.approx(0.935))
    assert next_to_confirm(study) is None and settled(study)
    assert confirmation_epochs(study) == 4


def test_the_race_confirms_in_order_until_the_leader_stands_above_every_single_run(tmp_path):
    study = new_study(tmp_path, [trained(0.96, "a"), trained(0.94, "b"), trained(0.90, "c")])
    assert next_to_confirm(study).number == 0  # nothing confirmed: the top single run first
    confirmed_as(study, 0, 0.96, 0.90)  # mean 0.93: trial 1's one run (0.94) stands above it
    assert next_to_confirm(study).number == 1 and not settled(study)
    confirmed_as(study, 1, 0.94, 0.94)  # mean 0.94 > 0.93 and > trial 2's 0.90: settled
    assert next_to_confirm(study) is None and settled(study)
    assert winner(study)[0].number == 1


def test_a_diverged_confirmation_loses_the_lead_and_the_retrain_takes_the_runner_up(tmp_path):
    runs = [(0.96, 4), (0.90, 8), (0.50, 12)]
    study = new_study(tmp_path, [trained(value, arch_json(width)) for value, width in runs])
    confirmed_as(study, 0, 0.96, 0.0, note="non-finite loss: nan")  # mean 0.48
    assert next_to_confirm(study).number == 1  # 0.90 stands above 0.48: confirm it next
    confirmed_as(study, 1, 0.90, 0.86)  # mean 0.88
    best, score = winner(study)
    assert (best.number, score) == (1, pytest.approx(0.88))
    choice = choose_from_study(study)
    assert choice.trial.number == 1
    assert "the search's winner: val accuracy 88.00% (the mean of 2 runs)" in choice.why
    winner_line, lead, _ = verdict_lines(study)
    assert winner_line.startswith("winner: trial 1 (")
    assert "88.00% validation accuracy, the mean of 2 runs (seed 0: 90.00%, seed 1: 86.00%" in (
        winner_line
    )
    # the diverged candidate shows its evidence and sits below: 88 - 48 = 40, 88 - 50 = 38
    assert lead == (
        "its lead: +38.0 points over trial 2 (50.00%, one run), +40.0 points over trial 0 "
        "(48.00%: the mean of seed 0: 96.00%, seed 1: 0.00%)"
    )


def test_with_no_run_left_the_diverged_candidate_is_not_named(tmp_path):
    # --confirm 1 spent on the top run, which diverged: the runner-up's one run (0.90) is the
    # best evidence there is, and it is named, unconfirmed, saying why
    study = new_study(tmp_path, [trained(0.96, "a"), trained(0.90, "b")])
    confirmed_as(study, 0, 0.96, 0.0)
    assert winner(study)[0].number == 1
    winner_line, lead, _ = verdict_lines(study)
    assert "90.00% validation accuracy from one training run, not confirmed: " in winner_line
    assert (
        lead
        == "its lead: +42.0 points over trial 0 (48.00%: the mean of seed 0: 96.00%, seed 1: 0.00%)"
    )


@pytest.mark.parametrize("second, named", [(0.80, 0), (0.91, 2)])
def test_a_later_trial_that_beats_the_confirmed_mean_is_confirmed_before_it_is_named(
    tmp_path, second, named
):
    study = new_study(tmp_path, [trained(0.90, "a"), trained(0.85, "b")])
    confirmed_as(study, 0, 0.90, 0.88)  # mean 0.89: settled
    assert settled(study)
    study.add_trial(trained(0.93, "c"))  # trial 2, from a resumed run or another worker
    assert not settled(study)
    assert next_to_confirm(study).number == 2  # 0.93 > 0.89: the race goes on with it
    confirmed_as(study, 2, 0.93, second)  # mean 0.865 (below 0.89) or 0.92 (above)
    assert winner(study)[0].number == named
    assert settled(study)


def test_the_winner_is_never_below_a_candidate_measured_the_same_way(tmp_path):
    # every shown candidate's score is the mean of its runs; the winner's is the highest, so
    # no lead is negative, and the winner's own second record is not another candidate
    study = new_study(
        tmp_path, [trained(0.50, "a"), trained(0.38, "b"), trained(0.45, "a"), trained(0.28, "c")]
    )
    confirmed_as(study, 0, 0.50, 0.35)  # a: 0.50, 0.45 (trial 2), 0.35: mean 0.4333
    winner_line, lead, _ = verdict_lines(study)
    assert winner_line.startswith("winner: trial 0 (")
    assert "the mean of 3 runs (seed 0: 50.00%, seed 0: 45.00%, seed 1: 35.00%; spread +-7.5" in (
        winner_line
    )
    assert lead == (
        "its lead: +5.3 points over trial 1 (38.00%, one run), +15.3 points over trial 3 "
        "(28.00%, one run): within the winner's spread over seeds, the runner-up may be as good"
    )
    assert re.findall(r"([+-]\d+\.\d) points", lead) == ["+5.3", "+15.3"]  # none negative


def test_an_unconfirmed_winner_says_so_and_leads_by_its_run(tmp_path):
    study = new_study(tmp_path, [trained(0.90, "a"), trained(0.95, "b"), trained(0.80, "c")])
    winner_line, lead, _ = verdict_lines(study)
    assert winner_line.startswith("winner: trial 1 (")
    assert "95.00% validation accuracy from one training run, not confirmed by a second seed" in (
        winner_line
    )
    assert lead == (
        "its lead: +5.0 points over trial 0 (90.00%, one run), +15.0 points over trial 2 "
        "(80.00%, one run)"
    )


def test_a_pareto_study_names_no_single_winner(tmp_path):
    study = new_study(tmp_path, [trained(0.90, "a"), trained(0.95, "b")])
    study.set_user_attr(records.OBJECTIVE, {"objective": "pareto", "minimize": "params"})
    lines = verdict_lines(study)
    assert lines[0] == "a Pareto study names no single winner: see the best model at every size"
    assert len(lines) == 2 and lines[1].startswith("rank fidelity: ")


def test_a_confirmation_is_claimed_once_in_the_store(tmp_path, recwarn):
    study = new_study(tmp_path, [trained(0.9, "a"), trained(0.8, "b")])
    first = claim(study, 0)
    assert first == 2  # the claim is trial 2, RUNNING
    assert claim(study, 0) is None  # a second process's claim loses to the live one
    # claims are bookkeeping: not candidates, not running trials of the search
    kinds = [trial_view.classify(t) for t in study.get_trials()]
    assert kinds == [trial_view.TrialKind.TRAINED] * 2 + [trial_view.TrialKind.CONFIRMATION] * 2
    assert trial_counts(study) == (2, 0)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING, TrialState.FAIL]
    # the live claim on trial 0 does not hold trial 1: another worker may confirm it meanwhile
    assert claim(study, 1) == 4
    release(study, first)  # its run ended unrecorded (stopped): the trial may be claimed again
    assert claim(study, 0) == 5
    # finishing a claim is said to no one: Optuna warns when a tell carries no state
    assert [str(w.message) for w in recwarn] == []


def test_the_race_trains_the_runner_up_after_a_diverged_confirmation(tmp_path, monkeypatch, capsys):
    splits = load_splits(SYNTHETIC)
    study = new_study(tmp_path, [trained(0.96, "never-built"), trained(0.5, SMALL.to_json())])
    confirmed_as(study, 0, 0.96, 0.0, note="non-finite loss: nan")  # mean 0.48
    recipe = Recipe(epochs=2, batch_size=16, augment="none", flip=False, seed=7)
    runs = []  # what the confirmation handed to the real fit: its seed and first weights

    def watched_fit(model, splits, recipe, machine, **options):
        first = {k: v.clone() for k, v in model.state_dict().items()}
        runs.append((recipe.seed, first))
        return fit(model, splits, recipe, machine, **options)

    monkeypatch.setattr(nas.search.confirm, "fit", watched_fit)
    seen = []
    done = race(study, splits, recipe, Machine(device="cpu"), 3, on_run=lambda n, r: seen.append(n))
    assert done == seen == [1]  # trial 0 is not confirmed again; nothing else is left
    # a quiet run: no data-path line, no epoch bar among the search's progress lines
    assert capsys.readouterr() == ("", "")
    record = study.user_attrs["confirm_trial_1"]
    # the keys studies of earlier releases hold, in their order (no note: the run converged)
    assert list(record) == [
        "seed", "val_accuracy", "first_val_accuracy", "mean_val_accuracy", "epochs", "seconds",
    ]  # fmt: skip
    assert record["seed"] == 8  # the recipe's 7, plus one: by hand, not from SEED_OFFSET
    # the run trained with seed 8: its epochs' draws, and its first weights (as a trial's)
    [(seed, first)] = runs
    set_seed(8)
    expected_weights = build_model(SMALL).state_dict()
    assert seed == 8 and first.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(first[name], tensor), name
    assert record["epochs"] == 2
    assert record["first_val_accuracy"] == 0.5
    assert 0.0 <= record["val_accuracy"] <= 1.0
    assert record["mean_val_accuracy"] == pytest.approx((0.5 + record["val_accuracy"]) / 2)
    assert sorted(confirmations(study)) == [0, 1]
    # its claim was finished, and the winner recorded for the dashboard
    (claimed,) = [t for t in study.get_trials() if records.CONFIRMS in t.user_attrs]
    assert (claimed.user_attrs[records.CONFIRMS], claimed.state) == (1, TrialState.FAIL)
    expected = 1 if record["mean_val_accuracy"] > 0.48 else 0
    assert study.user_attrs[records.WINNER]["trial"] == expected
    assert study.user_attrs[records.WINNER] == winner_record(study)
    # confirmed once: a second call (a resume, another worker) trains nothing
    assert race(study, splits, recipe, Machine(device="cpu"), 3) == []


def test_ties_name_the_lower_numbered_trial(tmp_path):
    """Equal scores: the lower trial number wins, among unconfirmed trained trials (equal
    accuracies) and among confirmed candidates (equal means), in whatever order they come."""
    study = new_study(tmp_path, [trained(0.7, "a"), trained(0.9, "b"), trained(0.9, "c")])
    assert winner(study)[0].number == 1
    assert winner(study, list(reversed(study.get_trials())))[0].number == 1
    for number in (2, 1):  # the higher number recorded first
        confirmed_as(study, number, 0.9, 0.8)  # both: mean 0.85
    assert winner(study)[0].number == 1 and winner(study)[1] == pytest.approx(0.85)
    assert winner(study, list(reversed(study.get_trials())))[0].number == 1


def test_a_study_with_nothing_trained_to_the_end_has_no_winner_and_says_why(tmp_path):
    # a library caller of winner() reads the reason; the summary says it in its first line
    study = new_study(tmp_path, [trained(0.95, arch_json(8), TrialState.PRUNED)])
    with pytest.raises(ValueError, match=r"^no trial has trained to the end yet$"):
        winner(study)
    assert verdict_lines(study)[0] == "no trial has trained to the end yet"
    assert winner_record(study) is None and not settled(study)


@pytest.mark.parametrize(
    "runner_up, close",
    [(0.86, True), (0.855, False)],  # a lead of exactly the spread (2.0) is close; 2.5 is not
)
def test_the_verdict_is_said_whole_with_the_two_next_candidates(tmp_path, runner_up, close):
    study = new_study(
        tmp_path,
        [trained(0.90, "a"), trained(runner_up, "b"), trained(0.80, "c"), trained(0.70, "d")],
    )
    study.set_user_attr("unrelated", 1)
    confirmed_as(study, 0, 0.90, 0.86)  # mean 0.88, spread +-2.0 points
    winner_line, lead, fidelity = verdict_lines(study)
    # the trials carry no printed architecture: "?" stands for it
    assert winner_line == (
        "winner: trial 0 (?), 88.00% validation accuracy, the mean of 2 runs (seed 0: 90.00%, "
        "seed 1: 86.00%; spread +-2.0 points)"
    )
    following = (
        f"over trial 1 ({runner_up:.2%}, one run), +8.0 points over trial 2 (80.00%, one run)"
    )
    expected = f"its lead: +{(0.88 - runner_up) * 100:.1f} points {following}"
    if close:
        expected += ": within the winner's spread over seeds, the runner-up may be as good"
    assert lead == expected  # trial 3 (70.00%) is the third: not listed
    assert fidelity.startswith("rank fidelity: ")


def test_an_unconfirmed_winner_says_whole_why_it_is_not_confirmed(tmp_path):
    study = new_study(tmp_path, [trained(0.96, "a"), trained(0.90, "b")])
    study.add_trial(
        create_trial(
            value=0.70,
            intermediate_values={1: 0.70},
            user_attrs={records.TRAINED: True, records.ARCHITECTURE: "c", records.EPOCHS: 2,
                        records.ARCH_LINE: "8 / 1 / k3 / s1"},
        )
    )  # fmt: skip
    assert verdict_lines(study)[0] == (
        "winner: trial 0 (?), 96.00% validation accuracy from one training run, not confirmed "
        "by a second seed (--confirm 0, or the run stopped first)"
    )
    confirmed_as(study, 0, 0.96, 0.60)  # mean 0.78: trial 1's one run (0.90) leads, unconfirmed
    assert verdict_lines(study)[0] == (
        "winner: trial 1 (?), 90.00% validation accuracy from one training run, not confirmed: "
        "the confirmation runs of the candidates above it lowered their means and none was left "
        "for it (rerun the search, or raise --confirm)"
    )
    confirmed_as(study, 1, 0.90, 0.30)  # mean 0.60: trial 2, with its printed architecture
    assert verdict_lines(study)[0].startswith(
        "winner: trial 0 (?), 78.00% validation accuracy, the mean of 2 runs"
    )
    confirmed_as(study, 0, 0.96, 0.0)  # mean 0.48: trial 2 (0.70) stands above every mean
    assert verdict_lines(study)[0].startswith("winner: trial 2 (8 / 1 / k3 / s1), 70.00% ")


def test_the_fidelity_line_counts_the_trials_that_ran_the_recipes_epochs(tmp_path):
    # the study's recipe says 3 epochs; these trials reported 2 (a search started with fewer
    # epochs and resumed with more): none of them is a full-length trial of this study
    study = new_study(tmp_path, [trained(0.5 + i / 100, arch_json(4 + i)) for i in range(6)])
    study.set_user_attr(records.RECIPE, {"seed": 0, "epochs": 3})
    assert verdict_lines(study)[-1].endswith(" full-length trials needed, 0 so far)")


def test_a_confirmation_run_that_diverges_is_recorded_as_zero_with_its_reason(tmp_path):
    # Adam moves every weight by about lr in its first step: the next loss is not finite
    splits = load_splits(SYNTHETIC)
    study = new_study(tmp_path, [trained(0.5, SMALL.to_json())])
    recipe = Recipe(epochs=2, batch_size=16, lr=1e30, augment="none", flip=False, seed=3)
    before = time.monotonic()
    assert race(study, splits, recipe, Machine(device="cpu"), 1) == [0]
    took = time.monotonic() - before
    record = study.user_attrs["confirm_trial_0"]
    assert 0.0 < record["seconds"] <= took  # the run's own duration, within the call's
    assert record["note"].startswith("non-finite loss: ")
    assert (record["seed"], record["val_accuracy"], record["epochs"]) == (4, 0.0, 2)
    assert (record["first_val_accuracy"], record["mean_val_accuracy"]) == (0.5, 0.25)


def _two_top_runs(tmp_path) -> optuna.Study:
    """Two real candidates whose recorded single runs (99.9 %, 99.8 %) no real 2-epoch run on
    the synthetic images reaches: each confirmation lowers its mean below the next one's run,
    so the race goes on until it is out of runs."""
    wide = Architecture((8,), (1,), conv_kernel=3, skip_kernel=1, stem=4)
    return new_study(tmp_path, [trained(0.999, SMALL.to_json()), trained(0.998, wide.to_json())])


def test_the_race_trains_no_more_runs_than_allowed(tmp_path):
    study = _two_top_runs(tmp_path)
    splits = load_splits(SYNTHETIC)
    assert race(study, splits, TWO_EPOCHS, Machine(device="cpu"), 1) == [0]
    assert next_to_confirm(study).number == 1  # the race wanted one more: none was allowed
    assert sorted(confirmations(study)) == [0]


def test_a_race_whose_next_run_another_process_holds_ends_with_nothing_confirmed(tmp_path):
    study = _two_top_runs(tmp_path)
    assert claim(study, 0) == 2  # another process's live claim on the race's next run
    assert race(study, load_splits(SYNTHETIC), TWO_EPOCHS, Machine(device="cpu"), 2) == []
    assert confirmations(study) == {}


def test_a_run_another_process_recorded_meanwhile_is_passed_over_and_the_race_goes_on(
    tmp_path, monkeypatch
):
    study = _two_top_runs(tmp_path)
    real_claim = nas.search.confirm.claim

    def claim_after_another_finished(study, number):
        if number == 0:  # the holder of trial 0 recorded its run between the race's read and
            confirmed_as(study, 0, 0.999, 0.5)  # this claim: mean 0.7495, below trial 1's run
        return real_claim(study, number)

    monkeypatch.setattr(nas.search.confirm, "claim", claim_after_another_finished)
    done = race(study, load_splits(SYNTHETIC), TWO_EPOCHS, Machine(device="cpu"), 2)
    assert done == [1]  # trial 0 is not trained again; the race goes on with trial 1
    assert sorted(confirmations(study)) == [0, 1]


@pytest.mark.parametrize("limit", [5.0, 3.0])
def test_each_confirmation_is_booked_at_its_own_time_and_one_cut_by_the_limit_says_so(
    tmp_path, limit
):
    from nas.search.confirm import confirm
    from nas.search.time_budget import Ending, TimeBudget

    study = _two_top_runs(tmp_path)
    now = [0.0]

    def one_second_an_epoch() -> bool:  # the stop check after every epoch moves the clock
        now[0] += 1.0
        return False

    said = []
    budget = TimeBudget(limit=limit, clock=lambda: now[0])
    end = Ending(one_second_an_epoch, budget, said.append)
    confirm(study, 2, load_splits(SYNTHETIC), TWO_EPOCHS, Machine(device="cpu"), end)
    if limit == 5.0:  # run 1: seconds 0-2, run 2: 2-4, each booked at its own 2 s
        assert (budget.counts["confirmation"], budget.spent["confirmation"]) == (2, 4.0)
        assert sorted(confirmations(study)) == [0, 1] and said == []
        return
    # run 1: seconds 0-2, booked 2 s; run 2 starts at 2 (1 s left, no pace: it may start),
    # its first epoch ends at 3, the limit: stopped after it, unrecorded, said once
    assert (budget.counts["confirmation"], budget.spent["confirmation"]) == (1, 2.0)
    assert sorted(confirmations(study)) == [0]
    assert said == [
        "time limit: the time ran out during a confirmation run; it stopped after its epoch, "
        "unrecorded (rerun the search to confirm it)"
    ]
    assert study.user_attrs[records.WINNER]["trial"] == 1  # 0.998 over trial 0's lower mean


@pytest.mark.parametrize("recipe", [{"epochs": 2}, "not a recipe"])
def test_a_run_whose_seed_the_study_did_not_record_shows_a_question_mark(tmp_path, recipe):
    study = new_study(tmp_path, [trained(0.90, "a")])
    study.set_user_attr(records.RECIPE, recipe)  # a study of an early release, or a damaged one
    confirmed_as(study, 0, 0.90, 0.80)
    assert candidates(study)[0].evidence() == "seed ?: 90.00%, seed 1: 80.00%"
