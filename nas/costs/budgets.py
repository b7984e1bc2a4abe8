"""Owns the budgets a candidate must meet before it trains, and the gate that checks them.

A search has a parameter budget and, optionally, budgets on multiply-accumulates per image,
inference latency and training memory (`Budgets`). The gate (`Gate.check`) measures a
candidate's costs and compares each with its budget:

- cheap, analytic costs first: parameters and MACs (`nas.arch.counts`), and training memory on a
  device that is not CUDA (an analytic estimate, labelled so: `nas.costs.memory`);
- only when all of those are within their budgets, the measured ones: latency on the latency
  device, training memory on CUDA. A candidate the analytic budgets reject costs no timing.
- A measurement is made once per architecture: `Gate.check` takes what an earlier trial of the
  same architecture recorded (any run, any worker: the study is the cache), since a study's
  budgets and latency setup are fixed for its life (a resume with others is refused).

Each checked cost gives an excess (cost - limit, <= 0 within the budget) and a relative excess
(excess / limit): the samplers learn every budget from the relative ones, so a millisecond and a
million parameters weigh alike. A rejection names each budget it broke.

A measurement that runs out of device memory (`nas.data.device_memory.memory_failure`) is a
verdict, not a crash: rejected as "does not fit on cuda:N" (`Verdict.unfit_on`), the samplers
seeing that cost `UNFIT_EXCESS` over budget (its true peak is above what was free); cuDNN
refusing a layer or pinned host memory failing is rejected with its own reason (`unfit_reason`).
On a GPU other workers share (`Machine.gpu_shared_by`) it may be their peak: rejected for now,
unmeasured (relative excess 0, no out-of-memory device), and a later trial measures it again.
Before any candidate, `check_feasible` refuses a space whose cheapest architecture is over the
parameter or MAC budget, in one sentence saying which budget to raise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas import records
from nas.arch.architecture import Architecture
from nas.arch.counts import count_macs, count_params
from nas.config.costs import COSTS, describe_limits, format_cost
from nas.config.machine import Machine, latency_device, oom_is_the_candidates
from nas.config.recipe import Recipe
from nas.data.device_memory import MemoryFailure, memory_failure, release_memory
from nas.errors import UserError

if TYPE_CHECKING:
    from nas.arch.space import SearchSpace
    from nas.config.search import SearchConfig

UNFIT_EXCESS = 1.0  # relative excess the samplers see for a cost whose measurement ran out


@dataclass(frozen=True)
class Budgets:
    """The limits a study holds every candidate to (None: no budget on that cost), and how its
    latency is measured."""

    params: int = 5_000_000  # most parameters (always set)
    macs: int | None = None  # most multiply-accumulates per image
    latency_ms: float | None = None  # most milliseconds per forward pass (median)
    memory_mb: float | None = None  # most MB of peak memory in one training step
    latency_device: str = "cpu"  # where latency is measured: this machine's CPU, or cuda
    latency_batch: int = 1  # images per timed forward pass
    latency_threads: int = 1  # CPU threads while timing: pinned, so measurements repeat
    measure_latency: bool = False  # also without a latency budget (a Pareto search lowers it)

    @classmethod
    def of(cls, search: SearchConfig) -> Budgets:
        """The budgets a search holds every candidate to, and how it measures latency."""
        return cls(
            **{cost.key: getattr(search, cost.dest) for cost in COSTS.values()},
            latency_device=search.latency_device,
            latency_batch=search.latency_batch,
            latency_threads=search.latency_threads,
            measure_latency=search.pareto and search.minimize == "latency",
        )

    def limits(self) -> dict[str, float]:
        """{cost: limit} of the budgets set, in `nas.config.costs.COSTS` order."""
        values = {name: getattr(self, cost.key) for name, cost in COSTS.items()}
        return {name: limit for name, limit in values.items() if limit is not None}

    @property
    def latency_measured(self) -> bool:
        return self.latency_ms is not None or self.measure_latency

    def to_dict(self) -> dict[str, Any]:
        """What the study records; a resume must match it. The latency setup is part of it only
        where latency is measured (else another --latency-device changes nothing)."""
        recorded: dict[str, Any] = {cost.key: getattr(self, cost.key) for cost in COSTS.values()}
        if self.latency_measured:
            recorded.update(
                latency_device=self.latency_device,
                latency_batch=self.latency_batch,
                latency_threads=self.latency_threads,
            )
        return recorded

    def describe(self) -> str:
        """`5,000,000 parameters, 2.00 ms latency (cpu, batch 1, 1 thread)`."""
        text = describe_limits(self.limits())
        if self.latency_ms is not None:
            text = text.replace(" ms latency", f" ms latency ({self.latency_setup_text()})")
        return text

    def latency_setup_text(self) -> str:
        """`cpu, batch 1, 1 thread`; on CUDA the CPU threads do not matter."""
        text = f"{self.latency_device}, batch {self.latency_batch}"
        if self.latency_device != "cpu":
            return text
        return f"{text}, {self.latency_threads} thread{'s' if self.latency_threads > 1 else ''}"


@dataclass
class Verdict:
    """A candidate's costs against the budgets."""

    costs: dict[str, float] = field(default_factory=dict)  # cost name -> value, as measured
    details: dict[str, dict] = field(default_factory=dict)  # latency/memory measurements in full
    excess: dict[str, float] = field(default_factory=dict)  # cost - limit, per budget checked
    relative: dict[str, float] = field(default_factory=dict)  # excess / limit, per budget checked
    reused: bool = False  # the measurements came from an earlier trial of the architecture
    unfit_on: str | None = None  # the device a measurement ran out of memory on
    failure: MemoryFailure | None = None  # what ran out or refused there (`memory_failure`)
    shared_by: int = 1  # workers on `unfit_on`; over 1: not the candidate's own out-of-memory

    @property
    def broken(self) -> dict[str, float]:
        """{budget: excess} of the budgets the candidate is over."""
        return {name: value for name, value in self.excess.items() if value > 0}

    @property
    def rejected(self) -> bool:
        """Over a budget, or too large for the device to measure."""
        return bool(self.broken) or self.unfit_on is not None

    def constraint(self) -> float:
        """Every budget in one number, <= 0 when all are met: the sum of the relative excesses
        over budget, else the tightest margin (Optuna 4.x samplers take one tuple per trial)."""
        over = [v for v in self.relative.values() if v > 0]
        return sum(over) if over else max(self.relative.values(), default=0.0)

    def reason(self, limits: dict[str, float]) -> str:
        """`over budget: latency 3.21 > 2.00 ms, MACs 412.3M > 300.0M`: each budget broken;
        `does not fit on cuda:0` for a candidate the device ran out of memory measuring."""
        broken = [COSTS[name].over(self.costs[name], limits[name]) for name in self.broken]
        unfit = [unfit_reason(self.failure, self.unfit_on, self.shared_by)] if self.unfit_on else []
        return "; ".join((["over budget: " + ", ".join(broken)] if broken else []) + unfit)


