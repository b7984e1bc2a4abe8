"""Owns the retrain: rebuild the best (or a named) architecture, train it long, evaluate it once
on the test set, and export a finished run folder.

A run folder holds `model.safetensors` (the lowest-validation-loss weights), `architecture.json`,
`metrics.json`, `history.csv` (one row per epoch), `curves.html` (loss and accuracy per epoch,
train vs validation) and `checkpoint.ckpt` (resumable state, rewritten atomically every epoch).

Claims: the same call after a kill resumes from the last finished epoch; a finished run is not
redone; `should_stop()` (e.g. set by SIGTERM) is checked after each epoch's checkpoint is written
and stops the run with `StopRequested`, so the same call resumes it; the test split is evaluated
once, with the best weights; `load_model(run_dir)` returns
the exported model in eval mode. The result is written back to the study's trial.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from nas.arch import Architecture, count_params
from nas.data import DataConfig, load_splits
from nas.errors import UserError
from nas.model import build_model
from nas.search import StopRequested
from nas.train import HISTORY_COLUMNS, TrainConfig, evaluate, fit, resolve_device, set_seed

RUN_FILES = (
    "model.safetensors",
    "architecture.json",
    "metrics.json",
    "history.csv",
    "curves.html",
    "checkpoint.ckpt",
)


@dataclass(frozen=True)
class StudyChoice:
    """An architecture picked from a study, with the settings the study recorded."""

    arch: Architecture
    trial: FrozenTrial
    data: dict[str, Any]  # the study's DataConfig as a dict
    recipe: dict[str, Any]  # the study's TrainConfig as a dict


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        known = f"the store holds: {', '.join(names)}" if names else "the store holds no study"
        raise UserError(f"there is no study named {name!r}; {known}") from None


def choose_from_study(study: optuna.Study, trial_number: int | None = None) -> StudyChoice:
    """The best finished trial, or trial `trial_number`, with the study's recorded settings."""
    trials = study.get_trials(deepcopy=False)
    if trial_number is not None:
        matches = [t for t in trials if t.number == trial_number]
        if not matches:
            raise UserError(
                f"study {study.study_name!r} has no trial {trial_number}; "
                f"its trials are numbered 0 to {len(trials) - 1}"
            )
        trial = matches[0]
        if "architecture" not in trial.user_attrs:
            raise UserError(f"trial {trial_number} recorded no architecture; pick another --trial")
    else:
        finished = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if not finished:
            raise UserError(
                f"study {study.study_name!r} has no finished trial yet; "
                "run scripts/search.py until one completes"
            )
        trial = max(finished, key=lambda t: (t.value, -t.number))
    try:
        arch = Architecture.from_json(trial.user_attrs["architecture"])
    except (KeyError, ValueError, TypeError):
        raise UserError(f"trial {trial.number} holds no readable architecture") from None
    return StudyChoice(
        arch=arch,
        trial=trial,
        data=dict(study.user_attrs.get("dataset", {})),
        recipe=dict(study.user_attrs.get("recipe", {})),
    )


