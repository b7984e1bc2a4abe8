"""Owns the retrain: pick an architecture from a study (or take a named one), train it long,
evaluate it once on the test set, write a finished run folder, and record the result on the
study.

A run folder holds `model.safetensors` (the lowest-validation-loss weights), `architecture.json`,
`metrics.json`, `history.csv` (one row per epoch), `curves.html` (loss and accuracy per epoch,
train vs validation) and `checkpoint.ckpt` (resumable state, rewritten atomically every epoch).
Every file is written through `nas.files.write_atomic`.

Claims: the same call after a kill resumes from the last finished epoch; a finished run is not
redone; `should_stop()` (e.g. set by SIGTERM) is checked after each epoch's checkpoint is written
and stops the run with `StopRequested`, so the same call resumes it; the test split is evaluated
once, with the best weights. A retrain of a study inherits the study's data and the recipe
settings a resume keeps (`nas.settings.kept`), never its devices or speed switches. The result
is recorded on the study through Optuna's public API only (`records.retrain_record`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas import records
from nas.arch import Architecture, count_params
from nas.budgets import format_cost
from nas.data import DataConfig, load_splits
from nas.errors import StopRequested, UserError
from nas.files import write_atomic
from nas.front import Pick, pick_trial
from nas.model import RUN_ARCHITECTURE, RUN_WEIGHTS, build_model
from nas.model_card import MODEL_CARD, model_card
from nas.settings import kept_names
from nas.train import HISTORY_COLUMNS, TrainConfig, evaluate, fit, resolve_device, set_seed

RUN_FILES = (
    RUN_WEIGHTS,
    RUN_ARCHITECTURE,
    "metrics.json",
    "history.csv",
    "curves.html",
    "checkpoint.ckpt",
    "MODEL.md",
)
ARTIFACT_FILES = ("curves.html", "metrics.json", "history.csv")  # shown by optuna-dashboard


@dataclass(frozen=True)
class StudyChoice:
    """An architecture picked from a study, with the settings the study recorded."""

    arch: Architecture
    trial: FrozenTrial
    data: dict[str, Any]  # the study's DataConfig as a dict
    recipe: dict[str, Any]  # the study's kept TrainConfig settings
    why: str = ""  # how it was picked, in words


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """An existing study, or a UserError naming the studies the store holds."""
    names = optuna.get_all_study_names(storage)
    if name not in names:
        known = f"the store holds: {', '.join(sorted(names))}" if names else "the store is empty"
        raise UserError(f"there is no study named {name!r}; {known}")
    return optuna.load_study(study_name=name, storage=storage)


def choose_from_study(
    study: optuna.Study, trial_number: int | None = None, pick: Pick | None = None
) -> StudyChoice:
    """Trial `trial_number`, or the trained trial `pick` names (`nas.front`: the most accurate,
    or the cheapest within some points of it), with the study's recorded settings."""
    trials = study.get_trials(deepcopy=False)
    why = f"trial {trial_number}, as asked"
    if trial_number is not None:
        matches = [t for t in trials if t.number == trial_number]
        if not matches:
            raise UserError(
                f"study {study.study_name!r} has no trial {trial_number}; "
                f"its trials are numbered 0 to {len(trials) - 1}"
            )
        trial = matches[0]
        if records.ARCHITECTURE not in trial.user_attrs:
            raise UserError(f"trial {trial_number} recorded no architecture; pick another --trial")
    else:
        # a pruner-stopped trial ranks on fewer epochs, so only trials trained to the end
        cost = records.objective_of(study.user_attrs)[1]
        pick = pick or Pick()
        trial = pick_trial(trials, cost, pick)
        if trial is None:
            raise UserError(
                f"study {study.study_name!r} has no trial trained to the end yet; "
                "run the search (nas search) until one completes"
            )
        why = _pick_words(trial, cost, pick)
    try:
        arch = Architecture.from_json(trial.user_attrs[records.ARCHITECTURE])
    except (KeyError, ValueError, TypeError):
        raise UserError(f"trial {trial.number} holds no readable architecture") from None
    study_recipe = study.user_attrs.get(records.RECIPE, {})
    return StudyChoice(
        arch=arch,
        trial=trial,
        data=dict(study.user_attrs.get(records.DATASET, {})),
        recipe={k: study_recipe[k] for k in kept_names(TrainConfig) if k in study_recipe},
        why=why,
    )


