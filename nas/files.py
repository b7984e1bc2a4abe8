"""Owns how the tool writes a file: every file it writes goes through `write_atomic`; and the
file name a user's name (a study's) becomes (`safe_file_name`).

Claims:
- A file is never seen half-written under its name: the data goes to a temporary file in the
  same folder (so the final rename stays on one file system), is flushed and fsync'd, and only
  then `os.replace`s the old file. A process killed mid-write leaves the old file intact and,
  at worst, a `.<name>.*.tmp` file beside it; any exception raised while writing removes it.
- A full disk or quota (ENOSPC, EDQUOT) is a `UserError` of one sentence naming the path.
- The file gets the user's normal permissions, 0o666 less the umask, as `open()` would give it,
  not the 0o600 of `tempfile.mkstemp`: teammates on a shared machine can read the models.
- `safe_file_name(name)` is `name` itself when it is already a safe file name (letters, digits,
  `.`, `_`, `-`; not `.` or `..`; at most `SAFE_NAME_LENGTH` characters), so existing studies'
  files stay where they are; any other name becomes its safe characters (others as `_`, cut to
  `SAFE_NAME_LENGTH`) plus `-` and 8 hex digits of its SHA-256: never a path separator or a
  parent folder, and two names never share a file ("my study" and "my_study" differ).
No torch, no optuna.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

from nas.errors import UserError

SAFE_NAME_LENGTH = 120  # well under the 255 bytes a file name may take, with a suffix added
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_UMASK_LOCK = threading.Lock()  # reading the umask means setting it: one thread at a time


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (str is encoded as UTF-8) to `path` atomically; returns the path.

    Missing parent folders are created. The old file, if any, stays until the new one is
    complete on disk. A full disk (or quota) is a UserError naming the path, the temporary file
    removed and the old file intact, so the same command resumes once space is freed."""
    path = Path(path)
    try:
        return _write_atomic(path, data)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(
            f"no space left on the device to write {path}: free some space there and run the "
            "same command again (what was written before is intact)"
        ) from None


def _write_atomic(path: Path, data: bytes | str) -> Path:
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


def safe_file_name(name: str) -> str:
    """`name` as one file name inside a folder (see the module): unchanged when already safe."""
    if _SAFE_NAME.fullmatch(name) and name not in (".", "..") and len(name) <= SAFE_NAME_LENGTH:
        return name
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:SAFE_NAME_LENGTH]
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}"
