"""Owns `nas.retrain(...)`: a study's trial (the winner unless another is named) retrained from
Python as `nas retrain --study` does it: the study's data and kept recipe settings inherited,
the run folder written, the result recorded on the study and its report refreshed.

Claims: with no `trial`, the trial retrained is the search's winner (`nas.search.choice`'s
`--pick best`), and the study records the retrain's test accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.api.search import SearchResult, load_search
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.run.folder import RunMetrics
from nas.run.retrain import record_in_study
from nas.run.retrain import retrain as train_run
from nas.search.choice import choose_from_study
from nas.search.front import Pick
from nas.store.opening import artifact_dir, display_url


def retrain(
    result: SearchResult | str,
    trial: int | None = None,
    *,
    storage: str | None = None,
    out: str | Path | None = None,
    epochs: int = Recipe.epochs,
    recipe: dict[str, Any] | None = None,
    machine: Machine | None = None,
    progress: bool = True,
) -> RunMetrics:
    """Retrain trial `trial` of a study (a `SearchResult`, or a study's name in `storage`), by
    default the search's winner, for `epochs` epochs into `out` (default
    `runs/<study>/trial-<n>`); `recipe` changes settings of the inherited recipe. Returns the
    run's metrics; `nas.load_model(out)` loads the model."""
    if isinstance(result, str):
        result = load_search(result, storage)
    study = result.study
    choice = choose_from_study(study, trial, Pick() if trial is None else None)
    number = choice.trial.number
    run_dir = Path(out or Path("runs") / study.study_name / f"trial-{number}")
    settings = {**choice.recipe, **(recipe or {}), "epochs": epochs}
    source = {"study": study.study_name, "storage": display_url(result.storage), "trial": number}
    done = train_run(
        choice.arch,
        DataConfig.from_dict(choice.data) if choice.data else DataConfig(),
        Recipe.from_dict(settings),
        machine or Machine(),
        run_dir,
        progress=progress,
        source=source,
    )
    record_in_study(study, choice.trial, done.metrics, run_dir, artifact_dir(result.storage))
    result.write_report()
    return done.metrics
