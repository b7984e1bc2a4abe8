"""A disk that fills (nas.files.write_atomic): a retrain whose run folder sits on a full
filesystem ends with one sentence naming the path and exit 2, leaves no half-written or
temporary file, and the same command resumes from its intact checkpoint once space is freed.
The filesystem is a real tmpfs mounted small for the test (skipped, with the reason, where
mounting is not allowed)."""

from __future__ import annotations

import subprocess

import pytest

from nas.arch.architecture import Architecture
from nas.cli.main import main

from helpers import one_torch_thread, run_in_process


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_a_retrain_on_a_full_disk_is_one_sentence_and_finishes_once_space_is_freed(
    small_disk, tmp_path
):
    arch = tmp_path / "arch.json"
    arch.write_text(Architecture((8,), (1,), stem=8).to_json())
    run = small_disk / "run"
    argv = ["retrain", "--arch", str(arch), "--dataset", "synthetic", "--subset", "40",
            "--epochs", "1", "--augment", "none", "--device", "cpu", "--out", str(run)]  # fmt: skip
    with one_torch_thread():  # 1 MiB holds the checkpoint, not the curves page (plotly.js)
        status, _, err = run_in_process(main, argv)
    assert status == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device to write ") and str(run) in last
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]  # no temp file
    assert (run / "checkpoint.ckpt").is_file() and not (run / "metrics.json").exists()

    checkpoint = (run / "checkpoint.ckpt").read_bytes()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # freed
    with one_torch_thread():
        status, out, err = run_in_process(main, argv)
    assert status == 0, err
    # resumed from the checkpoint the full disk left intact: its one epoch not trained again
    assert (run / "checkpoint.ckpt").read_bytes() == checkpoint
    assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]
