"""Owns the study store: storage URLs (parsed with SQLAlchemy, shown with the password masked),
opening any Optuna storage with what several workers and a reading dashboard need, behind
`nas.store.steady.SteadyStore` (a short outage is ridden out; the trials this process runs
beat, and `nas.search.reaper` fails those whose beat stopped).

Claims:
- A storage URL is parsed by SQLAlchemy's `make_url`, never by string prefixes; wherever the
  tool shows or stores one, the password is masked (`display_url`). `NAS_STORAGE` in the
  environment is the default store, so a password need not appear on a command line.
- A SQLite store is switched to WAL (a dashboard reads while workers write) and waits up to a
  minute for another writer instead of failing with "database is locked"; a server store pings
  its connections before use; opening retries while another worker creates the same tables
  (PostgreSQL or a new SQLite file). Every SQLite transaction takes the write lock at its
  start (BEGIN IMMEDIATE), so two workers never both take one enqueued trial.
- Read-only use (`create=False`: reports, retrains, listings) never creates a store: a missing
  SQLite file or an empty database is one sentence, and nothing is written.
- Every store this opens is a `SteadyStore`: with `create`, the trials this process runs beat
  every `heartbeat` seconds, whatever the kind of store (an RDB store's and a journal file's
  beats are the same record, which `nas.search.reaper` reads).
- A malformed URL, a missing driver or an unreachable database is one sentence (`UserError`);
  any other error is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from nas.config.search import DEFAULT_STORAGE, STORAGE_ENV, SearchConfig
from nas.errors import UserError
from nas.store.journal import journal_path, open_journal
from nas.store.steady import SteadyStore


def default_storage() -> str:
    """The store a command uses when none is named: `$NAS_STORAGE`, else the SQLite default."""
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def parse_url(url: str):
    """SQLAlchemy's URL object for `url`, or a UserError saying what a storage URL looks like."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        raise UserError(
            f"{display_url(url)!r} is not a storage URL; write one like "
            "sqlite:///studies/nas.db, journal:///studies/nas.log or "
            "postgresql+psycopg2://USER@HOST/DB"
        ) from None


def check_url(url: str) -> None:
    """Refuse a malformed URL or one whose database driver is missing, touching nothing: what
    a command checks before it loads data or trains."""
    from sqlalchemy.exc import NoSuchModuleError

    if journal_path(url) is not None:  # a file Optuna writes itself: no driver to check
        return
    parsed = parse_url(url)
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, NoSuchModuleError) as error:
        missing = getattr(error, "name", None) or parsed.drivername
        raise UserError(
            f"the storage {display_url(url)} needs a database driver that is not installed "
            f"({missing}); install it, e.g. pip install psycopg2-binary for PostgreSQL"
        ) from None


def display_url(url: str) -> str:
    """`url` as it may be printed, logged or stored: with its password masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unparsable: mask whatever sits between "user:" and "@"
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store, None for an in-memory one or another database."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def store_file(url: str) -> Path | None:
    """The file a store lives in (a SQLite database or a journal), None for a server store."""
    return journal_path(url) or sqlite_path(url)


def artifact_dir(url: str) -> Path | None:
    """Where a retrain's files go for the dashboard: `artifacts/` beside a file store."""
    store = store_file(url)
    return store.parent / "artifacts" if store is not None else None


def open_storage(
    url: str,
    *,
    heartbeat: float = SearchConfig.heartbeat,
    create: bool = True,
    outage: float = SearchConfig.store_wait,
    say: Callable[[str], None] | None = None,
) -> SteadyStore:
    """An Optuna storage for `url`, riding out outages of up to `outage` seconds (told through
    `say`, by default a line on stderr). With `create`, the store (file, tables) is made when
    missing, and the trials this process runs beat every `heartbeat` seconds. Without it, a
    missing store is a UserError and nothing is written."""
    shown = display_url(url)
    journal = journal_path(url)
    if journal is not None:
        inner = open_journal(journal, create=create)
    else:
        inner = _open_rdb_store(url, shown, create)
    heartbeat_or_none = heartbeat if create else None  # a store only read runs no trial
    return SteadyStore(inner, shown, heartbeat=heartbeat_or_none, outage=outage, say=say)


