"""Fixtures shared by the test modules (plain helpers live in helpers.py)."""

from __future__ import annotations

import pytest

from helpers import one_torch_thread


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole module (use it with `pytest.mark.usefixtures` in the
    module's `pytestmark`): on a shared 2-core machine two threads run tiny nets ~10x slower."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session", autouse=True)
def one_thread_for_every_test():
    """One torch thread for the whole session, in every module (the same as `one_thread`):
    measured on the 2-core machine, tests/test_model.py took 40 s with two threads and 13 s with
    one while one other process was busy. A test that needs more threads sets them inside
    itself, or runs a process with OMP_NUM_THREADS (the issue-10 case in test_train.py)."""
    with one_torch_thread():
        yield


@pytest.fixture(autouse=True)
def optunas_default_log_level():
    """Every test starts at Optuna's default log level (WARNING), as when it runs alone: a
    command run in-process (`nas.cli.common.quiet_optuna`) lowers it for the whole process, and
    a test that reads Optuna's warnings would otherwise pass or fail by which tests ran first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
