"""The torch-free configuration (nas/config.py, nas/config_search.py): the commands that only
read it start without torch or optuna, and the choice lists agree with what uses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.autoaugment import POLICIES
from nas.config import POLICY_NAMES

ROOT = Path(__file__).resolve().parents[1]

# Runs `nas ARGV...` in this interpreter as `python -m nas` would, then names the heavy
# packages the run imported on stderr's last line.
PROBE = """
import runpy, sys
sys.argv = ["nas", *sys.argv[1:]]
try:
    runpy.run_module("nas", run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    status = exit_.code
else:
    status = 0
loaded = [name for name in ("torch", "optuna") if name in sys.modules]
print(f"status={status} heavy={','.join(loaded) or 'none'}", file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["params", "--preset", "paper-model1"], ["space", "--list"]],
    ids=["help", "params", "space-list"],
)
def test_reading_commands_import_neither_torch_nor_optuna(argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, cwd=ROOT
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last == "status=0 heavy=none", result.stderr
    assert result.stdout.strip()  # the command printed what it was asked for


@pytest.mark.slow  # imports torch in a fresh process: seconds on a busy machine
def test_the_probe_sees_torch_when_a_command_loads_it():
    """The check above can fail: `nas export` loads a run with torch (here: none there)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
    argv = ["export", "no-such-run", "--format", "torchscript"]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, cwd=ROOT
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("status=2 heavy=torch"), result.stderr


def test_autoaugment_holds_every_policy_the_settings_accept_in_their_order():
    assert tuple(POLICIES) == POLICY_NAMES == ("cifar10", "svhn", "imagenet")