def _open_rdb_store(url: str, shown: str, create: bool) -> RDBStorage:
    parsed = parse_url(url)
    path = sqlite_path(url)
    if path is not None and not create and not path.is_file():
        raise UserError(
            f"there is no study store at {path}; run a search first (nas search) or pass "
            "--storage with the store's URL"
        )
    if path is not None and create:
        _prepare_sqlite(path)
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        # wait up to a minute for another writer instead of failing with "database is locked"
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True  # survive server-side connection drops
    from sqlalchemy.exc import DBAPIError, NoSuchModuleError

    try:
        if create:
            storage = _open_rdb(url, engine_kwargs)
        else:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True)
        if path is not None:
            _one_transaction_at_a_time(storage)
        return storage
    except (ImportError, NoSuchModuleError) as error:
        # Optuna re-raises its own ImportError; the missing module is named by the cause
        missing = getattr(error.__cause__ or error.__context__, "name", None)
        missing = missing or getattr(error, "name", None) or parsed.drivername
        raise UserError(
            f"the storage {shown} needs a database driver that is not installed ({missing}); "
            "install it, e.g. pip install psycopg2-binary for PostgreSQL"
        ) from None
    except DBAPIError as error:  # cannot connect, no such database, no tables (read-only)
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        what = "reach" if create else "read a study store from"
        raise UserError(f"cannot {what} the storage {shown}: {reason}") from None


def _open_rdb(url: str, engine_kwargs: dict[str, Any]) -> RDBStorage:
    """RDBStorage, retried when another worker is creating the same tables at the same moment
    (on an empty PostgreSQL database two CREATE TABLEs race: "duplicate key ... pg_type"; on a
    new SQLite file both see no table, and the second CREATE TABLE finds "table ... already
    exists"); a retry finds the tables made and goes on."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(5):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs)
        except (IntegrityError, ProgrammingError, OperationalError) as error:
            # "locked": in WAL mode a read snapshot that another creator's commit made stale
            # cannot be upgraded to write, and SQLite says so at once instead of waiting
            creating = not isinstance(error, OperationalError) or any(
                sign in str(error) for sign in ("already exists", "database is locked")
            )
            if attempt == 4 or not creating:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _one_transaction_at_a_time(storage: RDBStorage) -> None:
    """Make every transaction on a SQLite store BEGIN IMMEDIATE (SQLAlchemy's documented
    pysqlite recipe: no implicit transactions, BEGIN on SQLAlchemy's begin).

    Why: pysqlite begins a transaction only at the first write, so Optuna's read-then-write
    steps are not atomic across processes: two workers asking at once both read the same
    WAITING (enqueued, e.g. a killed worker's retried) trial and both set it RUNNING, train it,
    and the second to finish dies in "Cannot tell a COMPLETE trial". Optuna's SELECT ... FOR
    UPDATE, which keeps PostgreSQL safe, means nothing to SQLite; taking the write lock at BEGIN
    does the same there (the 60 s busy timeout waits for it)."""
    from sqlalchemy import event

    def no_implicit_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    def begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(storage.engine, "connect", no_implicit_transactions)
    event.listen(storage.engine, "begin", begin_immediate)
    storage.engine.dispose()  # connections opened before the listeners get them when reopened


def stale_trial_callback(max_retry: int):
    """Re-enqueue a stale trial's parameters, under whichever name this Optuna spells it."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    return optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)


def _prepare_sqlite(path: Path, wait: float = 60.0) -> None:
    """Make the store's folder and put the file in WAL mode (a dashboard reads while workers
    write; it is a property of the file, set once), waiting up to `wait` seconds for another
    process that holds the file's write lock, e.g. one creating the same new store."""
    deadline = time.monotonic() + wait
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while not _set_wal(path):
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked")
            time.sleep(0.05)
    except (OSError, sqlite3.Error) as error:
        raise UserError(f"cannot create the SQLite store {path}: {error}") from None


def _set_wal(path: Path) -> bool:
    """True once the file is in WAL mode; False while another process holds its write lock.

    Why the loop above and not the busy timeout alone: switching to WAL upgrades a read lock to
    a write lock, and SQLite answers "database is locked" at once, without waiting, when another
    connection holds the write lock (waiting could deadlock) - four processes opening one new
    store at the same moment hit it."""
    try:
        connection = sqlite3.connect(path, timeout=60)
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
        return True
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            return False
        raise
