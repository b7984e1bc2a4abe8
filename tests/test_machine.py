"""nas.config.machine: the CPUs this process may use follow its affinity, not the machine's size."""

from __future__ import annotations

import os

import pytest

from nas.config.machine import usable_cpus


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_usable_cpus_follows_this_process_s_affinity():
    allowed = os.sched_getaffinity(0)
    one = min(allowed)
    try:
        os.sched_setaffinity(0, {one})
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert usable_cpus() == len(allowed)


def test_usable_cpus_is_at_least_one_and_at_most_the_machine_s():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
