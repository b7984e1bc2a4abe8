"""A real PostgreSQL server as the study store: workers on two "machines" (two commands at once,
one with --workers 2) record the same trial count and states as one worker, and the password
in their storage URL reaches no worker's command line, output, file or attribute. The two
machines run once for the module (`machines`); both tests read what they left.

The server is started by the tests on loopback from the system's `initdb`/`pg_ctl` (as the
`postgres` user when the tests run as root: PostgreSQL refuses to run as root) in a temporary
folder, and always stopped at the end. `.ci/run` installs PostgreSQL when it is missing; these
tests skip, saying why, only where no server can be started, and fail instead under CI.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas import records
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.search.loop import run_search
from nas.store.opening import open_storage
from nas.trial_view import is_trained

from helpers import free_port, one_torch_thread, unavailable

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "search_spaces" / "tiny.yaml"
BUDGET = 8000
TRIALS = 4
WORKERS_AT_ONCE = 6  # threads opening one empty database together
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny nets on a shared 2-core machine
FAST = [
    "--dataset", "synthetic", "--subset", "48", "--augment", "none", "--device", "cpu",
    "--batch-size", "16", "--space", str(TINY), "--pruner", "none", "--epochs", "1",
    "--budget", str(BUDGET), "--trials", str(TRIALS), "--heartbeat", "1", "--study", "t",
]  # fmt: skip


class Server:
    """A throwaway PostgreSQL cluster on 127.0.0.1:port with trust authentication."""

    def __init__(self, bin_dir: Path, folder: Path, as_user: list[str]):
        self.bin_dir, self.folder, self.as_user = bin_dir, folder, as_user
        self.data = folder / "data"
        self.port = free_port()

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.as_user, str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.folder,
        )

    def start(self) -> str | None:
        """Start the server; None, or why it could not be started."""
        made = self._run("initdb", "-D", str(self.data), "-U", "nas", "-A", "trust", "--no-sync")
        if made.returncode != 0:
            return f"initdb failed: {made.stderr.strip()[-300:]}"
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.folder / "server.log")
        started = self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        if started.returncode != 0:
            tail = Path(log).read_text()[-300:] if Path(log).exists() else started.stderr
            return f"pg_ctl start failed: {tail.strip()}"
        return None

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart_after(self, seconds: float) -> None:
        """Stop the server (every connection ended, as a restart does), start it `seconds`
        later. A fast stop, not an immediate one: with this cluster's synchronous_commit=off, a
        crash may drop commits it already acknowledged, which a production server would not."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(seconds)
        log = str(self.folder / "server.log")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        started = self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        assert started.returncode == 0, started.stderr

    def database(self, name: str) -> str:
        """Create database `name`; its SQLAlchemy URL."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="nas", dbname="postgres"
        )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return f"postgresql+psycopg2://nas@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is not installed (pip install -e '.[test]')")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = Path(found[-1]) if found else (Path(p) if (p := shutil.which("initdb")) else None)
    if initdb is None:
        unavailable("no PostgreSQL server binaries (initdb); .ci/run installs them with apt-get")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use the postgres system user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            unavailable("running as root and there is no 'postgres' user to run the server as")
        runuser = shutil.which("runuser")
        if not runuser:
            shutil.rmtree(folder, ignore_errors=True)
            unavailable("running as root and runuser is missing to run the server as postgres")
        as_user = [runuser, "-u", "postgres", "--"]
        os.chown(folder, user.pw_uid, user.pw_gid)
    folder.chmod(0o700)
    server = Server(initdb.parent, folder, as_user)
    try:
        problem = server.start()
        if problem:
            unavailable(f"could not start a PostgreSQL server: {problem}")
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _summary(url: str) -> dict:
    trials = optuna.load_study(study_name="t", storage=url).trials
    trained = [t for t in trials if is_trained(t)]
    return {
        "numbers": sorted(t.number for t in trials),
        # the candidates' states; a confirmation's claim (nas.search.confirm) ends FAIL by design
        "states": {t.state for t in trials if records.CONFIRMS not in t.user_attrs},
        "trained": len(trained),
        "trained_states": {t.state for t in trained},
        "architectures": len({t.user_attrs["architecture"] for t in trained}),
        "over_budget": [t.number for t in trained if t.user_attrs["params"] > BUDGET],
        "epochs": {tuple(sorted(t.intermediate_values)) for t in trained},
    }


def _command_lines_holding(secret: str, besides: set[int]) -> set[str]:
    """The command lines of this machine's processes (other than the pids `besides`) holding
    `secret`, as `ps` would show them to every user. A child of one of `besides` that still
    shows its parent's command line is left out: a fork caught before its exec (the moment
    `subprocess` starts a worker), which runs nothing of its own."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in besides | {os.getpid()}:
            continue
        try:
            line = _cmdline(entry)
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if secret in line and parent in besides and line == _cmdline(Path(f"/proc/{parent}")):
                continue
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
        if secret in line:
            found.add(line)
    return found


