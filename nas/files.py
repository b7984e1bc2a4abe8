"""Owns how the tool writes a file: every file it writes goes through `write_atomic`.

Claims:
- A file is never seen half-written under its name: the data goes to a temporary file in the
  same folder (so the final rename stays on one file system), is flushed and fsync'd, and only
  then `os.replace`s the old file. A process killed mid-write leaves the old file intact and,
  at worst, a `.<name>.*.tmp` file beside it; any exception raised while writing removes it.
- The file gets the user's normal permissions, 0o666 less the umask, as `open()` would give it,
  not the 0o600 of `tempfile.mkstemp`: teammates on a shared machine can read the models.
No torch, no optuna.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()  # reading the umask means setting it: one thread at a time


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (str is encoded as UTF-8) to `path` atomically; returns the path.

    Missing parent folders are created. The old file, if any, stays until the new one is
    complete on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode("utf-8") if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the name points at it
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _current_umask() -> int:
    """The process umask. The only way to read it sets it, so it is put straight back."""
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask
