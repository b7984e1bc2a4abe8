"""Owns the command-line flags of the budgets beyond parameters and of the objective
(`nas search`; `nas.costs.budgets`), and of how latency is measured (also `nas params --costs`).
Defaults come from `nas.config.search.SearchConfig`."""

from __future__ import annotations

import argparse

from nas.cli.common import count_of, positive_float, positive_int
from nas.config.costs import COSTS, MINIMIZABLE
from nas.config.search import OBJECTIVES, SearchConfig


def add_budget_flags(parser: argparse.ArgumentParser) -> None:
    """The budgets beyond parameters and the objective (issue 14; `nas.costs.budgets`)."""
    group = parser.add_argument_group(
        "budgets and objective",
        "Every budget is checked before a candidate trains; a candidate over any is rejected "
        "with a reason naming it. A study keeps its budgets: resume with the same flags.",
    )
    for cost in COSTS.values():
        if cost.name != "params":  # the parameter budget is nas search's own --budget
            kind = count_of(cost.short) if cost.counted else positive_float
            group.add_argument(cost.flag, type=kind, help=cost.flag_help)
    add_latency_flags(group)
    group.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=SearchConfig.objective,
        help="accuracy: the most accurate model within the budgets; pareto: the best model at "
        "every size, accuracy up and --minimize down (default: %(default)s)",
    )
    group.add_argument(
        "--minimize",
        choices=MINIMIZABLE,
        help=f"the cost --objective pareto lowers (default: {SearchConfig.minimize})",
    )


def add_latency_flags(parser) -> None:
    """How latency is measured (`nas search`'s budgets, `nas params --costs`); defaults from
    `SearchConfig`."""
    parser.add_argument(
        "--latency-device",
        default=SearchConfig.latency_device,
        help="where latency is measured: cpu (this machine's) or cuda (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-batch",
        type=positive_int,
        default=SearchConfig.latency_batch,
        help="images per timed inference (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-threads",
        type=positive_int,
        default=SearchConfig.latency_threads,
        help="CPU threads while timing, pinned so measurements repeat (default: %(default)s)",
    )
