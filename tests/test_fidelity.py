"""Rank fidelity (nas.search.fidelity) on real SQLite studies built with Optuna's public API: which
trials it compares, Kendall's tau-b against scipy and a hand computation, the advice line."""

from __future__ import annotations

import math
import random

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial
from scipy.stats import kendalltau

from nas import records
from nas.search import fidelity

EPOCHS = 6


def new_study(tmp_path, epochs: int | None = EPOCHS) -> optuna.Study:
    study = optuna.create_study(
        study_name="fidelity", storage=f"sqlite:///{tmp_path / 'nas.db'}", direction="maximize"
    )
    if epochs is not None:
        study.set_user_attr(records.RECIPE, {"epochs": epochs, "batch_size": 64})
    return study


def add_trained(study: optuna.Study, curve: list[float], **attrs) -> None:
    """A candidate that trained every epoch of `curve` to the end (COMPLETE)."""
    values = {epoch: value for epoch, value in enumerate(curve, start=1)}
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=max(curve),
            intermediate_values=values,
            user_attrs={records.TRAINED: True, records.EPOCHS: len(curve), **attrs},
        )
    )


def add_excluded(study: optuna.Study) -> None:
    """Every kind of trial that has no full-length curve of its own, each with a curve that
    would change the taus if it were counted."""
    disruptive = {epoch: 0.99 - 0.1 * epoch for epoch in range(1, EPOCHS + 1)}
    study.add_trial(  # stopped by the pruner after 2 epochs
        create_trial(
            state=TrialState.PRUNED,
            intermediate_values={1: 0.99, 2: 0.01},
            user_attrs={records.TRAINED: True, records.EPOCHS: 2},
        )
    )
    add_trained(study, [0.99, 0.01, 0.5])  # complete but short: from another recipe
    study.add_trial(  # rejected over budget (no epochs) ...
        create_trial(state=TrialState.PRUNED, user_attrs={records.OVER_BUDGET_BY: 10})
    )
    study.add_trial(  # ... a duplicate carrying a full curve ...
        create_trial(
            state=TrialState.COMPLETE,
            value=0.99,
            intermediate_values=disruptive,
            user_attrs={records.DUPLICATE_OF: 0},
        )
    )
    study.add_trial(  # ... and a trial whose training broke in the last epoch
        create_trial(state=TrialState.FAIL, intermediate_values=disruptive)
    )
    nan_curve = [0.5] * (EPOCHS - 1) + [float("nan")]
    study.add_trial(  # a complete trial with a NaN epoch
        create_trial(
            state=TrialState.COMPLETE,
            value=0.5,
            intermediate_values=dict(enumerate(nan_curve, start=1)),
            user_attrs={records.TRAINED: True},
        )
    )


def test_kendall_tau_b_by_hand():
    # x = 1 2 3 4, y = 1 3 2 4: pairs (2,3) discordant, the other five concordant: (5-1)/6
    assert fidelity.kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # ties: x = 1 1 2 3, y = 1 2 2 3. Pair (0,1) tied in x, (1,2) tied in y, the other four
    # concordant: 4 / sqrt((6-1) * (6-1)) = 0.8 (tau-a would say 4/6)
    assert fidelity.kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert fidelity.kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert fidelity.kendall_tau_b([1, 1, 1], [1, 2, 3]) is None  # no untied pair in x
    assert fidelity.kendall_tau_b([1], [1]) is None
    with pytest.raises(ValueError):
        fidelity.kendall_tau_b([1, 2], [1, 2, 3])


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_b_matches_scipy_with_ties(seed):
    rng = random.Random(seed)
    size = rng.randint(2, 40)
    x = [rng.choice([0.1, 0.2, 0.3, 0.4, 0.5]) for _ in range(size)]  # many ties
    y = [value + rng.choice([-0.1, 0.0, 0.0, 0.2]) for value in x]
    expected = kendalltau(x, y, variant="b").statistic
    ours = fidelity.kendall_tau_b(x, y)
    assert (ours is None) if math.isnan(expected) else ours == pytest.approx(expected)


