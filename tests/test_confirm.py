"""nas.search.confirm: which candidates are confirmed, the record a confirmation run leaves on the
study, and which trial the search names best (real Optuna studies on SQLite, a real training
run on synthetic data)."""

from __future__ import annotations

import json
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

import nas.search.confirm
from nas import records
from nas.arch.architecture import Architecture
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.loading import load_splits
from nas.errors import StopRequested
from nas.search.confirm import confirm_top
from nas.search.winner import candidates, confirmation_epochs, confirmations, verdict_lines, winner
from nas.train.fit import fit, set_seed
from nas.train.model import build_model

SMALL = Architecture((4,), (1,), conv_kernel=3, skip_kernel=1, stem=4)
RUN = {"seed": 1, "epochs": 2, "seconds": 1.0}  # a confirmation record besides its accuracies


def trained(value: float, arch: str, state=TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    attrs = {records.TRAINED: True, records.ARCHITECTURE: arch, records.EPOCHS: 2}
    if state == TrialState.PRUNED:
        attrs[records.BEST_VAL_ACCURACY] = value
        return create_trial(state=state, intermediate_values={1: value}, user_attrs=attrs)
    return create_trial(value=value, intermediate_values={1: value, 2: value}, user_attrs=attrs)


def new_study(tmp_path, trials) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}", direction="maximize")
    for trial in trials:
        study.add_trial(trial)
    return study


def test_candidates_are_the_best_full_trials_one_per_architecture(tmp_path):
    study = new_study(
        tmp_path,
        [
            trained(0.80, "a"),  # 0
            trained(0.95, "b", TrialState.PRUNED),  # 1: stopped by the pruner: not a candidate
            trained(0.90, "c"),  # 2
            trained(0.90, "c"),  # 3: the same architecture again
            trained(0.85, "d"),  # 4
            trained(0.90, "e"),  # 5: ties with 2, a higher number
        ],
    )
    assert [t.number for t in candidates(study.get_trials(), 3)] == [2, 5, 4]
    assert [t.number for t in candidates(study.get_trials(), 10)] == [2, 5, 4, 0]


def test_without_confirmation_the_winner_is_the_best_trained_trial(tmp_path):
    study = new_study(tmp_path, [trained(0.80, "a"), trained(0.95, "b", TrialState.PRUNED)])
    best, score = winner(study)
    assert (best.number, score) == (1, 0.95)


def test_with_confirmations_the_winner_has_the_best_mean(tmp_path):
    study = new_study(tmp_path, [trained(0.96, "a"), trained(0.94, "b"), trained(0.99, "c")])
    # trial 0 was lucky (0.96, then 0.88: mean 0.92), trial 1 is steady (0.94, 0.93: 0.935);
    # trial 2 has no confirmation record and is not named however high its one run
    confirmed = {"seed": 1, "epochs": 5, "seconds": 1.0}
    study.set_user_attr(
        records.confirm_key(0),
        {**confirmed, "val_accuracy": 0.88, "first_val_accuracy": 0.96, "mean_val_accuracy": 0.92},
    )
    study.set_user_attr(
        records.confirm_key(1),
        {**confirmed, "val_accuracy": 0.93, "first_val_accuracy": 0.94, "mean_val_accuracy": 0.935},
    )
    best, score = winner(study)
    assert (best.number, score) == (1, 0.935)
    assert confirmation_epochs(study) == 10


