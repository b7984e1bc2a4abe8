"""Owns the records contract: every key the tool writes on a study or a trial, and the typed
records on a study. How a trial is read back from these records (its kind, accuracy, costs) is
`nas.trial_view`.

A study in the store is the tool's whole memory: a retrain needs only the study name, a report
only the store, a resume only the command. So what each record means is decided here, once:

- Trial user attributes (`PARAMS`, `ARCHITECTURE`, ...) are written by the search as it gates,
  deduplicates and trains a candidate; study user attributes (`BUDGET`, `SPACE_TEXT`,
  `DATASET`, `RECIPE`, ...) when the study is created. Per-epoch validation accuracy is the
  trial's intermediate values.
- A retrain's result is recorded on the study (`retrain_record`), keyed by the trial number,
  through Optuna's public API: a finished trial is immutable in Optuna, and we keep it so.
- The records on the study are typed here: a confirmation run (`Confirmation`), a retrain
  (`Retrained`), a run's time account (`TimeAccount`); `to_dict` writes the JSON keys studies
  already hold, `from_dict` reads them back and refuses a key none of them has. The keys inside
  the other dict-valued records (`WORKER`, `OBJECTIVE`, `SEARCH`) are named here too.

Studies written by the earlier version of the tool read the same (their trials carry the same
keys; their retrain results on the trial itself are still found).

Imports of `nas` only the configuration's value check (`nas.config.fields.is_finite`), and of
Optuna only its trial types.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from optuna.trial import FrozenTrial

from nas.config.fields import is_finite

# ---- trial user attributes ---------------------------------------------------------------

PARAMS = "params"  # exact parameter count (int), set before the budget gate
ARCHITECTURE = "architecture"  # the Architecture as compact JSON: machines read this one
ARCH_LINE = "arch"  # the printed form, e.g. 64,128,128,256 / 5,4,3,2 / k3 / s3: people read this
MACS = "macs"  # multiply-accumulates per image (1 MAC = 2 FLOPs); "flops" in older studies
LATENCY_MS = "latency_ms"  # median inference latency in ms (when the study measures latency)
LATENCY = (
    "latency"  # that measurement in full: quartiles, runs, seconds (nas.costs.latency.Latency)
)
MEMORY_MB = "memory_mb"  # peak training-step memory in MB (when the study has a memory budget)
MEMORY = "memory"  # that figure in full, measured or estimated (nas.costs.memory)
EXCESS = "excess"  # {budget: cost - limit} for every budget checked; <= 0 is within it
CONSTRAINT = "constraint"  # all budgets in one number, <= 0 feasible (Optuna 4.x samplers' view)
OVER_BUDGET_BY = "over_budget_by"  # {budget: excess} of the budgets a rejected candidate broke
# (studies of the earlier version: an int, the parameters over the one budget)
OUT_OF_MEMORY = "out_of_memory"  # the device the candidate ran out of memory on (measured, trained)
CURVE = "val_accuracy_curve"  # per-epoch validation accuracy where Optuna keeps none (Pareto)
DUPLICATE_OF = "duplicate_of"  # the trial number whose identical architecture was trained
NOT_NEEDED = "not_needed"  # True: lost the race for the study's last places to other workers
PRUNE_REASON = "prune_reason"  # one line: why the trial was pruned or stopped
WARM_START = "warm_start"  # the reference model (preset name) a warm start queued first
CONFIRMS = "confirms"  # on a confirmation claim (nas.search.confirm): the trial it confirms
CLAIM_TOKEN = "claim"  # on a confirmation's claim: the id its process finds it by
RETRY_OF = "retry_of"  # enqueued again after this trial was interrupted (Ctrl-C, SIGTERM)
STOPPED_AFTER_EPOCH = "stopped_after_epoch"  # a stop request ended the trial after this epoch
TRAINED = "trained"  # True once the candidate trained to the end or until the pruner stopped it
EPOCHS = "epochs"  # epochs the candidate trained
BEST_VAL_LOSS = "best_val_loss"  # lowest validation loss over its epochs
BEST_VAL_ACCURACY = "best_val_accuracy"  # highest validation accuracy over its epochs
SECONDS_PER_EPOCH = "seconds_per_epoch"  # mean wall seconds of its epochs
DEVICE = "device"  # where it trained, e.g. cuda:0
WORKER = "worker"  # {"host", "pid"} of the process running the trial: set first, before training
WORKER_HOST, WORKER_PID = "host", "pid"  # the keys of a WORKER record (nas.store.opening)
HEARTBEAT = (
    "nas:heartbeat"  # a system attribute: a journal-store trial's last beat (nas.store.journal)
)
# What a duplicate copies from the trial it repeats.
COPIED_BY_DUPLICATES = (BEST_VAL_LOSS, BEST_VAL_ACCURACY, SECONDS_PER_EPOCH, DEVICE)

# ---- study user attributes ---------------------------------------------------------------

BUDGET = "budget"  # the parameter budget (int)
BUDGETS = "budgets"  # every budget and how latency is measured (nas.costs.budgets.Budgets.to_dict)
OBJECTIVE = "objective"  # {"objective": "accuracy" | "pareto", "minimize": cost name}
OBJECTIVE_KIND, OBJECTIVE_MINIMIZE = "objective", "minimize"  # the keys of an OBJECTIVE record
SPACE_FILE = "space_file"  # the space's name or path as given (for messages)
SPACE_TEXT = "space_text"  # the space file's text: a resume must use the same
DATASET = "dataset"  # DataConfig.to_dict()
RECIPE = "recipe"  # Recipe.to_dict()
SEARCH = "search"  # sampler, pruner, seed of the first run
SEARCH_SAMPLER, SEARCH_PRUNER, SEARCH_SEED = "sampler", "pruner", "seed"  # a SEARCH record's keys
TOOL_VERSION = "tool_version"  # nas.version.VERSION of the tool that created the study
REPORT_PATH = "report_path"  # the HTML report the search wrote (absolute): refreshes rewrite it
RETRAIN_PREFIX = "retrain_trial_"  # + trial number: that trial's retrain result (`Retrained`)
CONFIRM_PREFIX = "confirm_trial_"  # + trial number: its confirmation run (`Confirmation`)
WINNER = "winner"  # the trial the search names best and its evidence (nas.search.winner)
TIME_BUDGET_PREFIX = "time_budget_run_"  # + run id: how a run with --time-limit spent its time
# (`TimeAccount`)
CLOSING = "closing_seconds"  # how long the last search command's closing (report, summary) took

METRIC_NAME = "val_accuracy"  # the objective's name, shown by the dashboard


# ---- records on the study: confirmations, retrains, time accounts -------------------------


def confirm_key(trial_number: int) -> str:
    return f"{CONFIRM_PREFIX}{trial_number}"


def retrain_key(trial_number: int) -> str:
    return f"{RETRAIN_PREFIX}{trial_number}"


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """A confirmation run of a trial (`nas.search.confirm`), on the study under `confirm_key`."""

    seed: int  # the seed it trained with
    val_accuracy: float  # its best validation accuracy (0 when that seed diverged)
    first_val_accuracy: float  # the trial's own (its first run's)
    mean_val_accuracy: float  # of both runs: what the winner is named by
    epochs: int  # epochs it trained
    seconds: float  # wall time it took
    note: str = ""  # why it counts 0 (a non-finite loss); stored only when there is one

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.note:
            del data["note"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Confirmation:
        return cls(**recorded_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class Retrained:
    """A trial's retrain (`nas.run.retrain`), on the study under `retrain_key`."""

    test_accuracy: float
    run_dir: str | None  # the run folder, as the retrain was given it
    test_loss: float | None = None  # None: the earlier version recorded none
    epochs: int | None = None  # epochs the run trained (None: the earlier version)
    artifacts: bool = False  # its files were uploaded as study artifacts

    def to_dict(self) -> dict[str, Any]:
        """In the order the stored records have: test_accuracy, test_loss, run_dir, epochs,
        artifacts."""
        names = ("test_accuracy", "test_loss", "run_dir", "epochs", "artifacts")
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_dict(cls, data: Any) -> Retrained:
        return cls(**recorded_fields(cls, data))


