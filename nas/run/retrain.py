"""Owns the retrain run: train an architecture long, evaluate it once on the test set, write a
finished run folder (`nas.run.folder`: weights, architecture, metrics, history, curves,
checkpoint, model card), every file through `nas.files.write_atomic`; and record it on its
study: the test result and run folder under `records.retrain_key` (a finished trial is
immutable in Optuna, so on the study, through its public API only), and the run's curves,
metrics and history as study artifacts that optuna-dashboard shows. history.csv's text is
written and read back here (`history_csv`, `read_history_csv`: one `EpochRow` per line).

Which trial of a study to retrain is `nas.search.choice`; the curves page is
`nas.report.curves` (its title, what the run is, is `curves_title` here).

Claims:
- The same call after a kill resumes from the last finished epoch; a finished run is not
  redone, and its files are read back first (a damaged one is a UserError naming it).
- `should_stop()` (e.g. set by SIGTERM) is checked after each epoch's checkpoint is written and
  stops the run with `StopRequested`, so the same call resumes it.
- The test split is evaluated once, with the best weights.
- Recording the same finished run again (a rerun that found it done) uploads nothing twice.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas import records
from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.loading import Splits, load_splits
from nas.errors import StopRequested, UserError
from nas.files import write_atomic
from nas.report.curves import curves_html
from nas.run import folder as run_folder
from nas.run.folder import RunMetrics
from nas.run.model_card import model_card
from nas.train.devices import resolve_device
from nas.train.fit import evaluate, fit, set_seed
from nas.train.model import build_model
from nas.train.state import HISTORY_COLUMNS, EpochRow, FitResult


@dataclasses.dataclass(frozen=True)
class RetrainResult:
    """A finished run's metrics, and whether an earlier call had already finished it."""

    metrics: RunMetrics
    reused: bool = False


def prepare_run_dir(run_dir: Path, arch: Architecture, fresh: bool) -> None:
    """Claim the folder for `arch`; refuse one that holds another architecture's run."""
    if (run_dir.exists() and not run_dir.is_dir()) or any(p.is_file() for p in run_dir.parents):
        raise UserError(f"the run folder {run_dir} is (or lies inside) a file; pass another --out")
    if fresh and run_dir.exists():
        for name in run_folder.FILES:
            (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the run folder {run_dir}: {error.strerror}") from None
    if not (run_dir / run_folder.ARCHITECTURE).exists():
        write_atomic(run_dir / run_folder.ARCHITECTURE, arch.to_json() + "\n")
        return
    try:
        existing = run_folder.read_architecture(run_dir)
    except UserError:
        existing = None
    if existing != arch:
        raise UserError(
            f"{run_dir} holds a run of another architecture; "
            "pass --out with a new folder, or --fresh to overwrite it"
        )


def finished_run(run_dir: Path, recipe: Recipe) -> RunMetrics | None:
    """The metrics of a run of `recipe.epochs` epochs already finished in `run_dir`, its files
    read back (a damaged one is a UserError naming it); None when it is not finished."""
    done = run_folder.read_metrics(run_dir)
    if done is None or done.epochs_planned != recipe.epochs:
        return None
    run_folder.read_architecture(run_dir)
    run_folder.read_weights(run_dir)
    return done


def retrain(
    arch: Architecture,
    data: DataConfig,
    recipe: Recipe,
    machine: Machine,
    run_dir: str | Path,
    *,
    fresh: bool = False,
    progress: bool = True,
    source: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[EpochRow], None] | None = None,
) -> RetrainResult:
    """Train `arch` with `recipe` on `machine`, evaluate on the test split, export to `run_dir`.

    A run folder whose metrics say it finished `recipe.epochs` epochs is returned as it is
    (`reused`). `on_epoch(row)` sees every epoch's history row. When `should_stop()` is true
    after an epoch (its checkpoint already written), raises `StopRequested(epoch)`; calling
    again resumes.
    """
    run_dir = Path(run_dir)
    done = None if fresh else finished_run(run_dir, recipe)
    if done is not None:
        return RetrainResult(done, reused=True)
    device = resolve_device(machine.device)  # refuse an unusable device before writing anything
    splits = load_splits(data)
    data = dataclasses.replace(data, image_size=splits.image_shape[-1])  # as metrics.json says
    if arch.num_classes != splits.num_classes:  # e.g. a CIFAR-10 preset trained on CIFAR-100
        arch = dataclasses.replace(arch, num_classes=splits.num_classes)
    prepare_run_dir(run_dir, arch, fresh)
    set_seed(recipe.seed)
    model = build_model(arch)

    def after_epoch(row: EpochRow) -> bool:
        if on_epoch is not None:
            on_epoch(row)
        # fit calls this after the epoch's checkpoint is written: stopping here loses nothing
        if should_stop is not None and should_stop():
            raise StopRequested(row.epoch)
        return False

    result = fit(
        model,
        splits,
        recipe,
        machine,
        checkpoint_path=run_dir / run_folder.CHECKPOINT,
        checkpoint_extra={"architecture": arch.to_dict()},
        progress=progress,
        callback=after_epoch,
    )
    model.load_state_dict(result.best_state)
    test_loss, test_accuracy = evaluate(model, splits.test, splits, machine, device)
    metrics = run_metrics(arch, result, (test_loss, test_accuracy), splits, data, recipe, machine)
    metrics = dataclasses.replace(metrics, device=str(device), source=source or {})
    write_run(run_dir, arch, metrics, result)
    return RetrainResult(metrics)


