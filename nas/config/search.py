"""Owns the search's configuration: `SearchConfig` with its documented defaults, the choices
its fields accept (samplers, pruners, objectives, costs a Pareto search may lower, latency
devices), the default study and store, and the epochs per candidate.

Imports neither torch nor optuna (the command line builds `nas search`'s parser from it).
The budgets a `SearchConfig` describes are built by `nas.costs.budgets.Budgets.of`.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.config.costs import COSTS, MINIMIZABLE
from nas.errors import UserError

DEFAULT_STUDY = "nas"
DEFAULT_STORAGE = "sqlite:///studies/nas.db"
STORAGE_ENV = "NAS_STORAGE"  # environment variable naming the store when --storage is not given
SEARCH_EPOCHS = 40  # epochs per candidate: the reference study's block-size sweep (README)
MAX_STUDY_NAME = 200  # characters: the report is written to a file named after the study

SAMPLERS = ("tpe", "random", "nsga2", "gp", "optuna-tpe")
PRUNERS = ("median", "fidelity", "hyperband", "asha", "none")
OBJECTIVES = ("accuracy", "pareto")  # --objective
LATENCY_DEVICES = ("cpu", "cuda")  # --latency-device (cuda:N too)


@dataclass(frozen=True)
class SearchConfig:
    """How a search runs; the budget and space are recorded with the study."""

    budget: int = 5_000_000  # most parameters a candidate may have
    trials: int = 50  # trained candidates the study should hold, counted over every run
    space: str = "resnet"  # a built-in space's name (nas space --list) or a YAML file's path
    study: str = DEFAULT_STUDY  # study name inside the storage
    storage: str = DEFAULT_STORAGE  # any Optuna storage URL
    sampler: str = "tpe"  # tpe | random | nsga2 | gp | optuna-tpe
    pruner: str = "median"  # median | hyperband | none
    seed: int = 0  # sampler seed (each worker offsets it)
    max_rejections: int = 500  # untrained candidates in a row (over budget, duplicates) before
    # giving up: the space is then almost all over the budget
    heartbeat: int = 30  # seconds between a running trial's heartbeats (every kind of store)
    grace: int = 90  # seconds without a heartbeat after which a RUNNING trial is stale
    poll: float = 5.0  # seconds between checks while other workers' trials are running
    max_wait: float = 3600.0  # seconds to wait for other workers' trials that report no epoch
    store_wait: float = 60.0  # seconds a process waits for a store that stopped answering (a
    # restart, a failover, a full disk) before it stops, saying so; the same command resumes
    warm_start: bool = True  # a new study first trains the reference models the space holds
    max_macs: int | None = None  # most multiply-accumulates per image (None: no MAC budget)
    max_latency_ms: float | None = None  # most ms per forward pass on latency_device
    max_memory_mb: float | None = None  # most MB of peak memory in one training step
    latency_device: str = "cpu"  # where latency is measured: this machine's CPU, or cuda
    latency_batch: int = 1  # images per timed forward pass
    latency_threads: int = 1  # CPU threads while timing latency (pinned: measurements repeat)
    objective: str = "accuracy"  # accuracy | pareto (accuracy up and `minimize` down)
    minimize: str = "params"  # the cost a Pareto search lowers: params | macs | latency
    confirm: int = 1  # top candidates trained again with another seed before naming the best
    time_limit: float | None = None  # seconds this run may start trials for (None: no limit)

    def __post_init__(self) -> None:
        if not self.study.strip():
            raise UserError("the study name must not be empty; pass --study NAME")
        if len(self.study) > MAX_STUDY_NAME:
            raise UserError(
                f"the study name is {len(self.study):,} characters long; "
                f"use at most {MAX_STUDY_NAME}"
            )
        if self.time_limit is not None and not self.time_limit > 0:
            raise UserError(f"--time-limit must be more than 0, got {self.time_limit}")
        if self.confirm < 0:
            raise UserError(f"--confirm must be 0 or more, got {self.confirm}")
        if self.seed < 0:
            raise UserError(f"the seed must be 0 or more, got {self.seed}")
        if self.trials < 0:  # 0 creates and records the study, and trains nothing
            raise UserError(f"trials must be 0 or more, got {self.trials}")
        if not self.store_wait >= 0:  # NaN too
            raise UserError(f"--store-wait must be 0 seconds or more, got {self.store_wait}")
        if self.heartbeat < 1:
            raise UserError(f"the heartbeat must be 1 second or more, got {self.heartbeat}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"the objective must be one of {', '.join(OBJECTIVES)}")
        if self.minimize not in MINIMIZABLE:
            raise UserError(f"--minimize must be one of {', '.join(MINIMIZABLE)}")
        if self.latency_device.split(":")[0] not in LATENCY_DEVICES:
            raise UserError(
                f"--latency-device must be cpu or cuda (or cuda:N), not {self.latency_device!r}"
            )
        for cost in COSTS.values():
            limit = getattr(self, cost.dest)
            if cost.name != "params" and limit is not None and not limit > 0:
                raise UserError(f"{cost.flag} must be more than 0, got {limit}")

    @property
    def pareto(self) -> bool:
        return self.objective == "pareto"
