"""What a retrain of a study takes from the study (nas.search.choice, through `nas retrain
--study`): the recipe settings a resume keeps, never the devices or speed switches of the
machine that searched. The study is written through Optuna itself, with a recipe whose every
setting differs from the default."""

from __future__ import annotations

import dataclasses
import json

import optuna

from nas import records
from nas.arch.architecture import Architecture
from nas.cli.main import retrain_main
from nas.config.fields import kept_names
from nas.config.machine import Machine
from nas.config.recipe import Recipe

from helpers import run_in_process

KEPT_BY_THE_STUDY = {  # every setting a resume keeps, none at its default
    "epochs": 40, "batch_size": 16, "optimizer": "sgd", "lr": 0.02, "momentum": 0.8,
    "weight_decay": 1e-4, "lr_factor": 0.5, "lr_patience": 3, "augment": "basic",
    "policy": "svhn", "flip": False,
}  # fmt: skip
MACHINE_OF_THE_STUDY = {  # the searching machine's switches: a retrain elsewhere takes none
    "seed": 99, "device": "cuda:7", "workers": 3, "precision": "fp16", "channels_last": True,
    "data_path": "loader", "eval_batch_size": 7, "chunk_size": 96, "compile": True,
}  # fmt: skip


def test_a_retrain_inherits_the_kept_recipe_and_none_of_the_machine_switches(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    data = {"dataset": "synthetic", "synthetic_size": 100, "synthetic_classes": 3}
    study.set_user_attr(records.DATASET, data)
    study.set_user_attr(records.RECIPE, {**KEPT_BY_THE_STUDY, **MACHINE_OF_THE_STUDY})
    arch = Architecture((8, 8), (1, 1), stem=8, num_classes=3)
    study.add_trial(
        optuna.trial.create_trial(
            value=0.5, user_attrs={records.ARCHITECTURE: arch.to_json(), records.TRAINED: True}
        )
    )
    fields = {field.name for field in dataclasses.fields(Recipe)}
    machine_fields = {field.name for field in dataclasses.fields(Machine)}
    assert set(KEPT_BY_THE_STUDY) == set(kept_names(Recipe))  # every kept setting, ...
    # ... and the rest: the seed and every machine setting (recorded with the recipe, as
    # earlier releases did; gpu_shared_by came after them and is never in a study's record)
    recorded_machine = machine_fields - {"gpu_shared_by"}
    assert set(MACHINE_OF_THE_STUDY) == (fields - set(kept_names(Recipe))) | recorded_machine
    run_dir = tmp_path / "run"
    argv = ["--storage", url, "--study", "s", "--trial", "0", "--epochs", "1"]
    status, out, err = run_in_process(retrain_main, [*argv, "--out", str(run_dir)])
    assert status == 0, out + err
    used = json.loads((run_dir / "metrics.json").read_text())["config"]
    assert {key: used[key] for key in KEPT_BY_THE_STUDY} == {**KEPT_BY_THE_STUDY, "epochs": 1}
    defaults = {**Recipe().to_dict(), **Machine().to_dict()}
    assert {key: used[key] for key in MACHINE_OF_THE_STUDY} == {
        key: defaults[key] for key in MACHINE_OF_THE_STUDY
    }


def test_the_best_pick_of_a_confirmed_search_is_the_winner_it_named(tmp_path):
    from nas.search.choice import choose_from_study

    study = _study_of(tmp_path, [(0.96, 4), (0.94, 8), (0.90, 12)])
    # trial 0's single run was the luckiest (0.96; 0.88 with the second seed: mean 0.92);
    # trial 1 is steadier (0.94, 0.93: mean 0.935) and is the winner the search named
    confirmed = {"seed": 1, "epochs": 1, "seconds": 1.0}
    study.set_user_attr(
        records.confirm_key(0),
        {**confirmed, "val_accuracy": 0.88, "first_val_accuracy": 0.96, "mean_val_accuracy": 0.92},
    )
    study.set_user_attr(
        records.confirm_key(1),
        {**confirmed, "val_accuracy": 0.93, "first_val_accuracy": 0.94, "mean_val_accuracy": 0.935},
    )
    choice = choose_from_study(study)
    assert choice.trial.number == 1
    assert "the search's winner: val accuracy 93.50% (the mean of 2 runs)" in choice.why


def _study_of(tmp_path, runs) -> optuna.Study:
    """A study whose trials trained to the end: (val accuracy, width) each, 1-layer nets."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", direction="maximize")
    for value, width in runs:
        arch = Architecture((width,), (1,), conv_kernel=3, skip_kernel=1, stem=4)
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                intermediate_values={1: value},
                user_attrs={
                    records.TRAINED: True,
                    records.EPOCHS: 1,
                    records.ARCHITECTURE: arch.to_json(),
                    records.PARAMS: 1000 * width,
                },
            )  # fmt: skip
        )
    return study


def test_each_pick_says_which_trial_and_why_in_words(tmp_path):
    from nas.search.choice import choose_from_study
    from nas.search.front import Pick

    study = _study_of(tmp_path, [(0.95, 16), (0.945, 8), (0.90, 4)])
    # unconfirmed: the winner by its one run
    best = choose_from_study(study)
    assert best.trial.number == 0
    assert best.why == "the search's winner: val accuracy 95.00% (one run)"
    # the cheapest within 1 point of 95 %: trial 1 (94.5 %, 8,000 params), not the winner
    within = choose_from_study(study, pick=Pick("smallest-within", 1.0))
    assert within.trial.number == 1
    assert within.why == (
        "the cheapest trial within 1 accuracy point of the most accurate: val accuracy 94.50%, "
        "8,000 params"
    )


def test_a_pareto_study_picks_by_its_front_not_by_a_single_winner(tmp_path):
    from nas.search.choice import choose_from_study

    study = _study_of(tmp_path, [(0.95, 16), (0.945, 8)])
    study.set_user_attr(records.OBJECTIVE, {"objective": "pareto", "minimize": "params"})
    best = choose_from_study(study)
    assert best.trial.number == 0
    assert best.why == "the most accurate trial: val accuracy 95.00%, 16,000 params"


def test_a_study_with_nothing_trained_to_the_end_is_one_sentence(tmp_path):
    import pytest

    from nas.errors import UserError
    from nas.search.choice import choose_from_study

    study = optuna.create_study(
        study_name="empty", storage=f"sqlite:///{tmp_path / 'e.db'}", direction="maximize"
    )
    with pytest.raises(UserError) as refused:
        choose_from_study(study)
    assert str(refused.value) == (
        "study 'empty' has no trial trained to the end yet; run the search (nas search) until "
        "one completes"
    )


def test_a_study_the_store_does_not_hold_is_one_sentence_naming_what_it_holds(tmp_path):
    import pytest

    from nas.errors import UserError
    from nas.search.choice import load_study

    url = f"sqlite:///{tmp_path / 'n.db'}"
    with pytest.raises(UserError) as empty:
        load_study(url, "c")
    assert str(empty.value) == "there is no study named 'c'; the store is empty"
    for name in ("b", "a"):
        optuna.create_study(study_name=name, storage=url)
    with pytest.raises(UserError) as missing:
        load_study(url, "c")
    assert str(missing.value) == "there is no study named 'c'; the store holds: a, b"
    assert load_study(url, "b").study_name == "b"  # of two, the one named


def test_a_trial_asked_for_by_number_that_cannot_be_retrained_is_one_sentence(tmp_path):
    import pytest

    from nas.errors import UserError
    from nas.search.choice import choose_from_study

    study = _study_of(tmp_path, [(0.9, 4), (0.8, 8), (0.7, 12)])
    study.add_trial(optuna.trial.create_trial(value=0.5))  # trial 3: no architecture
    study.add_trial(  # trial 4: an architecture that does not parse
        optuna.trial.create_trial(value=0.5, user_attrs={records.ARCHITECTURE: "{broken"})
    )
    for number, message in (
        (7, f"study {study.study_name!r} has no trial 7; its trials are numbered 0 to 4"),
        (3, "trial 3 recorded no architecture; pick another --trial"),
        (4, "trial 4 holds no readable architecture"),
    ):
        with pytest.raises(UserError) as refused:
            choose_from_study(study, trial_number=number)
        assert str(refused.value) == message
    assert choose_from_study(study, trial_number=1).why == "trial 1, as asked"


def test_a_pick_whose_trial_recorded_no_cost_says_only_its_accuracy(tmp_path):
    from nas.search.choice import choose_from_study

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize")
    arch = Architecture((4,), (1,), conv_kernel=3, skip_kernel=1, stem=4)
    study.add_trial(  # as an earlier version recorded it: no params
        optuna.trial.create_trial(
            value=0.95,
            intermediate_values={1: 0.95},
            user_attrs={
                records.TRAINED: True,
                records.EPOCHS: 1,
                records.ARCHITECTURE: arch.to_json(),
            },
        )  # fmt: skip
    )
    study.set_user_attr(records.OBJECTIVE, {"objective": "pareto", "minimize": "params"})
    assert choose_from_study(study).why == "the most accurate trial: val accuracy 95.00%"
