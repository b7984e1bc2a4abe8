"""Checkpoint files: atomic replacement, damage detection, refusal of unsafe pickles."""

import hashlib
import io
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nas.train.checkpoint import (
    MAGIC,
    CheckpointError,
    cuda_states_to_restore,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)


def test_round_trip_keeps_tensors_and_values(tmp_path):
    path = tmp_path / "c.ckpt"
    state = {"w": torch.arange(6.0).reshape(2, 3), "epoch": 3, "history": [{"a": 1.5}]}
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], state["w"])
    assert loaded["epoch"] == 3 and loaded["history"] == [{"a": 1.5}]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint({"w": torch.ones(1000)}, path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    flipped = bytearray(blob)
    flipped[-100] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(path)


def _blob(payload: bytes, magic: bytes = MAGIC) -> bytes:
    """A checkpoint file by hand: magic, SHA-256 of the payload, the payload."""
    return magic + hashlib.sha256(payload).digest() + payload


def _saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


ADVICE = "delete it (or pass --fresh) to start over"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "checkpoint {path} does not exist"),
        # as long as a header but not this tool's magic: refused as foreign, not as damaged
        (b"NOTCKPT!" + bytes(32) + b"payload", "{path} is not a checkpoint written by this tool"),
        # a header and nothing after it: a well-formed file whose payload torch cannot read
        (_blob(b""), "checkpoint {path} holds content that is not plain tensors and values "
         "(EOFError); refusing to load it"),
        (_blob(_saved([1, 2])), "checkpoint {path} does not hold a state dictionary"),
    ],
)  # fmt: skip
def test_each_refusal_says_what_is_wrong_and_what_to_do(tmp_path, content, message):
    path = tmp_path / "c.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    expected = message.format(path=path)
    assert str(refused.value) == (expected if content is None else f"{expected}; {ADVICE}")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_malicious_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save({"model": Exploit()}, buffer)  # a well-formed file with a correct digest
    payload = buffer.getvalue()
    path = tmp_path / "evil.ckpt"
    path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    # a raw pickle under the checkpoint's name is refused before anything is unpickled
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    path = tmp_path / "rng.ckpt"
    save_checkpoint({"rng": rng_state()}, path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(3)  # move every generator on
    restore_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_checkpoint_from_a_two_gpu_node_resumes_where_no_gpu_exists(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the case is 'none visible'")
    path = tmp_path / "rng.ckpt"
    state = rng_state()
    # what a 2-GPU node saves: one Philox state (seed and offset, 16 bytes) per GPU
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    save_checkpoint({"rng": state}, path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(3)
    restore_rng_state(load_checkpoint(path)["rng"])  # set_rng_state_all raised IndexError here
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


@pytest.mark.parametrize(
    ("saved", "visible", "restored"),
    [(2, 0, 0), (2, 1, 1), (2, 2, 2), (1, 2, 1), (0, 2, 0), (8, 3, 3)],
)
def test_only_the_generators_of_gpus_that_exist_are_restored(saved, visible, restored):
    assert cuda_states_to_restore(saved, visible) == restored


def test_a_process_killed_mid_write_leaves_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint({"epoch": 1, "w": torch.zeros(10)}, path)
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        import nas.train.checkpoint as checkpoint
        import nas.files as files
        real_fsync = os.fsync
        def die(fd):  # the new file is written but not yet renamed: the worst moment
            os.kill(os.getpid(), signal.SIGKILL)
        files.os.fsync = die
        checkpoint.save_checkpoint({{"epoch": 2, "w": torch.ones(10_000_000)}}, {str(path)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert load_checkpoint(path)["epoch"] == 1