def test_confirmation_trains_the_top_candidates_again_with_another_seed_and_records_it(
    tmp_path, monkeypatch, capfd
):
    splits = load_splits(DataConfig(dataset="synthetic", subset=48))
    architecture = json.dumps(SMALL.to_dict(), separators=(",", ":"))
    study = new_study(tmp_path, [trained(0.5, architecture), trained(0.1, "never-built")])
    recipe = Recipe(epochs=2, batch_size=16, augment="none", flip=False, seed=3)
    machine = Machine(device="cpu")
    runs = []  # what the confirmation handed to the real fit: its seed, first weights, result

    def watched_fit(model, splits, recipe, machine, **options):
        first = {k: v.clone() for k, v in model.state_dict().items()}
        result = fit(model, splits, recipe, machine, **options)
        runs.append((recipe.seed, first, result))
        return result

    monkeypatch.setattr(nas.search.confirm, "fit", watched_fit)
    seen = []
    capfd.readouterr()
    before = time.monotonic()
    done = confirm_top(study, splits, recipe, machine, 1, on_run=lambda n, r: seen.append(n))
    took = time.monotonic() - before
    assert capfd.readouterr() == ("", "")  # quiet: the search prints its own line per run
    assert done == seen == [0]
    record = study.user_attrs["confirm_trial_0"]
    # the keys studies of earlier releases hold, in their order (no note: the run converged)
    assert list(record) == [
        "seed", "val_accuracy", "first_val_accuracy", "mean_val_accuracy", "epochs", "seconds",
    ]  # fmt: skip
    assert record["seed"] == 4  # the recipe's 3, plus one: by hand, not from SEED_OFFSET
    assert record["epochs"] == 2
    assert 0 < record["seconds"] <= took  # the run's own time, within the call's
    assert record["first_val_accuracy"] == 0.5
    # the run trained with seed 4: its epochs' draws, and its first weights (as a trial's)
    [(seed, first, result)] = runs
    set_seed(4)
    assert seed == 4 and first.keys() == build_model(SMALL).state_dict().keys()
    set_seed(4)
    for name, tensor in build_model(SMALL).state_dict().items():
        assert torch.equal(first[name], tensor), name
    assert record["val_accuracy"] == result.best_val_accuracy
    assert record["mean_val_accuracy"] == pytest.approx((0.5 + record["val_accuracy"]) / 2)
    assert list(confirmations(study)) == [0]
    # confirmed once: a second call (a resume, another worker) trains nothing
    assert confirm_top(study, splits, recipe, machine, 1) == [] and len(runs) == 1


def test_the_verdict_names_the_confirmed_winner_its_spread_and_lead(tmp_path):
    study = new_study(tmp_path, [trained(0.96, "a"), trained(0.94, "b"), trained(0.90, "c")])
    study.set_user_attr(records.RECIPE, {"seed": 0})
    study.set_user_attr(
        records.confirm_key(1),
        {**RUN, "first_val_accuracy": 0.94, "val_accuracy": 0.92, "mean_val_accuracy": 0.93},
    )
    study.set_user_attr(
        records.confirm_key(0),
        {**RUN, "first_val_accuracy": 0.96, "val_accuracy": 0.88, "mean_val_accuracy": 0.92},
    )
    winner_line, lead, fidelity = verdict_lines(study)
    assert winner_line.startswith("winner: trial 1 (")
    assert "93.00% validation accuracy, the mean of 2 seeds (0: 94.00%, 1: 92.00%; " in winner_line
    assert winner_line.endswith("spread +-1.0 points)")
    # 93 - 92 = 1 point: no more than the spread, so the runner-up may be as good; trial 2
    # (0.90) was not confirmed: its one run, 93 - 90 = 3 points below
    assert lead == (
        "its lead: +1.0 points over trial 0 (92.00%), +3.0 points over trial 2 (90.00%, one "
        "run): within the winner's spread over seeds, the runner-up may be as good"
    )
    assert fidelity.startswith("rank fidelity: not enough trials to say")


def test_a_winner_confirmed_alone_leads_the_next_candidates_by_their_one_run(tmp_path):
    # the default: one confirmation run, so only the winner has a mean over seeds
    study = new_study(tmp_path, [trained(0.50, "a"), trained(0.38, "b"), trained(0.28, "c")])
    study.set_user_attr(records.RECIPE, {"seed": 0})
    study.set_user_attr(
        records.confirm_key(0),
        {**RUN, "first_val_accuracy": 0.50, "val_accuracy": 0.35, "mean_val_accuracy": 0.425},
    )
    _, lead, _ = verdict_lines(study)
    # 42.5 - 38 = 4.5 points: within the winner's spread of +-7.5 points
    assert lead == (
        "its lead: +4.5 points over trial 1 (38.00%, one run), +14.5 points over trial 2 "
        "(28.00%, one run): within the winner's spread over seeds, the runner-up may be as good"
    )


def test_an_unconfirmed_winner_says_so_and_leads_by_accuracy(tmp_path):
    study = new_study(tmp_path, [trained(0.90, "a"), trained(0.95, "b"), trained(0.80, "c")])
    winner_line, lead, _ = verdict_lines(study)
    assert winner_line.startswith("winner: trial 1 (")
    assert "95.00% validation accuracy from one training run, not confirmed" in winner_line
    assert lead == "its lead: +5.0 points over trial 0 (90.00%), +15.0 points over trial 2 (80.00%)"