def _pick_words(trial: FrozenTrial, cost: str, pick: Pick) -> str:
    """`the cheapest trial within 1 point of the most accurate: val 93.10 %, 1,234 params`."""
    value = records.cost_of(trial, cost)
    spent = f", {format_cost(cost, value)}" if value is not None else ""
    return f"{pick.describe()}: val accuracy {records.accuracy(trial):.2%}{spent}"


# ---- the run -----------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged summary is rewritten by finishing the run again


def prepare_run_dir(run_dir: Path, arch: Architecture, fresh: bool) -> None:
    """Claim the folder for `arch`; refuse one that holds another architecture's run."""
    if (run_dir.exists() and not run_dir.is_dir()) or any(p.is_file() for p in run_dir.parents):
        raise UserError(f"the run folder {run_dir} is (or lies inside) a file; pass another --out")
    if fresh and run_dir.exists():
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the run folder {run_dir}: {error.strerror}") from None
    arch_file = run_dir / RUN_ARCHITECTURE
    if arch_file.exists():
        try:
            existing = Architecture.from_json(arch_file.read_text())
        except ValueError:
            existing = None
        if existing != arch:
            raise UserError(
                f"{run_dir} holds a run of another architecture; "
                "pass --out with a new folder, or --fresh to overwrite it"
            )
    else:
        write_atomic(arch_file, arch.to_json() + "\n")


