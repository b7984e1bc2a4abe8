"""Owns the table of costs: parameters, MACs, latency and training memory, each with its budget
key, its `nas search` flag, its unit and the words and number format people read it in.

Every module that names a cost (the budgets, the records, the study setup, the report and its
figures, the search summary and the command line) reads it from `COSTS` here, so a cost is added
or renamed in one row. Imports nothing: a foundation both the torch-free CLI and the records read.

Claims: each row's flag is a `nas search` flag whose value becomes that cost's budget; numbers
read `1,234,567 params`, `41.3M MACs`, `2.31 ms`, `212.4 MB`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _count(value: float) -> str:
    return f"{int(value):,}"


def _millions(value: float) -> str:
    return f"{value / 1e6:,.1f}M"


def _two_decimals(value: float) -> str:
    return f"{value:,.2f}"


def _one_decimal(value: float) -> str:
    return f"{value:,.1f}"


@dataclass(frozen=True)
class Cost:
    """One cost a budget can limit and a Pareto search can lower."""

    name: str  # the cost's name everywhere in the code and the records: params, macs, ...
    key: str  # its field in `nas.costs.budgets.Budgets`, its key in the study's recorded budgets
    # (`records.BUDGETS`) and the trial attribute that records it (`records.PARAMS`, ...)
    flag: str  # the `nas search` flag that sets its budget
    flag_help: str  # what the flag means, for `nas search --help`
    unit: str  # after a number: `2.31 ms`; "" for counts, which are followed by `short`
    short: str  # in a rejection reason and a count: `latency 3.21 > 2.00 ms`, `41.3M MACs`
    label: str  # in a sentence or a column heading: parameters, MACs, latency, memory
    budget_word: str  # before "budget": a parameter budget, no MAC budget
    axis: str  # a figure's axis title
    number: Callable[[float], str]  # the number alone: `21,162`, `41.3M`, `2.31`, `212.4`
    minimizable: bool = True  # a Pareto search may lower it (--minimize); memory is estimated
    # on the CPU, where a Pareto search would lower the estimate, not the cost

    @property
    def dest(self) -> str:
        """The flag's name on the parsed command line and in `nas.config.search.SearchConfig`:
        `--max-macs` -> `max_macs`."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def counted(self) -> bool:
        """A whole count (parameters, MACs: `5M` on the command line), not a measured value."""
        return not self.unit

    @property
    def noun(self) -> str:
        """What a limit is of, after its number: `5,000,000 parameters`, `2.00 ms latency`."""
        return f"{self.unit} {self.label}" if self.unit else self.label

    def format(self, value: float) -> str:
        """The value as people read it: `1,234,567 params`, `41.3M MACs`, `2.31 ms`."""
        return f"{self.number(value)} {self.unit or self.short}"

    def over(self, value: float, limit: float) -> str:
        """A broken budget in a rejection reason: `latency 3.21 > 2.00 ms`."""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.short} {self.number(value)} > {self.number(limit)}{unit}"


COSTS: dict[str, Cost] = {
    cost.name: cost
    for cost in (
        Cost(
            name="params",
            key="params",
            flag="--budget",
            flag_help="most parameters a candidate may have: 5e6, 5000000, 5M, 500k",
            unit="",
            short="params",
            label="parameters",
            budget_word="parameter",
            axis="parameters",
            number=_count,
        ),
        Cost(
            name="macs",
            key="macs",
            flag="--max-macs",
            flag_help="most multiply-accumulates per image: 300M, 1.2G, 5e8 (default: no limit)",
            unit="",
            short="MACs",
            label="MACs",
            budget_word="MAC",
            axis="multiply-accumulates per image",
            number=_millions,
        ),
        Cost(
            name="latency",
            key="latency_ms",
            flag="--max-latency-ms",
            flag_help="most milliseconds per inference (median of timed runs after warm-up, eval "
            "mode, measured once per architecture; default: no limit)",
            unit="ms",
            short="latency",
            label="latency",
            budget_word="latency",
            axis="latency (ms, median)",
            number=_two_decimals,
        ),
        Cost(
            name="memory",
            key="memory_mb",
            flag="--max-memory-mb",
            flag_help="most MB (2^20 bytes) of peak memory in one training step at the recipe's "
            "batch size: measured on CUDA, estimated on the CPU (default: no limit)",
            unit="MB",
            short="memory",
            label="memory",
            budget_word="memory",
            axis="training-step memory (MB)",
            number=_one_decimal,
            minimizable=False,
        ),
    )
}
NAMES = tuple(COSTS)  # every cost, in the order tables and records list them
MINIMIZABLE = tuple(name for name, cost in COSTS.items() if cost.minimizable)  # --minimize


def format_cost(name: str, value: float) -> str:
    """A cost as people read it: `1,234,567 params`, `41.3M MACs`, `2.31 ms`, `212.4 MB`."""
    return COSTS[name].format(value)


def cost_label(name: str) -> str:
    """The cost's name in a sentence or a column: parameters, MACs, latency, memory."""
    return COSTS[name].label


def describe_limits(limits: dict[str, float]) -> str:
    """`5,000,000 parameters, 300.0M MACs, 2.00 ms latency, 512.0 MB memory`."""
    return ", ".join(
        f"{COSTS[name].number(value)} {COSTS[name].noun}" for name, value in limits.items()
    )