# where studies of the earlier version recorded a retrain: on the trial itself
TRIAL_TEST_ACCURACY, TRIAL_RUN_DIR = "test_accuracy", "run_dir"


def retrain_record(study_attrs: dict[str, Any], trial: FrozenTrial) -> Retrained | None:
    """The retrain result of `trial`, if it was retrained.

    Recorded on the study by this version; studies of the earlier version wrote
    `test_accuracy` and `run_dir` onto the trial itself, which is read too."""
    record = study_attrs.get(retrain_key(trial.number))
    if isinstance(record, dict) and is_finite(record.get("test_accuracy")):
        return Retrained.from_dict(record)
    if is_finite(trial.user_attrs.get(TRIAL_TEST_ACCURACY)):
        return Retrained(
            test_accuracy=trial.user_attrs[TRIAL_TEST_ACCURACY],
            run_dir=trial.user_attrs.get(TRIAL_RUN_DIR),
        )
    return None


@dataclasses.dataclass(frozen=True)
class TimeAccount:
    """How one run of a search with `--time-limit` spent its time (`nas.search.time_budget`),
    on the study under `TIME_BUDGET_PREFIX` + the run's id."""

    started: str  # when the run started, ISO 8601 in UTC
    limit: float  # the limit, in seconds
    used: float  # seconds the run used
    stopped_by_limit: bool  # the stop rule refused a trial
    spent: dict[str, float]  # seconds by what they went to (time_budget.KINDS)
    counts: dict[str, int]  # trials (and confirmation runs) by that kind

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TimeAccount:
        return cls(**recorded_fields(cls, data))


def recorded_fields(cls: type, data: Any) -> dict[str, Any]:
    """The fields of dataclass `cls` in `data`, a record read back as a dict (a measurement a
    trial records in full, `LATENCY`, `MEMORY`; a `Confirmation`, `Retrained` or `TimeAccount`
    on the study), or a ValueError naming what is unknown."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be read from a dict, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return dict(data)
