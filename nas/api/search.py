"""Owns `nas.search(...)` and `nas.load_search(...)`: a search run from Python, and its result.

The configuration is the command line's own dataclasses (`SearchConfig`, `DataConfig`,
`Recipe`, `Machine`) and the stores the same URLs (SQLite, `journal:///PATH`, PostgreSQL), so a
notebook and `nas search` can fill and read one study. Progress is one tqdm bar in its
notebook form under Jupyter (`tqdm.auto`), the console form elsewhere.

Claims:
- `SearchResult.winner` is the trial `nas search` names for the same store (`nas.search.winner`,
  not a copy of its rule); `front` is the report's Pareto front (`nas.search.front`), cheapest
  first; `figures()` are the report's plotly figures (`nas.report.figures.build_figures`).
- `search(...)` with a study that already holds its target trains nothing (a resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from nas import trial_view
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SEARCH_EPOCHS, SearchConfig
from nas.search.choice import load_study
from nas.search.front import front
from nas.search.winner import winner
from nas.store.opening import default_storage, open_storage


@dataclass(frozen=True)
class SearchResult:
    """A study as a search left it, read through the same rules as `nas search`'s summary."""

    study: optuna.Study
    storage: str  # the store's URL, as `nas retrain --storage` takes it

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    @property
    def winner(self) -> FrozenTrial | None:
        """The trial the search names best (None before any trial trained)."""
        try:
            return winner(self.study, self.trials)[0]
        except ValueError:  # nothing trained yet
            return None

    @property
    def winner_score(self) -> float | None:
        """The score the winner was named by: its mean over seeds when confirmed."""
        try:
            return winner(self.study, self.trials)[1]
        except ValueError:
            return None

    @property
    def front(self) -> list[FrozenTrial]:
        """The best trial at every cost (the study's cost: parameters for an accuracy search)."""
        return front(self.trials, trial_view.objective_of(self.study.user_attrs)[1])

    def figures(self) -> dict:
        """The report's plotly figures by key (`history`, `params_vs_accuracy`, ...): show one
        inline with `.show()`, or let Jupyter display it."""
        from nas.report.figures import build_figures

        return build_figures(self.study)

    def write_report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report (the path the study keeps when None) and return its path."""
        from nas.report.page import report_path, write_report

        target = path if path is not None else report_path(self.study, self.storage)
        return write_report(self.study, target, storage=self.storage)


def search(
    config: SearchConfig | None = None,
    data: DataConfig | None = None,
    recipe: Recipe | None = None,
    machine: Machine | None = None,
    *,
    progress: bool = True,
) -> SearchResult:
    """Run (or resume) a search in this process until its study holds `config.trials` trained
    candidates, then return the study read back. Defaults: the command line's (`SearchConfig()`
    on `$NAS_STORAGE` or the SQLite default, CIFAR-10, the search recipe, the best device)."""
    from nas.search.loop import run_search

    config = config or SearchConfig(storage=default_storage())
    recipe = recipe or Recipe(epochs=SEARCH_EPOCHS)
    bar = _Bar(config.trials) if progress else None
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial is on the bar instead
    try:
        study = run_search(
            config,
            data or DataConfig(),
            recipe,
            machine or Machine(),
            on_trial=bar.trial if bar else None,
            announce=bar.note if bar else None,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
        if bar is not None:
            bar.close()
    return SearchResult(study, config.storage)


def load_search(study: str, storage: str | None = None) -> SearchResult:
    """An existing study, read-only (nothing is created): e.g. one `nas search` filled."""
    url = storage or default_storage()
    return SearchResult(load_study(open_storage(url, create=False), study), url)


class _Bar:
    """A tqdm bar of trained candidates, its notebook form under Jupyter."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="trained", unit="candidate")

    def trial(self, outcome, trained: int) -> None:
        accuracy = "-" if outcome.val_accuracy is None else f"{outcome.val_accuracy:.2%}"
        kind = outcome.kind.name.lower()
        self.bar.set_postfix_str(f"trial {outcome.number}: {kind}, val {accuracy}")
        self.bar.update(max(0, trained - self.bar.n))

    def note(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()
