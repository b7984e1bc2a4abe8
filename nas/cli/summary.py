"""Owns what a finished search prints: the top trials, what became of every trial (and which
budgets the rejected ones broke), the best model at every size with the command that retrains
each, the winner with how sure it is (its confirmation, its lead, the rank-fidelity advice),
how each run with a time limit spent it, and the commands to run next."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nas import records, trial_view
from nas.cli.common import format_table
from nas.commands import dashboard_command, retrain_command
from nas.config.costs import NAMES, cost_label
from nas.report.page import FRONT_TITLE, front_rows, top_trials
from nas.report.trials import architecture_summary
from nas.search.time_budget import run_lines
from nas.search.winner import verdict_lines
from nas.store.opening import display_url

FRONT_ROWS = 10  # front trials the summary lists (the report lists them all)


def print_front(study, trials, config) -> None:
    """The best model at every size: the study's Pareto front with the command for each."""
    rows = front_rows(study, trials, config.storage)
    if len(rows) < 2 and not config.pareto:
        return  # one trial is the best at every size: the table above says it all
    cost = trial_view.objective_of(study.user_attrs)[1]
    print(f"\n{FRONT_TITLE} (validation accuracy vs {cost_label(cost)}, cheapest first):")
    shown = [
        (trial.number, f"{trial_view.accuracy(trial):.2%}", costs[NAMES.index(cost)], command)
        for trial, costs, command in rows[:FRONT_ROWS]
    ]
    print(format_table(("trial", "val acc", cost_label(cost), "retrain it"), shown))
    if len(rows) > FRONT_ROWS:
        print(f"... and {len(rows) - FRONT_ROWS} more in the report")


def print_summary(study, config, report: Path, since=None) -> None:
    """The top trials, what became of every trial, the front, the winner with how sure it is
    (its confirmation, lead and the rank-fidelity advice), how the runs since `since` spent
    their time limit, and the commands to run next."""
    trials = study.get_trials(deepcopy=False)  # read once: every part describes the same trials
    rows = [  # top_trials lists each trained architecture once, best first
        (
            rank,
            trial.number,
            f"{trial_view.accuracy(trial):.2%}",
            f"{trial_view.params_of(trial) or 0:,}",
            architecture_summary(trial),
            f"{trial.user_attrs.get(records.SECONDS_PER_EPOCH, 0):.1f}",
        )
        for rank, trial in enumerate(top_trials(trials, 5), start=1)
    ]
    print()
    if rows:
        print(format_table(("rank", "trial", "val acc", "params", "architecture", "s/epoch"), rows))
    else:
        print("no trial has finished training yet")
    kinds = Counter(trial_view.classify(t) for t in trials)
    counts = ", ".join(f"{n} {kind.name.lower().replace('_', ' ')}" for kind, n in kinds.items())
    trained = sum(n for kind, n in kinds.items() if kind.trained)
    print(
        f"\nstudy {config.study!r}: {trained} trained candidates (target {config.trials}), "
        f"{len(trials)} trials in all ({counts})"
    )
    broken = Counter(name for t in trials for name in trial_view.over_budget(t))
    if broken:  # which budgets the rejected candidates broke (one may break several)
        over = ", ".join(f"{cost_label(name)} {n}" for name, n in broken.items())
        print(f"rejected candidates by the budget they broke: {over}")
    print_front(study, trials, config)
    for line in verdict_lines(study, trials) + run_lines(study.user_attrs, since):
        print(line)
    print(f"store:  {display_url(config.storage)}")
    print(f"report: {report}")
    print(f"next:   {dashboard_command(config.storage)}")
    print(f"        {retrain_command(config.study, storage=config.storage)}")
