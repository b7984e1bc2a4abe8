"""Owns checkpoint files: atomic writes, verified safe loads, and the random-number state.

Claims:
- `save_checkpoint` never leaves a half-written file under the checkpoint's name: it writes
  through `nas.files.write_atomic` (a temporary file in the same folder, flushed to disk, then
  `os.replace`d over the old one), so a process killed mid-write leaves the last good
  checkpoint in place.
- `load_checkpoint` detects a truncated or corrupt file (the file carries a SHA-256 digest of its
  payload) and raises `CheckpointError` instead of using it; the payload is read with
  `torch.load(weights_only=True)`, so a checkpoint holding a malicious pickle is refused, never
  executed.
- `rng_state()` / `restore_rng_state()` capture python, numpy, torch and CUDA generators as
  tensors and plain values, which `weights_only=True` can load.
- A checkpoint resumes on a machine with fewer GPUs than the one that wrote it, or none: only
  the CUDA generator states of GPUs that exist here are restored (`cuda_states_to_restore`).

File layout: 8 bytes of magic, 32 bytes of SHA-256 over the payload, then the payload, which is
an ordinary `torch.save` archive.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.errors import UserError
from nas.files import write_atomic

MAGIC = b"NASCKPT1"  # identifies the format (and its version) before anything is unpickled
DIGEST_BYTES = 32  # SHA-256


class CheckpointError(UserError):
    """A checkpoint that cannot be trusted: missing, truncated, corrupt or not ours."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` to `path` atomically: the old file stays until the new one is complete."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()  # a view: the blob below is the only copy
    write_atomic(path, b"".join((MAGIC, hashlib.sha256(payload).digest(), payload)))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, refusing anything damaged or unsafe."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    header = len(MAGIC) + DIGEST_BYTES
    advice = "delete it (or pass --fresh) to start over"
    if len(blob) < header or not blob.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a checkpoint written by this tool; {advice}")
    digest, payload = blob[len(MAGIC) : header], blob[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt; {advice}")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for unsafe content, RuntimeError for damage
        raise CheckpointError(
            f"checkpoint {path} holds content that is not plain tensors and values "
            f"({type(error).__name__}); refusing to load it; {advice}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dictionary; {advice}")
    return state


def rng_state() -> dict[str, Any]:
    """Every random generator the training touches, in a form `weights_only` loading accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["kind"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index in range(cuda_states_to_restore(len(state.get("cuda", ())), visible)):
        torch.cuda.set_rng_state(state["cuda"][index], index)


def cuda_states_to_restore(saved: int, visible: int) -> int:
    """How many saved CUDA generator states to restore (GPUs 0 to n-1): those of the GPUs that
    exist here. A checkpoint from a node with more GPUs resumes on fewer (or none); one from
    fewer leaves the other GPUs' generators as they are (this process's training uses one)."""
    return max(0, min(saved, visible))
