"""benchmarks/gpu_acceptance.py --cpu: the GPU acceptance still runs, small, on the CPU (what
CI proves before a GPU ever runs it): exit 0, a JSON where every check passed or says why it
was skipped, and RESULTS.md left alone (only a GPU run, or --record, appends to it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_acceptance.py"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CHECKS = [
    "augment", "bf16", "fused_adam", "compile", "oom", "workers", "costs", "epoch", "profile",
]  # fmt: skip


@pytest.mark.slow  # 20-45 s on a shared 2-core CPU, most of it importing torch and training
def test_the_cpu_acceptance_passes_and_writes_its_json(tmp_path):
    out = tmp_path / "acceptance.json"
    results_before = RESULTS.read_bytes()
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--out", str(out)],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu" and report["passed"] is True
    assert [check["name"] for check in report["checks"]] == CHECKS
    for check in report["checks"]:
        assert check["status"] in ("passed", "skipped"), check
        if check["status"] == "skipped":
            assert check["summary"].startswith("skipped"), check  # with its reason
    by_name = {check["name"]: check for check in report["checks"]}
    augment = by_name["augment"]["figures"]
    assert augment["exact"] == len(augment["per_op"]) > 20  # every op, all exact on the CPU
    epoch = by_name["epoch"]["figures"]
    assert min(epoch["reference_mean"], epoch["ours_mean"], epoch["floor_mean"]) > 0
    assert by_name["oom"]["summary"] == "skipped: needs CUDA"
    costs = by_name["costs"]["figures"]  # issue 14: measured on the CPU, the memory estimated
    assert costs["memory"]["measured"] is False and costs["trained_within_budgets"] is True
    assert RESULTS.read_bytes() == results_before  # --cpu without --record records nothing
    assert list(tmp_path.iterdir()) == [out]
