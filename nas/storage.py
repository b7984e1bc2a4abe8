"""Owns the study store: opening any Optuna storage URL, with what several workers and a
reading dashboard need, and the heartbeat-based recovery of trials whose process died.

Claims: a SQLite store is switched to WAL (a dashboard reads while workers write) and waits up
to a minute for another writer instead of failing with "database is locked"; a server store
pings its connections before use; opening retries while another worker creates the same tables;
a trial whose heartbeat stops for the grace period is failed and its parameters re-enqueued;
a bad URL or a missing database driver is one sentence (`UserError`).
"""

from __future__ import annotations

import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from nas.errors import UserError

DEFAULT_STORAGE = "sqlite:///studies/nas.db"


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and, through the storage's callback, re-enqueue) trials whose heartbeat stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def make_storage(url: str, heartbeat: int = 30, grace: int = 90) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` with heartbeats every `heartbeat` seconds; a RUNNING trial
    silent for `grace` seconds is stale: failed, and its parameters re-enqueued."""
    if url.startswith("sqlite:///"):
        _prepare_sqlite(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # wait up to a minute for another writer instead of failing with "database is locked"
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True  # survive server-side connection drops
    try:
        return _open_rdb(url, engine_kwargs, heartbeat, grace)
    except ImportError as error:
        # Optuna re-raises its own ImportError; the missing module is named by the cause
        missing = getattr(error.__cause__ or error.__context__, "name", None) or error.name
        raise UserError(
            f"the storage {url} needs a database driver that is not installed ({missing}); "
            "install it, e.g. pip install psycopg2-binary for PostgreSQL"
        ) from None
    except Exception as error:  # sqlalchemy's ArgumentError, OperationalError and friends
        raise UserError(
            f"cannot open the storage {url}: {str(error).splitlines()[0]}; "
            "check the URL, e.g. sqlite:///studies/nas.db"
        ) from None


def _open_rdb(url: str, engine_kwargs: dict[str, Any], heartbeat: int, grace: int) -> RDBStorage:
    """RDBStorage, retried when another worker is creating the same tables at the same moment
    (on an empty PostgreSQL database two CREATE TABLEs race: "duplicate key ... pg_type")."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats and retries are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    **_stale_trial_retry(max_retry=2),
                )
        except (IntegrityError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _stale_trial_retry(max_retry: int) -> dict[str, Any]:
    """Re-enqueue a stale trial's parameters, under whichever name this Optuna spells it."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        return {"heartbeat_stale_trial_callback": callback}
    callback = optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)
    return {"failed_trial_callback": callback}


def _prepare_sqlite(url: str) -> None:
    path = Path(url.removeprefix("sqlite:///"))
    if str(path) in ("", ":memory:"):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # WAL lets a dashboard read while workers write; it is a property of the file, set once
        with sqlite3.connect(path, timeout=60) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.Error) as error:
        raise UserError(f"cannot create the SQLite store {path}: {error}") from None