def _cmdline(entry: Path) -> str:
    return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


SECRET = "Pa55-w0rd-never-shown"


@dataclass
class Machines:
    """What the two "machines" left: the URL they shared, their folder (their working folder,
    and the retrain's), what they printed, the command lines holding the password that were
    seen while they ran, and the study's summary right after them."""

    url: str
    folder: Path
    outputs: dict[str, subprocess.CompletedProcess]
    leaked: set[str]
    summary: dict


@pytest.fixture(scope="module")
def machines(postgres, tmp_path_factory) -> Machines:
    """Three workers on two "machines", run once for both tests of the module (each start of a
    worker process costs ~7 s of CPU on 2 cores): A is `scripts/search.py --workers 2` (a parent
    and two worker processes), B one `python -m nas search` with its own seed, both at once on
    the same database, both given its URL with a password on their command lines."""
    folder = tmp_path_factory.mktemp("machines")
    url = postgres.database("many").replace("nas@", f"nas:{SECRET}@")  # trust: accepted
    commands = {
        "A": [sys.executable, str(REPO / "scripts" / "search.py"), *FAST, "--workers", "2"],
        "B": [sys.executable, "-m", "nas", "search", *FAST, "--seed", "7"],
    }
    processes = {
        name: subprocess.Popen(
            [*command, "--storage", url],
            cwd=folder,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, command in commands.items()
    }
    leaked: set[str] = set()
    deadline = time.monotonic() + 240
    try:  # the workers' command lines, as long as they live
        while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
            leaked |= _command_lines_holding(SECRET, besides={p.pid for p in processes.values()})
            time.sleep(0.1)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    outputs = {
        name: subprocess.CompletedProcess(process.args, process.returncode, *process.communicate())
        for name, process in processes.items()
    }
    return Machines(url, folder, outputs, leaked, _summary(url))


@pytest.mark.slow  # a real PostgreSQL server and four worker processes: ~35 s on 2 cores
def test_three_workers_on_two_machines_record_what_one_worker_records(postgres, machines):
    # one worker, in this process
    single = postgres.database("single")
    config = SearchConfig(
        budget=BUDGET,
        trials=TRIALS,
        space=str(TINY),
        study="t",
        storage=single,
        pruner="none",
        heartbeat=1,
        grace=3,
    )
    data = DataConfig(dataset="synthetic", subset=48)
    recipe = Recipe(epochs=1, batch_size=16, augment="none")
    with one_torch_thread():
        run_search(config, data, recipe, Machine(device="cpu"))

    # three workers: "machine" A runs --workers 2, "machine" B one worker with its own seed
    for name, finished in machines.outputs.items():
        assert finished.returncode == 0, (name, finished.stderr)
        assert f"study 't': {TRIALS} trained candidates" in finished.stdout, name

    one, three = _summary(single), machines.summary
    for summary in (one, three):
        assert summary["numbers"] == list(range(len(summary["numbers"])))  # unique, no gaps
        assert summary["states"] <= {TrialState.COMPLETE, TrialState.PRUNED}  # no RUNNING/FAIL
        assert summary["over_budget"] == []
    assert three["trained"] == one["trained"] == TRIALS  # exactly the target, no overshoot
    assert three["trained_states"] == one["trained_states"] == {TrialState.COMPLETE}
    assert three["architectures"] == one["architectures"] == TRIALS  # none trained twice
    assert three["epochs"] == one["epochs"] == {(1,)}


@pytest.mark.slow  # the same server and processes, then a real retrain process: ~15 s more
def test_a_storage_password_reaches_no_output_file_or_worker_command_line(machines):
    """The searches of `machines` had the password on their own command lines: it must reach
    no worker's command line (A's two workers), none of their output, no file and no attribute;
    then a retrain that takes the URL from the environment alone."""
    for name, finished in machines.outputs.items():
        assert finished.returncode == 0, (name, finished.stderr)
        assert SECRET not in finished.stdout + finished.stderr, name
    assert machines.leaked == set()
    assert "nas:***@" in machines.outputs["A"].stdout

    # the retrain takes the URL from the environment alone: on no command line at all
    retrained = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "retrain_best.py"),
            "--study",
            "t",
            "--epochs",
            "1",
        ],
        cwd=machines.folder,
        env={**ENV, "NAS_STORAGE": machines.url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert retrained.returncode == 0, retrained.stderr
    assert SECRET not in retrained.stdout + retrained.stderr
    written = [path for path in machines.folder.rglob("*") if path.is_file()]
    assert any(path.name == "metrics.json" for path in written)
    assert [path for path in written if SECRET.encode() in path.read_bytes()] == []
    study = optuna.load_study(study_name="t", storage=machines.url)
    assert SECRET not in repr((study.user_attrs, [t.user_attrs for t in study.trials]))


def _terminate_connections(server: Server, database: str) -> int:
    """End every server connection to `database` (as an administrator or a restart would):
    how many were ended."""
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", port=server.port, user="nas", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        ended = cursor.fetchone()[0]
    admin.close()
    return ended


@pytest.mark.slow  # a real PostgreSQL server (~5 s to start on 2 cores)
def test_a_connection_the_server_dropped_is_replaced_before_use(postgres):
    url = postgres.database("dropped")
    study = optuna.create_study(study_name="d", storage=open_storage(url))
    assert _terminate_connections(postgres, "dropped") >= 1  # the storage's pooled connection
    study.set_user_attr("after", 1)  # fails with "terminating connection" on the dead one
    assert optuna.load_study(study_name="d", storage=url).user_attrs == {"after": 1}


@pytest.mark.slow  # a real PostgreSQL server (~5 s to start on 2 cores)
def test_workers_opening_an_empty_database_at_once_all_get_the_store(postgres):
    url = postgres.database("race")
    ready = threading.Barrier(WORKERS_AT_ONCE)

    def open_at_once(_: int) -> str:
        ready.wait()  # all create the tables at the same moment, as workers started together
        return type(open_storage(url).inner).__name__

    with ThreadPoolExecutor(WORKERS_AT_ONCE) as pool:
        opened = list(pool.map(open_at_once, range(WORKERS_AT_ONCE)))
    assert opened == ["RDBStorage"] * WORKERS_AT_ONCE


def _running(url: str) -> int:
    try:
        study = optuna.load_study(study_name="t", storage=url)
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


@pytest.mark.slow  # a real server stopped for 5 s (past the 3 s grace) under three processes: ~20 s
def test_a_server_restarted_under_two_workers_is_ridden_out(postgres, tmp_path):
    url = postgres.database("restart")
    command = [
        sys.executable, str(REPO / "scripts" / "search.py"), *FAST, "--epochs", "2",
        "--workers", "2", "--storage", url,
    ]  # fmt: skip
    search = subprocess.Popen(
        command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while _running(url) < 2 and search.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # both workers are training when the server goes
        assert search.poll() is None, search.communicate()
        postgres.restart_after(5)
        out, err = search.communicate(timeout=240)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, err
    assert f"study 't': {TRIALS} trained candidates" in out
    assert "Traceback" not in err
    # said among the progress lines (stdout) by the parent, which reads the store too; the
    # reason is what the driver said first ("connection refused", "terminating connection
    # due to administrator command", "server closed the connection": timing decides)
    assert f"the study store {url} is not answering (" in out and "is back after" in out
    summary = _summary(url)
    assert summary["trained"] == TRIALS and summary["architectures"] == TRIALS
    # none left RUNNING, and none failed: the trials the restart paused went on where they were
    assert summary["states"] <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert summary["epochs"] == {(1, 2)}