def test_ties_name_the_lower_numbered_trial(tmp_path):
    """Equal scores: the lower trial number wins, among unconfirmed trained trials (equal
    accuracies) and among confirmed candidates (equal means), in whatever order they come."""
    study = new_study(tmp_path, [trained(0.7, "a"), trained(0.9, "b"), trained(0.9, "c")])
    assert winner(study)[0].number == 1
    assert winner(study, list(reversed(study.get_trials())))[0].number == 1
    confirmed = {**RUN, "first_val_accuracy": 0.9, "val_accuracy": 0.8, "mean_val_accuracy": 0.85}
    for number in (2, 1):  # the higher number recorded first
        study.set_user_attr(records.confirm_key(number), confirmed)
    assert winner(study) == (study.trials[1], 0.85)
    assert winner(study, list(reversed(study.get_trials())))[0].number == 1


def confirm(study: optuna.Study, number: int, first: float, second: float, mean: float) -> None:
    """A confirmation record by hand: the trial's first run, the second seed's, their mean."""
    record = {**RUN, "first_val_accuracy": first, "val_accuracy": second, "mean_val_accuracy": mean}
    study.set_user_attr(records.confirm_key(number), record)


def test_the_lead_ranks_the_next_candidates_by_score_whatever_their_numbers(tmp_path):
    # trial 0 is confirmed (mean 0.80) but scores below trial 2's one run (0.90): 2 comes first
    study = new_study(tmp_path, [trained(0.70, "a"), trained(0.96, "b"), trained(0.90, "c")])
    confirm(study, 1, 0.96, 0.94, 0.95)  # the winner: spread +-1.0 point
    confirm(study, 0, 0.70, 0.90, 0.80)
    _, lead, _ = verdict_lines(study)
    # 95 - 90 = 5 points: more than the spread, so no "within the spread"
    assert lead == (
        "its lead: +5.0 points over trial 2 (90.00%, one run), +15.0 points over trial 0 (80.00%)"
    )


def test_next_candidates_of_equal_score_come_lower_number_first(tmp_path):
    study = new_study(tmp_path, [trained(0.96, "a"), trained(0.90, "b"), trained(0.90, "c")])
    confirm(study, 0, 0.96, 0.94, 0.95)
    confirm(study, 1, 0.90, 0.90, 0.90)  # confirmed, ties with trial 2's one run
    _, lead, _ = verdict_lines(study)
    assert (
        lead
        == "its lead: +5.0 points over trial 1 (90.00%), +5.0 points over trial 2 (90.00%, one run)"
    )


def test_a_lead_just_beyond_the_spread_is_not_called_close(tmp_path):
    # seeds 0.96 and 0.88: mean 0.92, spread +-4.0 points; trial 1 is 4.06 points behind
    study = new_study(tmp_path, [trained(0.96, "a"), trained(0.8794, "b")])
    study.set_user_attr(records.RECIPE, {"seed": 5})
    confirm(study, 0, 0.96, 0.88, 0.92)
    winner_line, lead, _ = verdict_lines(study)
    assert winner_line.endswith("the mean of 2 seeds (5: 96.00%, 1: 88.00%; spread +-4.0 points)")
    assert lead == "its lead: +4.1 points over trial 1 (87.94%, one run)"


def test_the_winner_line_names_its_architecture_and_says_what_is_unknown(tmp_path):
    named = trained(0.96, "a")
    named.set_user_attr(records.ARCH_LINE, "channels 8-16")
    study = new_study(tmp_path, [named, trained(0.90, "b")])
    confirm(study, 0, 0.96, 0.94, 0.95)  # no recipe recorded: its seed is unknown
    winner_line, _, _ = verdict_lines(study)
    assert winner_line.startswith("winner: trial 0 (channels 8-16), 95.00% validation accuracy")
    assert "the mean of 2 seeds (?: 96.00%, 1: 94.00%; " in winner_line
    study.set_user_attr(records.RECIPE, {"epochs": 2})  # a recipe without its seed
    assert "the mean of 2 seeds (?: 96.00%, " in verdict_lines(study)[0]
    (tmp_path / "unnamed").mkdir()
    unnamed = new_study(tmp_path / "unnamed", [trained(0.9, "a")])
    assert verdict_lines(unnamed)[0].startswith("winner: trial 0 (?), 90.00% validation accuracy")


