"""Owns the journal-file store: Optuna's `JournalStorage` on one append-only file, the store for
a cluster's shared filesystem (NFS, Lustre, GPFS), where SQLite's locking is unreliable.

Its URL is `journal:///` followed by the file's path, the way SQLite's URL names its file:
`journal:///studies/nas.log` is relative to the working directory,
`journal:////shared/nas/study.log` (four slashes) is absolute. optuna-dashboard opens the file
itself: `optuna-dashboard /shared/nas/study.log` (`nas.commands.dashboard_command`).

Optuna's journal store has no heartbeat of its own; the beats every store gets from
`nas.store.steady.SteadyStore` serve it as they serve a database.

Claims:
- `journal_path` is the file a `journal:` URL names (parsed by SQLAlchemy's `make_url`, as every
  storage URL), None for any other URL; a `journal:` URL without a path is a UserError.
- Opening with `create=False` never creates the file: a missing one is one sentence.
"""

from __future__ import annotations

from pathlib import Path

from optuna.storages import JournalStorage

from nas.errors import UserError

SCHEME = "journal"


def journal_path(url: str) -> Path | None:
    """The file of a `journal:///PATH` store; None for another kind of URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.drivername != SCHEME:
        return None
    if not parsed.database:
        raise UserError(
            f"{url!r} names no journal file; write journal:///studies/nas.log (relative) or "
            "journal:////shared/nas/study.log (absolute)"
        )
    return Path(parsed.database)


def file_backend(path: Path):
    """Optuna's append-only file backend, under its public name in this Optuna: `journal.
    JournalFileBackend` since 4.0, `JournalFileStorage` before. Its default lock (a symlink)
    works on NFS."""
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # Optuna < 4.0
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return JournalFileBackend(str(path))


def open_journal(path: Path, *, create: bool = True) -> JournalStorage:
    """The journal store in `path`; with `create`, the file (and its folder) is made when
    missing (`nas.store.opening.open_storage` puts it behind the heartbeats every store has)."""
    if not create and not path.is_file():
        raise UserError(
            f"there is no study store at {path}; run a search first (nas search) or pass "
            "--storage with the store's URL"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(file_backend(path))
    except OSError as error:
        raise UserError(f"cannot create the journal store {path}: {error}") from None