def unfit_reason(failure: MemoryFailure | None, device: str, shared_by: int) -> str:
    """`does not fit on cuda:0` when the device's memory ran out (unless `shared_by` workers
    share it); else what did refuse (cuDNN, pinned host memory): nothing about fitting."""
    if shared_by > 1:
        return f"out of memory on {device}, shared by {shared_by} workers: measured again later"
    if failure is None or failure.device_memory:
        return f"does not fit on {device}"
    return failure.reason(device)


class Gate:
    """Measures a candidate's costs, cheapest first, and compares them with the budgets.

    `image_size` is the data's; memory is for `recipe` (its batch size and optimizer) on
    `machine` (its device, where the search trains, and its precision and layout). A test's
    `memory_meter(arch, image_size, recipe, machine)` and `latency_meter(arch, image_size,
    setup)` stand in for `nas.costs.memory.training_memory` and `.latency.measure_latency`."""

    def __init__(
        self, budgets: Budgets, image_size: int, recipe: Recipe, machine: Machine,
        memory_meter: Callable[..., Any] | None = None,
        latency_meter: Callable[..., Any] | None = None,
    ):  # fmt: skip
        self.budgets = budgets
        self.limits = budgets.limits()
        self.image_size = image_size
        self.recipe = recipe
        self.machine = machine
        self.train_device = machine.device
        self.memory_meter = memory_meter
        self.latency_meter = latency_meter

    def check(
        self, arch: Architecture, earlier: Callable[[], dict[str, Any] | None] | None = None
    ) -> Verdict:
        """The candidate's verdict. `earlier()` returns the attributes an earlier trial of the
        same architecture recorded (None if none): its measurements are reused."""
        verdict = Verdict()
        verdict.costs["params"] = count_params(arch)
        verdict.costs["macs"] = count_macs(arch, self.image_size)
        on_cuda = self.train_device.startswith("cuda")  # memory is measured there, else estimated
        memory_measured = self.budgets.memory_mb is not None and on_cuda
        if self.budgets.memory_mb is not None and not memory_measured:
            # analytic: as cheap as counting parameters
            self._fitting("memory", self.train_device, verdict, self._memory, arch, None)
        self._compare(verdict)
        if verdict.rejected:
            return verdict  # no timing for a candidate the analytic budgets already reject
        recorded = earlier() if earlier is not None else None
        if self.budgets.latency_measured:
            device = latency_device(self.budgets.latency_device, self.train_device)
            self._fitting("latency", device, verdict, self._latency, arch, recorded)
        if memory_measured and verdict.unfit_on is None:
            self._fitting("memory", self.train_device, verdict, self._memory, arch, recorded)
        self._compare(verdict)
        return verdict

    def _fitting(
        self, name: str, device: str, verdict: Verdict, measure, arch: Architecture, recorded
    ) -> None:
        """`measure(arch, verdict, recorded)`; running out of memory on `device` is the verdict
        that the candidate does not fit there (any other error propagates)."""
        try:
            measure(arch, verdict, recorded)
            return
        except Exception as error:
            failure = memory_failure(error)
            if failure is None:
                raise
        # out of the except block: its traceback no longer holds the measurement's tensors
        release_memory()
        verdict.unfit_on = device
        verdict.failure = failure
        shared = self.machine.gpu_shared_by  # another worker's peak may have filled it: unknown
        if failure.device_memory and not oom_is_the_candidates(device, self.train_device, shared):
            verdict.shared_by = shared
        verdict.relative[name] = UNFIT_EXCESS if verdict.shared_by == 1 else 0.0

    def _latency(self, arch: Architecture, verdict: Verdict, recorded: dict | None) -> None:
        from nas.costs.latency import Latency, LatencySetup, measure_latency

        if recorded and isinstance(recorded.get(records.LATENCY), dict):
            latency = Latency.from_dict(recorded[records.LATENCY])
            verdict.reused = True
        else:
            setup = LatencySetup(
                device=latency_device(self.budgets.latency_device, self.train_device),
                batch=self.budgets.latency_batch,
                threads=self.budgets.latency_threads,
            )
            latency = (self.latency_meter or measure_latency)(arch, self.image_size, setup)
        verdict.costs["latency"] = latency.median_ms
        verdict.details["latency"] = latency.to_dict()

    def _memory(self, arch: Architecture, verdict: Verdict, recorded: dict | None) -> None:
        from nas.costs.memory import TrainingMemory, training_memory

        if recorded and isinstance(recorded.get(records.MEMORY), dict):
            memory = TrainingMemory.from_dict(recorded[records.MEMORY])
            verdict.reused = True
        else:
            meter = self.memory_meter or training_memory
            memory = meter(arch, self.image_size, self.recipe, self.machine)
        verdict.costs["memory"] = memory.megabytes
        verdict.details["memory"] = memory.to_dict()

    def _compare(self, verdict: Verdict) -> None:
        for name, limit in self.limits.items():
            if name in verdict.costs:
                excess = verdict.costs[name] - limit
                verdict.excess[name] = _plain(excess)  # as the store keeps it
                verdict.relative[name] = excess / limit


