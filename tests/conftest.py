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
