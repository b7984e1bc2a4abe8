"""Owns the settings `nas search`'s flags make: the search, data, recipe and machine configs
for, with `--smoke`'s values and the flags that cannot go together refused in one sentence.
Building them loads neither torch nor optuna (`--time-limit` is read by nas.search.time_budget,
which reads study records, only once a search runs)."""

from __future__ import annotations

import argparse

from nas.cli.flags import data_config_from, machine_from, recipe_overrides, storage_from
from nas.config.costs import COSTS
from nas.config.recipe import Recipe
from nas.config.search import DEFAULT_STUDY, SEARCH_EPOCHS, SearchConfig
from nas.errors import UserError

SMOKE = {  # --smoke: the whole flow on a CPU in about a minute, no dataset needed
    "dataset": "synthetic",
    "space": "tiny",
    "epochs": 2,
    "trials": 4,
    "device": "cpu",
    "study": "smoke",
    "budget": 20_000,  # tiny spans 1.5k..33k parameters: some candidates get rejected
    # 28 steps per epoch instead of 14: in 2 epochs larger candidates then learn more than
    # smaller ones, as in a real search (at 64, the smallest often won: a front of one or two)
    "batch_size": 32,
}


def search_settings(args: argparse.Namespace):
    """The search, data, recipe and machine configs the flags (and --smoke) ask for."""
    smoke = SMOKE if args.smoke else {}

    def pick(name: str, default):
        value = getattr(args, name)
        return value if value is not None else smoke.get(name, default)

    pareto = args.objective == "pareto"
    if args.minimize is not None and not pareto:
        raise UserError("--minimize applies to --objective pareto; add --objective pareto")
    if pareto and args.pruner not in (None, "none"):
        raise UserError(
            f"--pruner {args.pruner} cannot work with --objective pareto: Optuna prunes no "
            "study of several objectives, so every candidate trains to the end; drop --pruner"
        )
    heartbeat = args.heartbeat
    config = SearchConfig(
        budget=pick("budget", SearchConfig.budget),
        trials=pick("trials", SearchConfig.trials),
        space=pick("space", SearchConfig.space),
        study=pick("study", DEFAULT_STUDY),
        storage=storage_from(args),
        sampler=args.sampler,
        pruner="none" if pareto else (args.pruner or SearchConfig.pruner),
        seed=args.seed if args.seed is not None else SearchConfig.seed,
        warm_start=args.warm_start,
        heartbeat=heartbeat,
        grace=3 * heartbeat,
        store_wait=args.store_wait,
        **{cost.dest: getattr(args, cost.dest) for name, cost in COSTS.items() if name != "params"},
        latency_device=args.latency_device,
        latency_batch=args.latency_batch,
        latency_threads=args.latency_threads,
        objective=args.objective,
        minimize=args.minimize or SearchConfig.minimize,
        confirm=args.confirm,
        time_limit=_time_limit(args.time_limit),
    )
    recipe = Recipe.from_dict(
        {
            **({"batch_size": SMOKE["batch_size"]} if args.smoke else {}),
            **recipe_overrides(args),
            "epochs": pick("epochs", SEARCH_EPOCHS),
            "seed": args.seed if args.seed is not None else Recipe.seed,
        }
    )
    machine = machine_from(args, smoke.get("device"))
    data = data_config_from(args, {"dataset": SMOKE["dataset"]} if args.smoke else None)
    return config, data, recipe, machine


def _time_limit(text: str | None) -> float | None:
    """--time-limit in seconds. nas.search.time_budget reads study records (optuna), so it loads
    only when a search runs: `nas --help` and the other reading commands never import optuna."""
    if text is None:
        return None
    from nas.search.time_budget import parse_duration

    return parse_duration(text)
