"""Creating and resuming a study (nas.search.study_setup) against studies as earlier versions of the
tool wrote them: created here through Optuna itself, with the attributes those versions set."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest

from nas import records
from nas.arch.space import SearchSpace
from nas.config.data import DataConfig
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.errors import UserError
from nas.search.loop import open_study
from nas.search.study_setup import study_record

TINY = Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml"
DATA = DataConfig(dataset="synthetic", subset=48, image_size=32)  # as every study records it
RECIPE = Recipe(epochs=1, batch_size=16, augment="none")


def earlier_version_study(url: str, budget: int) -> dict:
    """A study as the version before budgets and objectives wrote it: a parameter budget, the
    space, data and recipe, no `budgets` or `objective` record. Its attributes."""
    study = optuna.create_study(study_name="old", storage=url, direction="maximize")
    attrs = {
        records.BUDGET: budget,
        records.SPACE_FILE: str(TINY),
        records.SPACE_TEXT: SearchSpace.load(TINY).text,
        records.DATASET: DATA.to_dict(),
        records.RECIPE: RECIPE.to_dict(),
        records.SEARCH: {"sampler": "tpe", "pruner": "median", "seed": 0},
        records.TOOL_VERSION: "0.0.9",
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={records.TRAINED: True}))
    return attrs


def test_a_study_of_the_earlier_version_resumes_with_its_budget_and_objective(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    attrs = earlier_version_study(url, 8000)
    config = SearchConfig(space=str(TINY), budget=8000, storage=url, study="old")
    space = SearchSpace.load(TINY)
    study = open_study(config, space, DATA, RECIPE, num_classes=10, image_size=32)
    assert study.user_attrs == attrs  # resumed as it is: nothing recorded over it
    assert len(study.trials) == 1
    other = SearchConfig(space=str(TINY), budget=8000, storage=url, study="old", objective="pareto")
    with pytest.raises(UserError, match="was created with"):
        open_study(other, space, DATA, RECIPE, num_classes=10, image_size=32)


def a_record_without_its_budget(url: str, seed: int) -> optuna.Study:
    """A study as its creator leaves it midway through its record: every attribute but the
    budget, which `study_record` writes last (the creator's sampler seed `seed` tells it apart)."""
    study = optuna.create_study(study_name="new", storage=url, direction="maximize")
    creator = SearchConfig(space=str(TINY), budget=8000, storage=url, study="new", seed=seed)
    record = study_record(creator, SearchSpace.load(TINY), DATA, RECIPE)
    for key, value in record.items():
        if key != records.BUDGET:
            study.set_user_attr(key, value)
    return study


def test_a_study_another_process_is_recording_is_resumed_once_its_record_is_complete(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = a_record_without_its_budget(url, seed=7)
    finish = threading.Timer(1.0, study.set_user_attr, (records.BUDGET, 8000))
    finish.start()
    try:
        config = SearchConfig(space=str(TINY), budget=8000, storage=url, study="new", seed=0)
        opened = open_study(
            config, SearchSpace.load(TINY), DATA, RECIPE, num_classes=10, image_size=32
        )
    finally:
        finish.join()
    # resumed the creator's record: its seed, not this process's, and nothing written over it
    assert opened.user_attrs[records.SEARCH]["seed"] == 7
    assert opened.user_attrs[records.BUDGET] == 8000


def test_a_record_whose_creator_died_midway_is_written_by_the_next_run(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    a_record_without_its_budget(url, seed=7)
    config = SearchConfig(space=str(TINY), budget=8000, storage=url, study="new", seed=0)
    opened = open_study(
        config, SearchSpace.load(TINY), DATA, RECIPE, num_classes=10, image_size=32,
        record_wait=0.3,
    )  # fmt: skip
    assert opened.user_attrs[records.BUDGET] == 8000
    assert opened.user_attrs[records.SEARCH]["seed"] == 0  # this run's record


@pytest.mark.parametrize(
    "num_classes, image_size, budgets, fits",
    [
        # paper-model1: 4,951,338 parameters with 10 classes; 784.2M MACs per 32-px image
        (10, 32, {"params": 5_000_000, "macs": 1_000_000_000}, True),
        # at 64 px every layer holds 4x the pixels: 3,136.8M MACs, over a 1G MAC budget
        (10, 64, {"params": 5_000_000, "macs": 1_000_000_000}, False),
        # 100 classes: the head grows by 90 x 257 = 23,130 parameters, over a 4.96M budget
        (10, 32, {"params": 4_960_000}, True),
        (100, 32, {"params": 4_960_000}, False),
    ],
)
def test_the_warm_start_counts_the_reference_models_with_the_data_s_classes_and_size(
    num_classes, image_size, budgets, fits
):
    from nas.costs.budgets import Budgets
    from nas.search.warm_start import warm_start_models

    space = SearchSpace.resolve("resnet")
    names = [
        name for name, _ in warm_start_models(space, Budgets(**budgets), num_classes, image_size)
    ]
    assert ("paper-model1" in names) == fits
