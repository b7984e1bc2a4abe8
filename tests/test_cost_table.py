"""The table of costs (nas.config.costs): its rows drive `nas search`'s budget flags, its keys are
the ones the budgets and the records use, and its numbers read as computed here by hand."""

from __future__ import annotations

import pytest

from nas import records
from nas.cli.main import build_parser, main
from nas.cli.search_settings import search_settings
from nas.config.costs import COSTS, NAMES, cost_label, describe_limits, format_cost
from nas.costs.budgets import Budgets, Verdict

from helpers import run_in_process

# a value each flag accepts, and the limit it means
FLAG_VALUES = {"params": ("12345", 12345), "macs": ("300M", 300_000_000),
               "latency": ("2.5", 2.5), "memory": ("512", 512.0)}  # fmt: skip


def test_every_cost_has_a_flag_value_here():
    assert set(FLAG_VALUES) == set(NAMES) == {"params", "macs", "latency", "memory"}


@pytest.mark.parametrize("name", NAMES)
def test_each_rows_flag_is_a_search_flag(name):
    status, out, _ = run_in_process(main, ["search", "--help"])
    assert status == 0
    assert COSTS[name].flag in out.split()


@pytest.mark.parametrize("name", NAMES)
def test_each_rows_flag_value_becomes_that_costs_budget(name):
    text, limit = FLAG_VALUES[name]
    args = build_parser().parse_args(["search", COSTS[name].flag, text])
    config, _, _, _ = search_settings(args)
    budgets = Budgets.of(config)
    assert budgets.limits()[name] == limit
    assert getattr(budgets, COSTS[name].key) == limit  # the row's key is the Budgets field
    assert budgets.to_dict()[COSTS[name].key] == limit  # ... and the key the study records


def test_a_pareto_search_may_lower_every_cost_but_the_estimated_memory():
    status, out, _ = run_in_process(main, ["search", "--help"])
    assert status == 0 and "{params,macs,latency}" in out  # --minimize's choices
    status, _, err = run_in_process(
        main, ["search", "--objective", "pareto", "--minimize", "memory"]
    )
    assert status == 2 and "invalid choice: 'memory'" in err


def test_the_table_keys_are_the_records_keys():
    assert [COSTS[n].key for n in NAMES] == [
        records.PARAMS, records.MACS, records.LATENCY_MS, records.MEMORY_MB
    ]  # fmt: skip


def test_numbers_read_as_computed_by_hand():
    assert format_cost("params", 1234567) == "1,234,567 params"
    assert format_cost("macs", 41_349_999) == "41.3M MACs"  # 41.349999 million
    assert format_cost("latency", 2.314) == "2.31 ms"
    assert format_cost("memory", 212.44) == "212.4 MB"
    assert [cost_label(n) for n in NAMES] == ["parameters", "MACs", "latency", "memory"]
    limits = {"params": 5_000_000, "macs": 300e6, "latency": 2, "memory": 512}
    assert describe_limits(limits) == (
        "5,000,000 parameters, 300.0M MACs, 2.00 ms latency, 512.0 MB memory"
    )


def test_a_rejection_names_each_budget_broken_in_the_tables_words():
    verdict = Verdict(costs={"params": 900, "latency": 3.214, "macs": 412_340_000})
    verdict.excess = {"params": -100, "latency": 1.214, "macs": 112_340_000}
    limits = {"params": 1000, "latency": 2.0, "macs": 300e6}
    assert verdict.reason(limits) == "over budget: latency 3.21 > 2.00 ms, MACs 412.3M > 300.0M"
    assert Budgets(params=1000, latency_ms=2.0).describe() == (
        "1,000 parameters, 2.00 ms latency (cpu, batch 1, 1 thread)"
    )