# ---- the run ----------------------------------------------------------------------------------


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
    arch_file = run_dir / "architecture.json"
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
        _write_text(arch_file, arch.to_json() + "\n")


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
) -> dict[str, Any]:
    """Train `arch` with `recipe`, evaluate on the test split, export to `run_dir`.

    Returns the metrics dictionary (also written to metrics.json). A run folder whose metrics
    say it finished `recipe.epochs` epochs is returned as it is, with `"reused": True`.
    When `should_stop()` is true after an epoch (its checkpoint already written), raises
    `StopRequested(epoch)`; calling again resumes after that epoch.
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
        if progress:  # a line per epoch stays on screen: a long run can be read back
            tqdm.write(
                f"epoch {row['epoch']:>3}/{recipe.epochs}  train {row['train_loss']:.4f} "
                f"{row['train_accuracy']:.2%}  val {row['val_loss']:.4f} "
                f"{row['val_accuracy']:.2%}  lr {row['lr']:.0e}  {row['seconds']:.1f} s"
            )
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
        "best_val_accuracy": result.best_val_accuracy,
        "seconds": seconds,
        "seconds_per_epoch": seconds / max(1, result.epochs_completed),
        "device": str(device),
        "classes": list(splits.classes),
        "normalization": {"mean": list(splits.mean), "std": list(splits.std)},
        "config": recipe.to_dict(),
        "dataset": data.to_dict(),
        "source": source or {},
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in result.best_state.items()}
    save_file(state, str(run_dir / "model.safetensors"))
    write_history_csv(run_dir / "history.csv", result.history)
    write_curves(run_dir / "curves.html", result.history, title=arch.describe())
    _write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def write_history_csv(path: Path, history: list[dict[str, Any]]) -> None:
    temporary = path.with_suffix(".csv.tmp")
    with temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    os.replace(temporary, path)


def write_curves(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """Loss and accuracy per epoch, train vs validation, as one self-contained HTML file."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [row["epoch"] for row in history]
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for column, metric in ((1, "loss"), (2, "accuracy")):
        for split, dash in (("train", "solid"), ("val", "dash")):
            figure.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[row[f"{split}_{metric}"] for row in history],
                    name=f"{split} {metric}",
                    mode="lines+markers",
                    line={"dash": dash},
                ),
                row=1,
                col=column,
            )
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(title=title, template="plotly_white")
    temporary = path.with_suffix(".html.tmp")
    figure.write_html(str(temporary), include_plotlyjs=True, full_html=True)
    os.replace(temporary, path)


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The exported model of a run folder, in eval mode with its best weights."""
    run_dir = Path(run_dir)
    try:
        arch = Architecture.from_json((run_dir / "architecture.json").read_text())
        state = load_file(str(run_dir / "model.safetensors"), device=str(device))
    except FileNotFoundError as error:
        raise UserError(
            f"{run_dir} is not a finished run folder: {Path(error.filename).name} is missing"
        ) from None
    model = build_model(arch).to(device)
    model.load_state_dict(state)
    return model.eval()


# ---- writing back to the study ------------------------------------------------------------------


def record_in_study(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial: FrozenTrial,
    metrics: dict[str, Any],
    run_dir: Path,
    artifact_dir: Path | None,
) -> None:
    """Put the test accuracy and run folder on the trial, and the run's files as artifacts.

    Recording the same finished run again (a rerun that found it done) uploads nothing twice."""
    key = f"retrain_trial_{trial.number}"
    record = {"test_accuracy": metrics["test_accuracy"], "run_dir": str(run_dir)}
    already_uploaded = study.user_attrs.get(key) == {**record, "artifacts": True}
    upload = artifact_dir is not None and not already_uploaded
    with _finished_trial_updates(storage):
        storage.set_trial_user_attr(trial._trial_id, "test_accuracy", metrics["test_accuracy"])
        storage.set_trial_user_attr(trial._trial_id, "run_dir", str(run_dir))
        if upload:
            from optuna.artifacts import FileSystemArtifactStore, upload_artifact

            artifact_dir.mkdir(parents=True, exist_ok=True)
            store = FileSystemArtifactStore(str(artifact_dir))
            for name in ("curves.html", "metrics.json", "history.csv"):
                upload_artifact(
                    artifact_store=store,
                    file_path=str(run_dir / name),
                    study_or_trial=trial,
                    storage=storage,
                )
    study.set_user_attr(key, {**record, "artifacts": upload or already_uploaded})


class _finished_trial_updates:
    """Optuna refuses attribute writes to finished trials; a retrain's result belongs with the
    trial it retrained, so this lifts that one check on our own storage object meanwhile."""

    def __init__(self, storage: optuna.storages.BaseStorage):
        self.storage = storage

    def __enter__(self):
        self.storage.check_trial_is_updatable = lambda *_args, **_kwargs: None
        return self.storage

    def __exit__(self, *_exc):
        del self.storage.check_trial_is_updatable
        return False
