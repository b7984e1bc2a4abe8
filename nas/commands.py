"""Owns every command line the tool prints for a person to run next: `nas retrain` (a study's
trial, or a finished run rebuilt) and `optuna-dashboard` (a journal store named by its file).

Each is built from its words and joined with `shlex.quote`, so a study named `my study` or a
folder with a space prints a command a shell runs as printed. The store is named with
`--storage` only when it is not the one a command uses anyway (`$NAS_STORAGE`, else the
built-in default), with any password masked (`nas.store.opening.display_url`).

A value a user chose (a study name, a store, a folder) that starts with `-` is given as
`--flag=VALUE` (`option`), so it is never read as a flag; any other as `--flag VALUE`.

Claims: a printed command, split as a shell splits it and parsed by `nas`'s own parser, gives
back the study name, trial and folders it was built from, whatever the name.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path


def join(words: Sequence[str]) -> str:
    """Words as one command line a POSIX shell splits back into the same words."""
    return " ".join(shlex.quote(str(word)) for word in words)


def option(flag: str, value: str) -> list[str]:
    """`flag` and `value` as words a parser reads back as that flag's value: one word
    `--flag=VALUE` when the value starts with `-` (argparse would take it for a flag)."""
    return [f"{flag}={value}"] if value.startswith("-") else [flag, value]


def storage_words(storage: str) -> list[str]:
    """`["--storage", URL]` with its password masked, or [] when `storage` is empty or the store
    a command uses without the flag."""
    if not storage:
        return []
    from nas.store.opening import (  # opens no store: no optuna at import
        default_storage,
        display_url,
    )

    return [] if storage == default_storage() else option("--storage", display_url(storage))


def retrain_command(
    study: str, trial: int | None = None, storage: str = "", extra: Sequence[str] = ()
) -> str:
    """`nas retrain --study S [--trial N] [--storage URL] [EXTRA...]`."""
    words = ["nas", "retrain", *option("--study", study)]
    if trial is not None:
        words += ["--trial", str(trial)]
    return join([*words, *storage_words(storage), *extra])


def dashboard_command(storage: str, artifact_dir: str | Path | None = None) -> str:
    """`optuna-dashboard URL [--artifact-dir DIR]`: the dashboard always needs the store named;
    a journal store by its file's path, which optuna-dashboard opens as a journal."""
    from nas.store.journal import journal_path
    from nas.store.opening import display_url

    journal = journal_path(storage)
    words = ["optuna-dashboard", str(journal) if journal is not None else display_url(storage)]
    return join(words + (option("--artifact-dir", str(artifact_dir)) if artifact_dir else []))
