"""examples/slurm/: the job scripts themselves, run with bash and the environment Slurm gives
two tasks of one array job, as two processes on this machine against one journal file: the
study fills to its target with nothing trained twice and nothing left running, then the
dependent retrain job retrains the winner. `NAS` runs this checkout's `python -m nas`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas import records
from nas.search.winner import winner
from nas.store.opening import open_storage
from nas.trial_view import is_trained

REPO = Path(__file__).resolve().parent.parent
SLURM = REPO / "examples" / "slurm"
STUDY = "slurm-test"
SMOKE = "--smoke --subset 48 --augment none"  # 4 trained candidates, 2 epochs, on the CPU


def slurm_env(tmp_path: Path, task: int | None = None) -> dict[str, str]:
    """What Slurm sets for a task of array job 7000 (job id 7000 + task) or the job after it."""
    env = {
        **os.environ,
        "NAS": f"{sys.executable} -m nas",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "STUDY": STUDY,
        "SEARCH_FLAGS": SMOKE,
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_CPUS_PER_TASK": "1",
        "SLURM_JOB_ID": "7100",
    }
    env.pop("NAS_STORAGE", None)  # the journal file, as on a cluster without a database
    if task is not None:
        env |= {
            "SLURM_ARRAY_JOB_ID": "7000",
            "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_ARRAY_TASK_COUNT": "2",
            "SLURM_JOB_ID": str(7000 + task),
        }
    return env


@pytest.mark.slow
def test_two_array_tasks_fill_one_study_and_the_dependent_job_retrains_its_winner(tmp_path):
    tasks = [
        subprocess.Popen(
            ["bash", str(SLURM / "search.sbatch")],
            cwd=tmp_path,
            env=slurm_env(tmp_path, task),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for task in (0, 1)
    ]
    try:
        ended = [task.communicate(timeout=420) for task in tasks]
    finally:
        for task in tasks:
            task.kill()
    for task, (_, err) in zip(tasks, ended):
        assert task.returncode == 0, err
        assert "Traceback" not in err
    assert "task 1 of array job 7000" in ended[1][0]

    journal = tmp_path / "studies" / "nas.log"  # the script's default store
    study = optuna.load_study(study_name=STUDY, storage=open_storage(f"journal:///{journal}"))
    trials = study.trials
    trained = [t.user_attrs[records.ARCHITECTURE] for t in trials if is_trained(t)]
    assert len(trained) == 4  # the smoke target, exactly, over both tasks
    assert len(set(trained)) == 4  # nothing trained twice
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    pids = {t.user_attrs[records.WORKER][records.WORKER_PID] for t in trials}
    assert {task.pid for task in tasks} & pids  # exec: the task's own process ran nas
    best = winner(study)[0].number

    retrain = subprocess.run(
        ["bash", str(SLURM / "retrain.sbatch")], cwd=tmp_path,
        env={**slurm_env(tmp_path), "RETRAIN_FLAGS": "--epochs 1 --device cpu"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert retrain.returncode == 0, retrain.stderr
    assert (tmp_path / "runs" / STUDY / f"trial-{best}" / "metrics.json").is_file()
    reread = optuna.load_study(study_name=STUDY, storage=open_storage(f"journal:///{journal}"))
    assert records.retrain_key(best) in reread.user_attrs