def retrain(
    arch: Architecture,
    data: DataConfig,
    recipe: TrainConfig,
    run_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    source: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `arch` with `recipe`, evaluate on the test split, export to `run_dir`.

    Returns the metrics dictionary (also written to metrics.json). A run folder whose metrics
    say it finished `recipe.epochs` epochs is returned as it is, with `"reused": True`.
    `on_epoch(row)` sees every epoch's history row. When `should_stop()` is true after an epoch
    (its checkpoint already written), raises `StopRequested(epoch)`; calling again resumes.
    """
    run_dir = Path(run_dir)
    done = None if fresh else read_metrics(run_dir)
    if done is not None and done.get("epochs_planned") == recipe.epochs:
        return {**done, "reused": True}
    device = resolve_device(recipe.device)  # refuse an unusable device before writing anything
    splits = load_splits(data)
    if arch.num_classes != splits.num_classes:  # e.g. a CIFAR-10 preset trained on CIFAR-100
        arch = dataclasses.replace(arch, num_classes=splits.num_classes)
    prepare_run_dir(run_dir, arch, fresh)
    set_seed(recipe.seed)
    model = build_model(arch)

    def after_epoch(row: dict[str, Any]) -> bool:
        if on_epoch is not None:
            on_epoch(row)
        # fit calls this after the epoch's checkpoint is written: stopping here loses nothing
        if should_stop is not None and should_stop():
            raise StopRequested(row["epoch"])
        return False

    result = fit(
        model,
        splits,
        recipe,
        checkpoint_path=run_dir / "checkpoint.ckpt",
        checkpoint_extra={"architecture": arch.to_dict()},
        progress=progress,
        callback=after_epoch,
    )
    model.load_state_dict(result.best_state)
    test_loss, test_accuracy = evaluate(model, splits.test, splits, recipe, device)
    seconds = sum(row["seconds"] for row in result.history)
    metrics = {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "params": count_params(arch),
        "epochs_completed": result.epochs_completed,
        "epochs_planned": recipe.epochs,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss if result.best_epoch else None,
        # the accuracy of best_epoch (the weights kept), and the highest any epoch reached
        "best_val_accuracy": (
            result.history[result.best_epoch - 1]["val_accuracy"] if result.best_epoch else None
        ),
        "highest_val_accuracy": result.best_val_accuracy,
        "seconds": seconds,
        "seconds_per_epoch": seconds / max(1, result.epochs_completed),
        "device": str(device),
        "classes": list(splits.classes),
        "normalization": {"mean": list(splits.mean), "std": list(splits.std)},
        "config": recipe.to_dict(),
        "dataset": data.to_dict(),
        "source": source or {},
    }
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in result.best_state.items()}
    write_atomic(run_dir / RUN_WEIGHTS, save(state))
    write_atomic(run_dir / "history.csv", history_csv(result.history))
    title = curves_title(arch, metrics)
    write_atomic(run_dir / "curves.html", curves_html(result.history, title=title))
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_atomic(run_dir / MODEL_CARD, model_card(arch, metrics, run_dir))
    return metrics


def history_csv(history: list[dict[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()


def curves_title(arch: Architecture, metrics: dict[str, Any]) -> str:
    """What the curves are of: study and trial (or the named architecture), architecture,
    parameters and test accuracy."""
    source = metrics.get("source") or {}
    if "study" in source:
        what = f"study {source['study']}, trial {source['trial']}"
    else:
        what = str(source.get("arch", "retrain"))
    return (
        f"{what}: {arch.describe()}, {metrics['params']:,} parameters, "
        f"test accuracy {100 * metrics['test_accuracy']:.2f} %"
    )


def curves_html(history: list[dict[str, Any]], title: str) -> str:
    """Loss and accuracy (in percent, as the report and the console show it) per epoch, train
    vs validation, as one self-contained HTML page of a fixed size that reads on any window."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [row["epoch"] for row in history]
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy (%)"))
    for column, metric in ((1, "loss"), (2, "accuracy")):
        scale = 100 if metric == "accuracy" else 1
        for split, dash in (("train", "solid"), ("val", "dash")):
            figure.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[scale * row[f"{split}_{metric}"] for row in history],
                    name=f"{split} {metric}",
                    mode="lines+markers",
                    line={"dash": dash},
                ),
                row=1,
                col=column,
            )
    figure.update_xaxes(title_text="epoch", tick0=1, dtick=max(1, len(epochs) // 10))
    figure.update_yaxes(title_text="%", ticksuffix=" %", row=1, col=2)
    figure.update_layout(
        title={"text": title, "font": {"size": 15}},
        template="plotly_white",
        width=1100,
        height=450,
        autosize=False,
    )
    return figure.to_html(include_plotlyjs=True, full_html=True, default_width="1100px")


# ---- recording on the study --------------------------------------------------------------


def record_in_study(
    study: optuna.Study,
    trial: FrozenTrial,
    metrics: dict[str, Any],
    run_dir: Path,
    artifact_dir: Path | None,
) -> None:
    """Record the retrain's test accuracy and run folder on the study (a finished trial is
    immutable in Optuna), and attach the run's curves, metrics and history as study artifacts
    named `trial-<n>-<file>` for optuna-dashboard.

    Recording the same finished run again (a rerun that found it done) uploads nothing twice."""
    key = records.retrain_key(trial.number)
    record = {
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        "run_dir": str(run_dir),
        "epochs": metrics["epochs_completed"],
    }
    already_uploaded = study.user_attrs.get(key) == {**record, "artifacts": True}
    upload = artifact_dir is not None and not already_uploaded
    if upload:
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        artifact_dir.mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(str(artifact_dir))
        with tempfile.TemporaryDirectory() as folder:
            for name in ARTIFACT_FILES:
                # an artifact is named by its file: say which trial's run it comes from
                named = Path(folder) / f"trial-{trial.number}-{name}"
                shutil.copyfile(run_dir / name, named)
                upload_artifact(artifact_store=store, file_path=str(named), study_or_trial=study)
    study.set_user_attr(key, {**record, "artifacts": upload or already_uploaded})
