"""nas.search.samplers.FidelityPruner: the median rule, only from the epoch the study's own rank
fidelity trusts (real Optuna studies on SQLite; trials added with their per-epoch curves)."""

from __future__ import annotations

import optuna
from optuna.trial import create_trial

from nas import records
from nas.search.samplers import FidelityPruner, make_pruner

EPOCHS = 3


def full_trial(curve: list[float]) -> optuna.trial.FrozenTrial:
    return create_trial(
        value=max(curve),
        intermediate_values=dict(enumerate(curve, start=1)),
        user_attrs={records.TRAINED: True, records.EPOCHS: len(curve)},
    )


def study_with(tmp_path, curves) -> optuna.Study:
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'p.db'}",
        direction="maximize",
        pruner=make_pruner("fidelity", EPOCHS),
    )
    for curve in curves:
        study.add_trial(full_trial(curve))
    return study


def poor_start(study: optuna.Study, step: int = 1) -> bool:
    """A new trial far below every other at `step`: would the pruner stop it?"""
    trial = study.ask()
    for epoch in range(1, step + 1):
        trial.report(0.01, epoch)
    return trial.should_prune()


# epoch 1 ranks these five exactly as epoch 3 does (tau 1 at every epoch)
AGREEING = [[0.1 * i, 0.1 * i + 0.05, 0.1 * i + 0.08] for i in range(1, 6)]
# epoch 1 ranks them in reverse of epoch 3; epoch 2 as epoch 3
REVERSED_AT_1 = [[0.5 - 0.1 * i, 0.1 * i, 0.1 * i + 0.01] for i in range(5)]


def test_make_pruner_builds_it():
    assert isinstance(make_pruner("fidelity", EPOCHS), FidelityPruner)


def test_it_prunes_from_the_first_epoch_the_study_says_ranks_like_the_last(tmp_path):
    study = study_with(tmp_path, AGREEING)
    assert FidelityPruner(EPOCHS).trusted_epoch(study) == 1
    assert poor_start(study)


def test_it_waits_for_the_epoch_that_agrees(tmp_path):
    study = study_with(tmp_path, REVERSED_AT_1)
    assert FidelityPruner(EPOCHS).trusted_epoch(study) == 2
    assert not poor_start(study, step=1)
    assert poor_start(study, step=2)


def test_it_prunes_nothing_before_enough_full_length_trials(tmp_path):
    study = study_with(tmp_path, AGREEING[:4])  # nas.search.fidelity needs 5 to say anything
    assert FidelityPruner(EPOCHS).trusted_epoch(study) is None
    assert not poor_start(study)


def test_trials_cut_short_of_the_recipes_epochs_are_not_full_length(tmp_path):
    # five trials the time limit stopped after 2 of 3 epochs: no full-length trial yet
    study = study_with(tmp_path, [curve[:2] for curve in AGREEING])
    assert FidelityPruner(EPOCHS).trusted_epoch(study) is None
    assert not poor_start(study)


def test_a_trial_at_its_last_epoch_is_never_pruned(tmp_path):
    # the median rule would stop it (far below every other): a finished run is kept
    study = study_with(tmp_path, AGREEING)
    assert poor_start(study, step=EPOCHS - 1)  # one epoch before the last: pruned
    assert not poor_start(study, step=EPOCHS)