def test_a_study_with_nothing_trained_says_so(tmp_path):
    study = new_study(tmp_path, [create_trial(state=TrialState.FAIL)])
    assert verdict_lines(study) == ["no trial has finished training yet"]


def test_a_best_trial_stopped_by_the_pruner_leads_the_candidates(tmp_path):
    # trial 1 trained but was pruned: the winner without confirmation, though not a candidate
    study = new_study(tmp_path, [trained(0.80, "a"), trained(0.95, "b", TrialState.PRUNED)])
    winner_line, lead, _ = verdict_lines(study)
    assert winner_line.startswith("winner: trial 1 (")
    assert lead == "its lead: +15.0 points over trial 0 (80.00%)"


def test_the_lead_names_the_next_two_candidates_only(tmp_path):
    study = new_study(tmp_path, [trained(v, a) for v, a in [(0.9, "a"), (0.8, "b"), (0.7, "c")]])
    study.add_trial(trained(0.6, "d"))
    _, lead, _ = verdict_lines(study)
    assert (
        lead == "its lead: +10.0 points over trial 1 (80.00%), +20.0 points over trial 2 (70.00%)"
    )


def test_without_a_trained_trial_there_is_no_winner(tmp_path):
    study = new_study(tmp_path, [create_trial(state=TrialState.FAIL)])
    with pytest.raises(ValueError, match="^no trial has trained yet$"):
        winner(study)


def test_the_fidelity_line_counts_trials_of_the_recipes_epochs(tmp_path):
    # the recipe says 3 epochs; these trials reported 2 (trained under an earlier recipe), so
    # none is full-length: the line counts 0, not the 2 a count by reported epochs would give
    study = new_study(tmp_path, [trained(0.9, "a"), trained(0.8, "b")])
    study.set_user_attr(records.RECIPE, {"seed": 0, "epochs": 3})
    _, _, fidelity = verdict_lines(study)
    assert (
        fidelity
        == "rank fidelity: not enough trials to say (5 full-length trials needed, 0 so far)"
    )


def test_only_confirm_keys_with_a_trial_number_are_confirmations(tmp_path):
    study = new_study(tmp_path, [trained(0.9, "a"), trained(0.8, "b")])
    confirm(study, 1, 0.8, 0.7, 0.75)
    study.set_user_attr("confirm_trial_notes", "kept by hand")  # the prefix, no number
    study.set_user_attr("7", {"seed": 1})  # a number, not the prefix
    assert list(confirmations(study)) == [1]


def test_a_stop_request_ends_a_confirmation_run_after_its_epoch_and_records_nothing(tmp_path):
    splits = load_splits(DataConfig(dataset="synthetic", subset=48))
    architecture = json.dumps(SMALL.to_dict(), separators=(",", ":"))
    study = new_study(tmp_path, [trained(0.5, architecture)])
    recipe = Recipe(epochs=3, batch_size=16, augment="none", flip=False, seed=3)
    with pytest.raises(StopRequested) as stopped:
        confirm_top(study, splits, recipe, Machine(device="cpu"), 1, should_stop=lambda: True)
    assert stopped.value.epoch == 1  # after the first epoch, not after all three
    assert confirmations(study) == {}  # the next run confirms it


def test_a_confirmation_run_that_diverges_is_recorded_as_failed_with_its_reason(tmp_path):
    splits = load_splits(DataConfig(dataset="synthetic", subset=48))
    architecture = json.dumps(SMALL.to_dict(), separators=(",", ":"))
    study = new_study(tmp_path, [trained(0.5, architecture)])
    # Adam moves every weight by about lr in the first step: the second step's loss is not finite
    recipe = Recipe(epochs=2, batch_size=16, augment="none", flip=False, seed=3, lr=1e30)
    assert confirm_top(study, splits, recipe, Machine(device="cpu"), 1) == [0]
    record = confirmations(study)[0]
    assert (record.seed, record.val_accuracy, record.epochs) == (4, 0.0, 2)
    assert record.mean_val_accuracy == 0.25  # (0.5 + 0) / 2: the architecture is not robust
    assert record.note.startswith("non-finite loss: the training loss became nan in epoch 1")