def run_metrics(
    arch: Architecture,
    result: FitResult,
    test: tuple[float, float],
    splits: Splits,
    data: DataConfig,
    recipe: Recipe,
    machine: Machine,
) -> RunMetrics:
    """What metrics.json records of a finished fit and its one test evaluation (loss, accuracy)."""
    seconds = sum(row.seconds for row in result.history)
    best = result.history[result.best_epoch - 1] if result.best_epoch else None
    return RunMetrics(
        test_loss=test[0],
        test_accuracy=test[1],
        params=count_params(arch),
        epochs_completed=result.epochs_completed,
        epochs_planned=recipe.epochs,
        best_epoch=result.best_epoch,
        best_val_loss=result.best_val_loss if best else None,
        # the accuracy of best_epoch (the weights kept), and the highest any epoch reached
        best_val_accuracy=best.val_accuracy if best else None,
        highest_val_accuracy=result.best_val_accuracy,
        seconds=seconds,
        seconds_per_epoch=seconds / max(1, result.epochs_completed),
        classes=list(splits.classes),
        normalization={"mean": list(splits.mean), "std": list(splits.std)},
        config={**recipe.to_dict(), **machine.to_dict()},  # one dict, as before the split
        dataset=data.to_dict(),
    )


def curves_title(arch: Architecture, metrics: RunMetrics) -> str:
    """What the curves are of: study and trial (or the named architecture), architecture,
    parameters and test accuracy."""
    source = metrics.source
    if "study" in source:
        what = f"study {source['study']}, trial {source['trial']}"
    else:
        what = str(source.get("arch", "retrain"))
    return (
        f"{what}: {arch.describe()}, {metrics.params:,} parameters, "
        f"test accuracy {100 * metrics.test_accuracy:.2f} %"
    )


def write_run(run_dir: Path, arch: Architecture, metrics: RunMetrics, result: FitResult) -> None:
    """The finished run's files; metrics.json last, since it marks the run finished."""
    run_folder.write_weights(run_dir, result.best_state)
    write_atomic(run_dir / run_folder.HISTORY, history_csv(result.history))
    title = curves_title(arch, metrics)
    write_atomic(run_dir / run_folder.CURVES, curves_html(result.history, title=title))
    write_atomic(run_dir / run_folder.MODEL_CARD, model_card(arch, metrics, run_dir))
    run_folder.write_metrics(run_dir, metrics)


def history_csv(history: list[EpochRow]) -> str:
    """history.csv's text: a header of `HISTORY_COLUMNS`, then one line per epoch."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=HISTORY_COLUMNS)
    writer.writeheader()
    writer.writerows(row.to_dict() for row in history)
    return text.getvalue()


def read_history_csv(text: str) -> list[EpochRow]:
    """The rows of a history.csv's text (`history_csv`'s, or an earlier release's)."""
    return [EpochRow.from_dict(line) for line in csv.DictReader(io.StringIO(text))]


def record_in_study(
    study: optuna.Study,
    trial: FrozenTrial,
    metrics: RunMetrics,
    run_dir: Path,
    artifact_dir: Path | None,
) -> None:
    """Record the retrain's test accuracy and run folder on the study, and attach the run's
    files (`run_folder.ARTIFACTS`) as study artifacts named `trial-<n>-<file>`."""
    key = records.retrain_key(trial.number)
    record = records.Retrained(
        test_accuracy=metrics.test_accuracy,
        test_loss=metrics.test_loss,
        run_dir=str(run_dir),
        epochs=metrics.epochs_completed,
    )
    uploaded = dataclasses.replace(record, artifacts=True)
    already_uploaded = study.user_attrs.get(key) == uploaded.to_dict()
    upload = artifact_dir is not None and not already_uploaded
    if upload:
        upload_artifacts(study, trial.number, run_dir, artifact_dir)
    study.set_user_attr(key, (uploaded if upload or already_uploaded else record).to_dict())


def upload_artifacts(study: optuna.Study, number: int, run_dir: Path, artifact_dir: Path) -> None:
    """Copy the run's dashboard files into the artifact store, each named by its trial."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    with tempfile.TemporaryDirectory() as folder:
        for name in run_folder.ARTIFACTS:
            # an artifact is named by its file: say which trial's run it comes from
            named = Path(folder) / f"trial-{number}-{name}"
            shutil.copyfile(run_dir / name, named)
            upload_artifact(artifact_store=store, file_path=str(named), study_or_trial=study)
