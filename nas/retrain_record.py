"""Owns recording a retrain on its study: the test result and run folder under
`records.retrain_key` (a finished trial is immutable in Optuna, so on the study, through its
public API only), and the run's curves, metrics and history as study artifacts that
optuna-dashboard shows.

Claims: recording the same finished run again (a rerun that found it done) uploads nothing
twice.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from nas import records, run_folder
from nas.run_folder import RunMetrics


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
    record = {
        "test_accuracy": metrics.test_accuracy,
        "test_loss": metrics.test_loss,
        "run_dir": str(run_dir),
        "epochs": metrics.epochs_completed,
    }
    already_uploaded = study.user_attrs.get(key) == {**record, "artifacts": True}
    upload = artifact_dir is not None and not already_uploaded
    if upload:
        upload_artifacts(study, trial.number, run_dir, artifact_dir)
    study.set_user_attr(key, {**record, "artifacts": upload or already_uploaded})


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