def test_only_full_length_trained_trials_count_and_taus_are_known_by_hand(tmp_path):
    study = new_study(tmp_path)
    add_excluded(study)
    # five candidates: epoch 1 ranks them in reverse, from epoch 2 on in the final order
    for i in range(5):
        add_trained(study, [0.5 - 0.01 * i] + [0.6 + 0.01 * i + 0.02 * e for e in range(5)])
    result = fidelity.study_fidelity(study)
    assert result.epochs == EPOCHS
    assert result.trials == 5
    assert result.trial_numbers == tuple(range(6, 11))  # the 6 trials before are excluded
    assert result.taus == pytest.approx((-1.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    assert result.agreeing_epoch() == 2
    assert result.advice() == (
        "ranking at epoch 2 already agrees with epoch 6 at tau >= 0.9 (tau 1.00) over 5 trials: "
        "--epochs 2 would have ranked these candidates the same"
    )


def curves_with_ties(count: int, seed: int) -> list[list[float]]:
    """Noisy learning curves on a coarse grid (a 50-image validation split): ties are common,
    and some curves fall after their peak, so the best-so-far differs from the epoch's value."""
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(count):
        skill = rng.uniform(0.5, 0.9)
        curve = skill * (1 - np.exp(-np.arange(1, EPOCHS + 1) / 2)) + rng.normal(0, 0.05, EPOCHS)
        curves.append([round(float(v) * 50) / 50 for v in np.clip(curve, 0, 1)])
    return curves


@pytest.mark.parametrize("running_best", [True, False])
def test_taus_match_scipy_on_a_study(tmp_path, running_best):
    study = new_study(tmp_path)
    curves = curves_with_ties(14, seed=3)
    for curve in curves:
        add_trained(study, curve)
    add_excluded(study)
    result = fidelity.study_fidelity(study, running_best=running_best)
    assert result.trials == 14
    scores = np.array(curves)
    if running_best:
        scores = np.maximum.accumulate(scores, axis=1)
    assert (scores[:, :-1] != np.array(curves)[:, :-1]).any() == running_best  # cases differ
    for epoch in range(1, EPOCHS + 1):
        expected = kendalltau(scores[:, epoch - 1], scores[:, -1], variant="b").statistic
        assert result.tau_at(epoch) == pytest.approx(expected), epoch
    assert result.tau_at(EPOCHS) == pytest.approx(1.0)


def test_not_enough_trials(tmp_path):
    study = new_study(tmp_path)
    add_excluded(study)
    for curve in curves_with_ties(3, seed=0):
        add_trained(study, curve)
    result = fidelity.study_fidelity(study)
    assert result.trials == 3
    assert result.agreeing_epoch() is None
    assert result.advice() == "not enough trials to say (5 full-length trials needed, 3 so far)"
    assert fidelity.rank_fidelity([]).advice() == (
        "not enough trials to say (5 full-length trials needed, 0 so far)"
    )


def test_ties_undefined_taus_and_no_agreement(tmp_path):
    study = new_study(tmp_path, epochs=4)
    # epoch 1: every candidate at chance (tau undefined); epoch 3 reverses two pairs of five
    for final, third in zip([0.60, 0.70, 0.80, 0.90, 0.95], [0.58, 0.57, 0.79, 0.78, 0.90]):
        add_trained(study, [0.1, 0.3, third, final])
    result = fidelity.study_fidelity(study, running_best=False)
    # epoch 3 against 4: 10 pairs, (0,1) and (2,3) discordant: (8 - 2) / 10
    assert result.taus[0] is None
    assert result.taus[2] == pytest.approx(0.6)
    assert result.agreeing_epoch() is None
    assert result.advice() == (
        "no ranking before epoch 4 agrees with epoch 4 at tau >= 0.9 over 5 trials "
        "(epoch 3: tau 0.60): fewer epochs would have ranked these candidates differently"
    )


def test_every_final_accuracy_tied(tmp_path):
    study = new_study(tmp_path, epochs=3)
    for start in (0.2, 0.3, 0.4, 0.5, 0.6):
        add_trained(study, [start, 0.7, 0.8])
    result = fidelity.study_fidelity(study)
    assert result.taus[-1] is None
    assert "end with the same validation accuracy at epoch 3" in result.advice()


def test_epochs_fall_back_to_the_longest_trained_curve(tmp_path):
    study = new_study(tmp_path, epochs=None)  # a study without a recorded recipe
    for i in range(5):
        add_trained(study, [0.5 + 0.01 * i, 0.6 + 0.01 * i, 0.7 + 0.01 * i])
    add_trained(study, [0.9, 0.1])  # shorter than the longest: excluded
    result = fidelity.study_fidelity(study)
    assert (result.epochs, result.trials) == (3, 5)
    assert result.agreeing_epoch() == 1


def test_figure(tmp_path):
    study = new_study(tmp_path)
    for curve in curves_with_ties(8, seed=1):
        add_trained(study, curve)
    result = fidelity.study_fidelity(study)
    figure = fidelity.fidelity_figure(result)
    (trace,) = figure.data
    assert list(trace.x) == list(range(1, EPOCHS + 1))
    assert list(trace.y) == list(result.taus)
    assert figure.layout.title.text is None
    assert figure.layout.xaxis.dtick == 1
    assert tuple(figure.layout.yaxis.range) == (-1.05, 1.05)
    (line,) = figure.layout.shapes
    assert (line.y0, line.y1, line.line.dash) == (0.9, 0.9, "dash")