def record_verdict(trial, verdict: Verdict) -> None:
    """Write a verdict on a trial (`records` keys); the caller (`nas.search.objective`) also hands
    its relative excesses to the samplers (`nas.search.samplers.record_constraints`)."""
    trial.set_user_attr(records.MACS, int(verdict.costs["macs"]))
    if "latency" in verdict.costs:
        trial.set_user_attr(records.LATENCY_MS, verdict.costs["latency"])
        trial.set_user_attr(records.LATENCY, verdict.details["latency"])
    if "memory" in verdict.costs:
        trial.set_user_attr(records.MEMORY_MB, verdict.costs["memory"])
        trial.set_user_attr(records.MEMORY, verdict.details["memory"])
    trial.set_user_attr(records.EXCESS, verdict.excess)
    trial.set_user_attr(records.CONSTRAINT, verdict.constraint())


def _plain(value: float) -> float | int:
    """Counts stay integers in the store; measured values keep four decimals."""
    return int(value) if float(value).is_integer() else round(value, 4)


def check_feasible(
    space: SearchSpace, budget: int, num_classes: int, max_macs: int | None, image_size: int
) -> None:
    """Refuse a space whose cheapest architecture is over the parameter or MAC budget."""
    smallest = count_params(space.smallest(num_classes))
    if smallest > budget:
        raise UserError(
            f"the smallest architecture in {space.source} has {smallest:,} parameters, over the "
            f"budget of {budget:,}; raise --budget or use a space with smaller widths"
        )
    if max_macs is not None:
        fewest_macs = space.smallest(num_classes, by=lambda a: count_macs(a, image_size))
        macs = count_macs(fewest_macs, image_size)
        if macs > max_macs:
            raise UserError(
                f"the cheapest architecture in {space.source} needs {format_cost('macs', macs)} "
                f"per image, over --max-macs {format_cost('macs', max_macs)}; raise --max-macs "
                "or use a space with smaller widths"
            )
