"""The fault matrix: a fault injected into real components, and what must survive it.

- SIGKILL during a checkpoint write (mid-write, before fsync, before the rename): the last good
  checkpoint stays, the temp file is never read as a checkpoint, the rerun resumes and finishes.
- SIGKILL during a store write (inside the SQLite transaction that finishes a trial, or that
  records a trial's attribute): the store opens, `PRAGMA integrity_check` is ok, every finished
  trial keeps its state and value, and the rerun reaches the target.
- A truncated checkpoint, or one holding a malicious pickle, under a run folder: refused with one
  sentence naming the file, exit 2, the payload never executed, the file left as it was;
  `--fresh` trains over it.
- Bad command lines and files: one sentence on stderr, exit 2, no traceback, the store unchanged
  (its trials, states, values, study attributes and its bytes).

Kills are real SIGKILLs: a small wrapper patches one call in `nas.train.checkpoint` or Optuna's
`RDBStorage` to kill its own process at the critical moment, then runs the real command line.
Everything else runs in this process where it can (fast), and a few command lines run as real
processes to prove there is no traceback end to end. CPU only, tiny space, synthetic data.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import io
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas.arch.architecture import Architecture
from nas.cli.main import main, retrain_main, search_main
from nas.train.checkpoint import MAGIC, CheckpointError, load_checkpoint, save_checkpoint
from nas.trial_view import is_trained

from helpers import epoch_time

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.usefixtures("one_thread"),  # conftest.py: one torch thread for the module
]

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "search_spaces" / "tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
STUDY = "t"
BUDGET = 8000  # about half of tiny.yaml's candidates fit; seed 0 trains its first sample
DATA = ["--dataset", "synthetic", "--subset", "32", "--device", "cpu"]
SEARCH = [
    *DATA, "--augment", "none", "--batch-size", "16", "--space", str(TINY), "--epochs", "1",
    "--pruner", "none", "--budget", str(BUDGET), "--study", STUDY,
]  # fmt: skip
# a 2,770-parameter net the retrain tests train in a fraction of a second per epoch
ARCH = Architecture(channels=(8, 8), blocks=(1, 1), conv_kernel=3, skip_kernel=1, stem=8)


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def call(entry, argv: list[str]) -> tuple[int, str, str]:
    """Run a command-line entry point in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = entry(argv)
        except SystemExit as exit_:  # argparse errors exit from parse_args
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def assert_one_sentence(status: int, err: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def store_state(path: Path) -> dict:
    """Everything a store holds that a user could lose: per study its attributes and direction,
    per trial its number, state, values, params, attributes and intermediate values."""
    storage = optuna.storages.RDBStorage(url_of(path), skip_compatibility_check=True)
    try:
        ids = {
            name: storage.get_study_id_from_name(name)
            for name in optuna.get_all_study_names(storage)
        }
        return {
            name: (
                storage.get_study_user_attrs(study_id),
                storage.get_study_directions(study_id),
                [
                    (t.number, t.state, t.values, t.params, t.user_attrs, t.intermediate_values)
                    for t in storage.get_all_trials(study_id)
                ],
            )
            for name, study_id in ids.items()
        }
    finally:
        storage.remove_session()
        storage.engine.dispose()


def store_bytes(path: Path) -> str:
    """A digest of the store file and its write-ahead log (a write lands in either)."""
    digest = hashlib.sha256(path.read_bytes())
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        digest.update(wal.read_bytes())
    return digest.hexdigest()


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def finished(path: Path) -> list:
    """The finished trials of the study as (number, state, values, user attrs)."""
    return [t for t in store_state(path)[STUDY][2] if t[1].is_finished()]


@pytest.fixture(scope="module")
def store(one_thread, tmp_path_factory) -> Path:
    """A study holding 2 trained candidates, written by the real search command; its log is
    folded into the file so that any later write shows in the file's bytes."""
    path = tmp_path_factory.mktemp("store") / "s.db"
    status, _, err = call(search_main, [*SEARCH, "--trials", "2", "--storage", url_of(path)])
    assert status == 0, err
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(ARCH.to_json() + "\n")
    return path


def wrapper(patch: str, entry: str, argv: list[str]) -> list[str]:
    """A command that applies `patch` (Python source) in a fresh process, then runs
    `nas.cli.main.<entry>(argv)` as the real script would."""
    source = textwrap.dedent(patch) + textwrap.dedent(
        f"""
        import sys
        from nas.cli.main import {entry}
        sys.exit({entry}({argv!r}))
        """
    )
    return [sys.executable, "-c", source]


def run_until_killed(commands: dict[str, list[str]], cwd: Path) -> None:
    """Run the commands side by side (each pays Python's start-up once, in parallel) and assert
    that every one died by SIGKILL; a failure names its key and shows its stderr."""
    processes = {
        key: subprocess.Popen(
            command,
            cwd=cwd,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, command in commands.items()
    }
    for key, process in processes.items():
        _, err = process.communicate(timeout=120)
        assert process.returncode == -signal.SIGKILL, (key, err)


# ---- SIGKILL during a checkpoint write ----------------------------------------------------------

# `nas.files` (through which every file, checkpoints included, is written) sees `os` through a
# proxy; on the second checkpoint save (epoch 2: a good checkpoint of epoch 1 is on disk) the
# proxy kills the process at the named moment of the write
CHECKPOINT_KILL = """
    import os, signal
    import nas.files as files

    KILL_AT = {kill_at!r}
    saves = []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class HalfWrites:  # the payload is written halfway, then the process dies
        def __init__(self, file):
            self.file, self.writes = file, 0
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.file.__exit__(*exc)
        def write(self, data):
            self.writes += 1
            if self.writes == 1:  # the whole file (magic, digest, payload) in one write
                self.file.write(data[: len(data) // 2])
                self.file.flush()
                os.fsync(self.file.fileno())
                die()
            return self.file.write(data)
        def __getattr__(self, name):
            return getattr(self.file, name)

    class KillingOs:
        def __getattr__(self, name):
            return getattr(os, name)
        def fdopen(self, fd, *args, **kwargs):
            # every file goes through nas.files: count the checkpoint's saves only
            if ".checkpoint.ckpt." in os.readlink(f"/proc/self/fd/{{fd}}"):
                saves.append(1)
            file = os.fdopen(fd, *args, **kwargs)
            return HalfWrites(file) if KILL_AT == "write" and len(saves) == 2 else file
        def fsync(self, fd):
            if KILL_AT == "fsync" and len(saves) == 2:
                die()
            return os.fsync(fd)
        def replace(self, source, target):
            if KILL_AT == "replace" and len(saves) == 2:
                die()  # the new checkpoint is complete and on disk, but not yet under its name
            return os.replace(source, target)

    files.os = KillingOs()
"""

KILL_POINTS = ("write", "replace")  # a kill at fsync leaves what one at replace does


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_last_good_one_and_the_rerun_resumes(
    arch_file, tmp_path
):
    runs = {point: tmp_path / point for point in KILL_POINTS}

    def argv(run: Path) -> list[str]:
        return ["--arch", str(arch_file), *DATA, "--epochs", "2", "--out", str(run)]

    run_until_killed(
        {
            point: wrapper(CHECKPOINT_KILL.format(kill_at=point), "retrain_main", argv(run))
            for point, run in runs.items()
        },
        cwd=tmp_path,
    )

    for point, run in runs.items():
        checkpoint = run / "checkpoint.ckpt"
        temporary = sorted(run.glob(".checkpoint.ckpt.*.tmp"))
        assert len(temporary) == 1, point  # the interrupted write, never renamed
        if point == "write":
            with pytest.raises(CheckpointError):  # half a file: it could never be used
                load_checkpoint(temporary[0])
            abandoned = None
        else:  # complete, epoch 2, on disk: but nothing may take it for the checkpoint
            abandoned = load_checkpoint(temporary[0])["history"]
            assert [row["epoch"] for row in abandoned] == [1, 2]
        kept = load_checkpoint(checkpoint)  # the last good checkpoint: epoch 1, intact
        assert [row["epoch"] for row in kept["history"]] == [1], point
        assert not (run / "metrics.json").exists()

        status, out, err = call(retrain_main, argv(run))  # the same command again
        assert status == 0, (point, err)
        with (run / "history.csv").open() as file:
            rows = list(csv.DictReader(file))
        assert [int(row["epoch"]) for row in rows] == [1, 2], point
        # epoch 1 came from the checkpoint (its timing is the recorded one), not a retraining
        assert epoch_time(rows[0]) == pytest.approx(epoch_time(kept["history"][0]))
        if abandoned is not None:  # epoch 2 was trained again, not taken from the temp file
            assert epoch_time(rows[1]) != pytest.approx(epoch_time(abandoned[1]), rel=1e-9)
        assert [r["epoch"] for r in load_checkpoint(checkpoint)["history"]] == [1, 2]
        assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 2


def test_a_leftover_temp_file_is_never_read_as_the_checkpoint(arch_file, tmp_path):
    """A complete, valid checkpoint under the temp name of a killed write is ignored: a run
    with no checkpoint.ckpt starts from epoch 1."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "architecture.json").write_text(ARCH.to_json() + "\n")
    decoy = run / ".checkpoint.ckpt.abc123.tmp"
    save_checkpoint({"history": [{"epoch": 1}, {"epoch": 2}], "format": 1}, decoy)
    status, _, err = call(
        retrain_main, ["--arch", str(arch_file), *DATA, "--epochs", "1", "--out", str(run)]
    )
    assert status == 0, err
    assert [r["epoch"] for r in load_checkpoint(run / "checkpoint.ckpt")["history"]] == [1]


# ---- SIGKILL during a store write -------------------------------------------------------------

# after the first trained trial, the next call of METHOD dies inside its own SQLite transaction:
# its statements have run, the COMMIT has not
STORE_KILL = """
    import os, signal, threading
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState
    from sqlalchemy import event

    METHOD = {method!r}
    completed = []
    real_finish = RDBStorage.set_trial_state_values
    real_attr = RDBStorage.set_trial_user_attr

    def arm(storage):
        caller = threading.get_ident()  # not the heartbeat thread's commits

        def die(connection):
            if threading.get_ident() == caller:
                os.kill(os.getpid(), signal.SIGKILL)

        event.listen(storage.engine, "commit", die)

    def finish(self, trial_id, state, values=None):
        if state == TrialState.COMPLETE:
            completed.append(trial_id)
            if METHOD == "set_trial_state_values" and len(completed) == 2:
                arm(self)  # the second trained trial's COMPLETE and value
        return real_finish(self, trial_id, state, values)

    def set_attr(self, trial_id, key, value):
        if METHOD == "set_trial_user_attr" and len(completed) == 1:
            arm(self)  # the next trial's first attribute
        return real_attr(self, trial_id, key, value)

    RDBStorage.set_trial_state_values = finish
    RDBStorage.set_trial_user_attr = set_attr
"""

STORE_WRITES = ("set_trial_state_values", "set_trial_user_attr")


@pytest.mark.slow
def test_sigkill_during_a_store_write_loses_nothing_finished_and_the_rerun_reaches_the_target(
    tmp_path,
):
    stores = {method: tmp_path / f"{method}.db" for method in STORE_WRITES}

    def argv(path: Path) -> list[str]:
        return [*SEARCH, "--trials", "2", "--heartbeat", "1", "--storage", url_of(path)]

    run_until_killed(
        {
            method: wrapper(STORE_KILL.format(method=method), "search_main", argv(path))
            for method, path in stores.items()
        },
        cwd=tmp_path,
    )
    killed_at = time.monotonic()

    before = {}
    for method, path in stores.items():
        assert integrity(path) == "ok", method
        trials = store_state(path)[STUDY][2]
        done = [t for t in trials if t[1].is_finished()]
        assert sum(bool(t[4].get("trained")) for t in done) == 1, method  # the first, kept
        assert all(t[2] for t in done if t[1] == TrialState.COMPLETE), method  # with values
        (running,) = [t for t in trials if t[1] == TrialState.RUNNING]  # the killed write's
        assert running == trials[-1], method
        if method == "set_trial_state_values":  # trained, but its COMPLETE never committed
            assert running[5] and running[2] is None
        else:  # its first attribute never committed
            assert "params" not in running[4]
        before[method] = done

    # the dead process's trial goes stale 3 heartbeats (3 s) after its last beat
    time.sleep(max(0.0, 3.5 - (time.monotonic() - killed_at)))
    for method, path in stores.items():
        status, _, err = call(search_main, argv(path))  # the same command again
        assert status == 0, (method, err)
        assert integrity(path) == "ok", method
        trials = optuna.load_study(study_name=STUDY, storage=url_of(path)).trials
        assert sum(is_trained(t) for t in trials) == 2, method
        assert not [t.number for t in trials if t.state == TrialState.RUNNING], method
        assert finished(path)[: len(before[method])] == before[method], method


# ---- damaged checkpoints under a run folder ---------------------------------------------------


class Exploit:
    """Unpickling this runs a shell command that creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def damaged_checkpoint(kind: str, marker: Path) -> bytes:
    if kind == "truncated":
        buffer = io.BytesIO()
        torch.save({"model": {"w": torch.ones(2000)}, "history": []}, buffer)
        payload = buffer.getvalue()
        return (MAGIC + hashlib.sha256(payload).digest() + payload)[: 40 + len(payload) // 2]
    if kind == "malicious":  # well formed, correct digest, a payload that runs a command
        buffer = io.BytesIO()
        torch.save({"model": Exploit(marker)}, buffer)
        payload = buffer.getvalue()
        return MAGIC + hashlib.sha256(payload).digest() + payload
    return pickle.dumps({"model": Exploit(marker)})  # a raw pickle under the checkpoint's name


def damaged_run(tmp_path: Path, kind: str) -> tuple[Path, Path, bytes]:
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    (run / "architecture.json").write_text(ARCH.to_json() + "\n")
    blob = damaged_checkpoint(kind, marker)
    (run / "checkpoint.ckpt").write_bytes(blob)
    return run, marker, blob


@pytest.mark.parametrize("kind", ["truncated", "malicious", "raw-pickle"])
def test_a_damaged_checkpoint_is_refused_untouched_and_fresh_trains_over_it(
    kind, arch_file, tmp_path
):
    run, marker, blob = damaged_run(tmp_path, kind)
    argv = ["--arch", str(arch_file), *DATA, "--epochs", "1", "--out", str(run)]
    status, _, err = call(retrain_main, argv)
    assert_one_sentence(status, err)
    assert str(run / "checkpoint.ckpt") in err and "--fresh" in err
    assert not marker.exists()  # never executed
    assert (run / "checkpoint.ckpt").read_bytes() == blob  # left as it was, for inspection
    assert not (run / "metrics.json").exists()

    status, _, err = call(retrain_main, [*argv, "--fresh"])
    assert status == 0, err
    assert not marker.exists()
    assert [r["epoch"] for r in load_checkpoint(run / "checkpoint.ckpt")["history"]] == [1]
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 1


# ---- bad command lines and files --------------------------------------------------------------


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


TINY_TEXT = TINY.read_text()
SPACE_OK = "layers: [2, 3]\nchannels: [8, 12]\nblocks: [1, 2]\nconv_kernel: [3]\n"
BAD_FILES = {  # name -> (text, a fragment the sentence must hold)
    "tab.yaml": ("layers: [2, 3]\n\tchannels: [8]\n", "not valid YAML"),
    "unclosed.yaml": ("layers: [2, 3\nchannels: [8]\n", "not valid YAML"),
    "unknown.yaml": (TINY_TEXT + "colour: red\n", "colour: unknown key"),
    "empty-choices.yaml": (SPACE_OK.replace("[8, 12]", "[]"), "channels"),
    "inverted.yaml": (SPACE_OK.replace("[2, 3]", "[3, 2]"), "inverted"),
    "kernel9.yaml": (SPACE_OK.replace("conv_kernel: [3]", "conv_kernel: [9]"), "9"),
    "empty.yaml": ("", "mapping"),
    "malformed.json": ("{not json", "malformed"),
    "unknown-field.json": ('{"channels": [8, 8], "blocks": [1, 1], "colour": 1}', "colour"),
    "kernel0.json": ('{"channels": [8, 8], "blocks": [1, 1], "conv_kernel": 0}', "conv_kernel"),
    "list.json": ("[1, 2]", "JSON object"),
}

# (id, entry point, argv, a fragment the sentence must hold); {dir} is a folder of bad files,
# {store} the store's URL, {file} a path that is a plain file
BAD = [
    ("search-budget-zero", "search", ["--budget", "0"], "'0'"),
    ("search-budget-negative", "search", ["--budget", "-1"], "'-1'"),
    ("search-budget-word", "search", ["--budget", "abc"], "'abc'"),
    ("search-budget-unit", "search", ["--budget", "5Q"], "'5Q'"),
    ("search-budget-fraction", "search", ["--budget", "1e-3"], "'1e-3'"),
    ("search-budget-under-space", "search", ["--budget", "1k"], "1,490"),
    ("search-budget-other-than-study", "search", ["--budget", "9000"], "8,000"),
    ("search-trials-zero", "search", ["--trials", "0"], "--trials"),
    ("search-trials-negative", "search", ["--trials", "-3"], "--trials"),
    ("search-trials-word", "search", ["--trials", "x"], "--trials"),
    ("search-epochs-negative", "search", ["--epochs", "-1"], "--epochs"),
    ("search-subset-zero", "search", ["--subset", "0"], "--subset"),
    ("search-space-missing", "search", ["--space", "{dir}/missing.yaml"], "missing.yaml"),
    ("search-space-folder", "search", ["--space", "{dir}"], "cannot be read"),
    *[
        (f"search-space-{name}", "search", ["--space", f"{{dir}}/{name}"], name)
        for name in BAD_FILES
        if name.endswith(".yaml")
    ],
    ("search-storage-scheme", "search", ["--storage", "notaurl://"], "notaurl://"),
    ("search-storage-empty", "search", ["--storage", ""], "storage"),
    ("search-storage-http", "search", ["--storage", "http://example.com/x"], "http://"),
    ("search-storage-under-a-file", "search", ["--storage", "sqlite:///{file}/x.db"], "{file}"),
    ("search-storage-postgres", "search", ["--storage", "postgresql://127.0.0.1:1/x"], "postgres"),
    ("search-dataset-unknown", "search", ["--dataset", "imagenet"], "imagenet"),
    ("search-imagefolder-missing", "search", ["--dataset", "imagefolder"], "{dir}/nope"),
    ("search-device-missing-gpu", "search", ["--device", "cuda:9"], "cuda:9"),
    ("search-device-unknown", "search", ["--device", "tpu"], "tpu"),
    ("search-sampler", "search", ["--sampler", "foo"], "foo"),
    ("search-pruner", "search", ["--pruner", "foo"], "foo"),
    ("search-flag-unknown", "search", ["--bugdet", "5M"], "--bugdet"),
    ("retrain-trial-missing", "retrain", ["--trial", "999"], "no trial 999"),
    ("retrain-trial-negative", "retrain", ["--trial", "-1"], "'-1' must be 0 or more"),
    ("retrain-trial-word", "retrain", ["--trial", "x"], "--trial"),
    ("retrain-study-missing", "retrain", ["--study", "nope"], "'nope'"),
    ("retrain-preset-unknown", "retrain", ["--arch", "nope"], "unknown preset"),
    ("retrain-arch-and-trial", "retrain", ["--arch", "resnet18", "--trial", "0"], "not both"),
    ("retrain-epochs-negative", "retrain", ["--epochs", "-1"], "--epochs"),
    ("retrain-storage-scheme", "retrain", ["--storage", "notaurl://"], "notaurl://"),
    *[
        (f"retrain-arch-{name}", "retrain", ["--arch", f"{{dir}}/{name}"], fragment)
        for name, (_, fragment) in BAD_FILES.items()
        if name.endswith(".json")
    ],
    ("retrain-arch-missing-file", "retrain", ["--arch", "{dir}/missing.json"], "cannot read"),
    ("params-mismatched", "nas", ["params", "--channels", "1,2", "--blocks", "1"], "blocks"),
    ("params-kernel9", "nas", ["params", "--channels", "8", "--blocks", "1", "--conv-kernel", "9"],
     "conv_kernel"),  # fmt: skip
    ("params-not-integers", "nas", ["params", "--channels", "a,b", "--blocks", "1"], "'a,b'"),
    ("params-nothing", "nas", ["params"], "--preset"),
    ("params-preset-unknown", "nas", ["params", "--preset", "nope"], "nope"),
    ("params-arch-malformed", "nas", ["params", "--arch", "{dir}/malformed.json"], "malformed"),
    ("params-image-size-zero", "nas", ["params", "--preset", "resnet18", "--image-size", "0"],
     "--image-size"),  # fmt: skip
    ("space-missing", "nas", ["space", "{dir}/missing.yaml"], "missing.yaml"),
    ("space-kernel9", "nas", ["space", "{dir}/kernel9.yaml"], "kernel9.yaml"),
    ("space-budget-zero", "nas", ["space", str(TINY), "--budget", "0"], "'0'"),
    ("space-samples-zero", "nas", ["space", str(TINY), "--budget", "5k", "--samples", "0"],
     "--samples"),  # fmt: skip
    ("report-study-missing", "nas", ["report", "--study", "nope", "--storage", "{store}"], "nope"),
    ("report-out-under-a-file", "nas",
     ["report", "--study", STUDY, "--storage", "{store}", "--out", "{file}/r.html"], "{file}"),
    ("command-unknown", "nas", ["serach"], "serach"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    for name, (text, _) in BAD_FILES.items():
        write(folder, name, text)
    write(folder, "a-file", "not a folder\n")
    return folder


def expand(items: list[str], store: Path, folder: Path) -> list[str]:
    names = {"dir": str(folder), "store": url_of(store), "file": str(folder / "a-file")}
    return [item.format(**names) for item in items]


def full_argv(entry: str, argv: list[str], store: Path, folder: Path) -> list[str]:
    """The case's flags on top of a complete, valid command line against the store."""
    if entry == "search":
        # one more trained candidate than the study holds: the data and device are loaded
        base = [*SEARCH, "--trials", "3", "--storage", url_of(store)]
        if "imagefolder" in argv:
            argv = [*argv, "--data-dir", str(folder / "nope")]
        return [*base, *argv]
    if entry == "retrain":
        return ["--storage", url_of(store), "--study", STUDY, *DATA, "--epochs", "1", *argv]
    return argv


ENTRIES = {"search": search_main, "retrain": retrain_main, "nas": main}


@pytest.mark.parametrize("case, entry, argv, fragment", BAD, ids=[case[0] for case in BAD])
def test_a_bad_command_line_is_one_sentence_exit_2_and_the_store_is_unchanged(
    case, entry, argv, fragment, store, bad_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # anything a command wrongly creates lands here, not in the repo
    before, digest = store_state(store), store_bytes(store)
    full = expand(full_argv(entry, argv, store, bad_dir), store, bad_dir)
    status, out, err = call(ENTRIES[entry], full)
    assert_one_sentence(status, err)
    assert expand([fragment], store, bad_dir)[0] in err
    assert store_bytes(store) == digest
    assert store_state(store) == before
    assert list(tmp_path.iterdir()) == []  # no store, report or run folder made on the way


BAD_THAT_MAY_WRITE = [
    pytest.param(
        "retrain",
        ["--device", "cuda:9"],
        id="retrain-device-missing-gpu",
    ),
    pytest.param(
        "search",
        ["--study", "new", "--device", "cuda:9"],
        id="search-new-study-device-missing-gpu",
    ),
    pytest.param(
        "search",
        ["--budget", "1e400"],
        id="search-budget-infinite",
    ),
    pytest.param(
        "search",
        ["--study", "", "--trials", "1"],
        id="search-study-empty",
    ),
    pytest.param(
        "search",
        ["--study", "new", "--epochs", "0", "--trials", "1"],
        id="search-epochs-zero",
    ),
    pytest.param(
        "search",
        ["--trials", "2", "--report", "{file}/r.html"],
        id="search-report-under-a-file",
    ),
    pytest.param(
        "retrain",
        ["--out", "{file}"],
        id="retrain-out-is-a-file",
    ),
    pytest.param(
        "retrain",
        ["--out", "{file}/run"],
        id="retrain-out-under-a-file",
    ),
]


@pytest.mark.parametrize("entry, argv", BAD_THAT_MAY_WRITE)
def test_bad_command_lines_that_reach_the_store_are_refused_before_writing(
    entry, argv, store, bad_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "store").mkdir()
    work = tmp_path / "store" / "s.db"  # a copy: these may write to the store
    with (
        contextlib.closing(sqlite3.connect(store)) as src,
        contextlib.closing(sqlite3.connect(work)) as dst,
    ):
        src.backup(dst)
    before = store_state(work)
    full = expand(full_argv(entry, argv, work, bad_dir), work, bad_dir)
    try:
        status, _, err = call(ENTRIES[entry], full)
    except Exception as error:  # noqa: BLE001 - a traceback would be the bug
        pytest.fail(f"traceback: {type(error).__name__}: {error}")
    assert_one_sentence(status, err)
    assert store_state(work) == before
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


@pytest.mark.skipif(
    importlib.util.find_spec("MySQLdb") is not None, reason="the MySQL driver is installed"
)
def test_a_missing_database_driver_is_named(tmp_path):
    status, _, err = call(search_main, [*SEARCH, "--storage", "mysql://u@127.0.0.1:1/x"])
    assert_one_sentence(status, err)
    assert "(None)" not in err


# ---- the same, end to end in real processes ---------------------------------------------------


@pytest.mark.slow
def test_real_processes_give_one_sentence_exit_2_and_never_run_a_malicious_checkpoint(
    bad_dir, arch_file, tmp_path
):
    malicious, marker, blob = damaged_run(tmp_path, "malicious")
    commands = {
        "search.py": [str(REPO / "scripts" / "search.py"), "--budget", "1e-3"],
        "retrain_best.py checkpoint": [
            str(REPO / "scripts" / "retrain_best.py"),
            *["--arch", str(arch_file), *DATA, "--epochs", "1", "--out", str(malicious)],
        ],
        "python -m nas space": ["-m", "nas", "space", str(bad_dir / "tab.yaml")],
    }
    processes = {  # side by side: each pays Python's start-up once
        name: subprocess.Popen(
            [sys.executable, *argv],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in commands.items()
    }
    for name, process in processes.items():
        _, err = process.communicate(timeout=120)
        assert_one_sentence(process.returncode, err)
        assert err.startswith(("error: ", "nas search: ", "nas retrain: ")), (name, err)
    assert not marker.exists()
    assert (malicious / "checkpoint.ckpt").read_bytes() == blob
