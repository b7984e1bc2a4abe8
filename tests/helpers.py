"""Plain helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def fresh_python(code: str) -> str:
    """What `code` prints in a fresh interpreter importing this checkout's `nas` (this one has
    imported torch, optuna and CUDA state long ago); a failing run fails the test."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ctrl_c_as_by_default() -> None:
    """For `subprocess.Popen(preexec_fn=...)`: the child gets SIGINT's default disposition, so
    Python turns Ctrl-C into KeyboardInterrupt there. Without it the child inherits this
    process's: a suite started as a background job of a non-interactive shell (`bash -c 'pytest
    &'`, a CI runner's) has SIGINT ignored, and so would every process it starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def dashboard_command() -> list[str]:
    """The `optuna-dashboard` console script installed beside this Python, as a user runs it."""
    script = Path(sys.executable).parent / "optuna-dashboard"
    found = str(script) if script.exists() else shutil.which("optuna-dashboard")
    if found is None:
        unavailable("optuna-dashboard is not installed (pip install -e '.[test]')")
    return [found]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch thread inside the block: on a shared 2-core machine two threads run the tests'
    tiny nets much slower (~10x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TorchCalls(torch.overrides.TorchFunctionMode):
    """Records every torch function and tensor method called inside the block, through torch's
    public `TorchFunctionMode`: `names` in call order, and `calls` as (name, the module whose
    code made the call), e.g. to count the host synchronisations our own code asks for, or to
    show that nothing ran a model."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        caller = inspect.currentframe().f_back  # the Python code that called `func`
        module = caller.f_globals.get("__name__", "") if caller is not None else ""
        self.calls.append((getattr(func, "__name__", str(func)), module))
        return func(*args, **(kwargs or {}))


def hook_counted_macs(model: torch.nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one image's forward pass, from each convolution's and linear
    layer's own shapes as it runs: output elements x (input channels / groups) x kernel area
    for a convolution, in x out features for a linear layer. Knows nothing of
    nas.arch.architecture."""
    total = 0

    def count(module: torch.nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        per_image = output.numel() // output.shape[0]
        if isinstance(module, torch.nn.Conv2d):
            kernel_area = module.kernel_size[0] * module.kernel_size[1]
            total += per_image * (module.in_channels // module.groups) * kernel_area
        else:
            total += per_image * module.in_features

    handles = [
        module.register_forward_hook(count)
        for module in model.modules()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def timeless(history: list) -> list[dict]:
    """History rows (`EpochRow`s) without their timing column: a resumed run keeps every other
    number."""
    return [{k: v for k, v in row.to_dict().items() if k != "seconds"} for row in history]


def epoch_time(row: dict) -> float:
    """The time an epoch took as its history row (a dict or a history.csv row) records it: a
    kept epoch keeps it to the last digit, one trained again does not."""
    return float(row["seconds"])


def unavailable(reason: str) -> None:
    """A test's server or tool cannot start here: skip, saying why; under CI (CI=true) fail, so
    a CI machine without it is red instead of silently testing less."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> dict:
    """GET `url`: it must answer 200 with a JSON body, which is returned."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def running_with_an_epoch(trials: list[FrozenTrial]) -> int | None:
    """The number of the first RUNNING trial that has reported an epoch, if any."""
    for trial in trials:
        if trial.state == TrialState.RUNNING and trial.intermediate_values:
            return trial.number
    return None


def wait_for_trials(
    process: subprocess.Popen,
    store: Path,
    study: str,
    predicate: Callable[[list[FrozenTrial]], T | None],
    timeout: float = 90.0,
) -> T:
    """Watch `study` in the SQLite file `store` (opened read-only through Optuna) while `process`
    runs, until `predicate(trials)` returns something other than None; return that.

    The process must stay alive meanwhile; on timeout it is killed and the wait fails."""
    deadline = time.monotonic() + timeout
    storage = None
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if storage is None and store.exists():
            with contextlib.suppress(Exception):  # the process may still be creating tables
                storage = optuna.storages.RDBStorage(
                    f"sqlite:///file:{store}?mode=ro&uri=true",
                    skip_compatibility_check=True,
                    skip_table_creation=True,
                )
        if storage is not None:
            with contextlib.suppress(KeyError):
                study_id = storage.get_study_id_from_name(study)
                found = predicate(storage.get_all_trials(study_id, deepcopy=False))
                if found is not None:
                    return found
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{predicate.__name__} never held within {timeout} s")


def run_in_process(entry: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str, str]:
    """Run a command-line entry point (`nas.cli.main.main`, `search_main`, ...) in this process:
    (exit status, stdout, stderr). For a test whose point is not the process itself, this saves
    the ~4-7 s of CPU a fresh interpreter spends importing torch on the 2-core machine."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = entry(argv)
        except SystemExit as exit_:  # argparse's refusals exit from parse_args
            status = exit_.code
    return status, out.getvalue(), err.getvalue()
