"""The study store, a foundation every layer may use: where a study's trials live, and what
every process does to share them safely.

- `opening`: storage URLs (parsed by SQLAlchemy, shown with the password masked) and opening
  any Optuna store with what several workers and a reading dashboard need (SQLite's WAL and
  write lock, table creation raced by several processes, a missing store refused).
- `steady`: `SteadyStore`, what every store opened is wrapped in: a short outage ridden out
  with a bounded backoff, then one sentence; the heartbeats of the trials this process runs.
- `finished_trials`: this process's copy of a study's finished trials, so that a read of the
  study costs its unfinished and new trials only.
- `journal`: the journal-file store (`journal:///PATH`) for a cluster's shared filesystem.

It imports only the other foundations (`errors`, `records`, `config`), Optuna and SQLAlchemy;
never torch.
"""
