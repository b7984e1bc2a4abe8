"""Does each sampler honour the budget? The over-budget share of early vs late proposals.

Runs real Optuna studies on real SQLite stores (in a temporary folder; TMPDIR=/dev/shm makes
them faster) with the samplers and pruner of `nas.search.samplers` and the search's gate
(`SearchSpace.suggest`, `count_params`, the records of `nas.records`, the constraint through
`nas.search.samplers.record_constraints`, duplicates through `nas.search.objective.find_trained`),
but replaces training by a cheap deterministic scorer, so a study of 80 proposals takes seconds:

- `capacity`: a smooth, saturating function of the parameter count, as validation accuracy
  behaves (more parameters help, less and less), a small penalty for large kernels, and
  noise seeded by the run's seed and the architecture. The best candidates sit at the
  budget's edge, which pulls a sampler there: the hard case.
- `random`: a uniform score seeded by the run's seed and the architecture (the measurement
  of issue 12: "training replaced by random scores").

Each trained candidate reports `--epochs` intermediate values of a learning curve that ends at
its score, so the pruner (`--pruner`, the search's default `median`) stops weak ones as in a
search. Each sampler is sized for a target of `--target` trained candidates (the search's
`--trials`); every study makes exactly `--proposals` proposals. It prints, per scorer and
sampler, the share of rejected (over-budget) proposals among the first `--early` and the last
`--late`, averaged over the seeds. Issue 12's target: for tpe and nsga2, last <= half of first.
Not a test; run it by hand (about 15 minutes on 2 busy cores):

    TMPDIR=/dev/shm python benchmarks/bench_samplers.py     # 10 seeds, 80 proposals, 5M"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.arch.space import SearchSpace
from nas.config.machine import usable_cpus
from nas.config.search import PRUNERS
from nas.search.objective import find_trained
from nas.search.samplers import (
    constraint_kwargs,
    make_pruner,
    make_sampler,
    nsga2_population,
    record_constraints,
    tpe_startup,
)

SAMPLERS = ("random", "tpe", "nsga2")  # random first: the baseline
REJECTED_AS = ("pruned", "complete")  # how a rejected candidate finishes (see BenchSetup)
WORST_SCORE = 0.0  # a rejected candidate's value when it finishes COMPLETE


def capacity_score(arch: Architecture, params: int, noise: random.Random) -> float:
    """Saturating in the parameter count (0.80 at 100k, 0.88 at 1M, 0.90 at 5M), a little
    worse for large kernels, plus noise (sd 0.003)."""
    kernels = arch.conv_kernel if isinstance(arch.conv_kernel, tuple) else (arch.conv_kernel,)
    kernel_penalty = 0.004 * (sum(kernels) / len(kernels) - 3)
    return 0.95 - 0.15 * (1e5 / params) ** 0.3 - kernel_penalty + noise.gauss(0.0, 0.003)


def random_score(_arch: Architecture, _params: int, noise: random.Random) -> float:
    return noise.uniform(0.5, 0.95)


SCORERS = {"capacity": capacity_score, "random": random_score}
Scorer = Callable[[Architecture, int, random.Random], float]


def make_objective(
    space: SearchSpace,
    budget: int,
    scorer: Scorer,
    seed: int,
    epochs: int,
    rejected_complete: bool = False,
) -> Callable[[optuna.Trial], float]:
    """The search's objective (nas.search.objective) with training replaced by `scorer`. With
    `rejected_complete`, a rejected candidate is COMPLETE with the worst score (option B)."""

    def objective(trial: optuna.Trial) -> float:
        arch = space.suggest(trial, 10)  # CIFAR-10
        params = count_params(arch)
        architecture = arch.to_json()
        trial.set_user_attr(records.PARAMS, params)
        trial.set_user_attr(records.ARCHITECTURE, architecture)
        relative = (params - budget) / budget  # as nas.costs.budgets.Verdict.relative
        trial.set_user_attr(records.CONSTRAINT, relative)
        record_constraints(trial, {"params": relative})
        if params > budget:
            trial.set_user_attr(records.PRUNE_REASON, "over budget")
            trial.set_user_attr(records.OVER_BUDGET_BY, {"params": params - budget})
            if rejected_complete:
                return WORST_SCORE
            raise optuna.TrialPruned("over budget")
        earlier = find_trained(trial.study, architecture)
        if earlier is not None:
            trial.set_user_attr(records.DUPLICATE_OF, earlier.number)
            if earlier.state == optuna.trial.TrialState.COMPLETE:
                return earlier.value
            trial.set_user_attr(records.PRUNE_REASON, "duplicate of a pruned trial")
            raise optuna.TrialPruned("duplicate")
        final = scorer(arch, params, random.Random(f"{seed}:{architecture}"))
        for epoch in range(1, epochs + 1):
            # rises to `final` at the last epoch; a weaker candidate is weaker at every epoch
            value = final * (1 - 0.5 * (1 - epoch / epochs) ** 2)
            trial.report(value, epoch)
            if trial.should_prune():
                trial.set_user_attr(records.TRAINED, True)
                trial.set_user_attr(records.BEST_VAL_ACCURACY, value)
                trial.set_user_attr(records.PRUNE_REASON, f"stopped after epoch {epoch}")
                raise optuna.TrialPruned("stopped")
        trial.set_user_attr(records.TRAINED, True)
        trial.set_user_attr(records.BEST_VAL_ACCURACY, final)
        return final

    return objective


@dataclass(frozen=True)
class BenchSetup:
    """One benchmark's settings (the command-line defaults)."""

    budget: int = 5_000_000  # most parameters: about 30 % of uniform resnet samples fit
    space: str = "resnet"  # built-in space or YAML path
    target: int = 50  # the search's --trials, which sizes the samplers
    proposals: int = 80  # trials per study, rejected ones included
    early: int = 20  # the first proposals compared ...
    late: int = 40  # ... with the last ones
    scorer: str = "capacity"  # capacity | random (SCORERS)
    pruner: str = "median"  # the search's default pruner
    epochs: int = 6  # intermediate values per trained candidate
    rejected: str = "pruned"  # pruned (the search) | complete: worst score + constraint (B)


@dataclass
class RunResult:
    """What became of one study's proposals."""

    rejected: list[bool]  # per proposal, in order: over the budget
    duplicates: list[bool]  # per proposal, in order: an architecture trained before
    trained: int  # proposals that trained (trial_view.is_trained)
    best: float  # best score of a trained candidate

    def early_share(self, count: int) -> float:
        return sum(self.rejected[:count]) / count

    def late_share(self, count: int) -> float:
        return sum(self.rejected[-count:]) / count

    def late_duplicates(self, count: int) -> float:
        return sum(self.duplicates[-count:]) / count


class TrainedStartupPruner(optuna.pruners.BasePruner):
    """Option B's pruner: the median rule once `n_startup` COMPLETE trials were trained (with
    rejections COMPLETE, MedianPruner's own start-up would count them)."""

    def __init__(self, inner: optuna.pruners.BasePruner, n_startup: int):
        self.inner, self.n_startup = inner, n_startup

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        trained = sum(map(trial_view.is_trained, complete))
        return trained >= self.n_startup and self.inner.prune(study, trial)


def sampler_and_pruner(setup: BenchSetup, sampler: str, seed: int):
    """The search's sampler and pruner; for option B, NSGA-II with the constraint (4.x reads
    it through constraints_func) and a median pruner whose start-up counts trained trials."""
    pruner = make_pruner(setup.pruner, setup.epochs)
    if setup.rejected == "pruned":
        return make_sampler(sampler, seed, setup.target), pruner
    if setup.pruner == "median":
        warmup = max(1, setup.epochs // 3)  # as make_pruner
        pruner = TrainedStartupPruner(
            optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=warmup), n_startup=5
        )
    if sampler == "nsga2":
        population = nsga2_population(setup.target)
        kwargs = constraint_kwargs()
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=population, **kwargs
        ), pruner
    return make_sampler(sampler, seed, setup.target), pruner


def run_study(setup: BenchSetup, sampler: str, seed: int, folder: Path) -> RunResult:
    """One study of `setup.proposals` proposals on a fresh SQLite store in `folder`."""
    space = SearchSpace.resolve(setup.space)
    name = f"{setup.scorer}-{setup.rejected}-{sampler}-{seed}"
    chosen_sampler, pruner = sampler_and_pruner(setup, sampler, seed)
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{folder / f'{name}.db'}",
        sampler=chosen_sampler,
        pruner=pruner,
        direction="maximize",
    )
    objective = make_objective(
        space,
        setup.budget,
        SCORERS[setup.scorer],
        seed,
        setup.epochs,
        rejected_complete=setup.rejected == "complete",
    )
    study.optimize(objective, n_trials=setup.proposals)
    trials = study.get_trials(deepcopy=False)
    accuracies = [a for a in map(trial_view.accuracy, trials) if a is not None]
    return RunResult(
        rejected=[trial_view.classify(t) == trial_view.TrialKind.REJECTED for t in trials],
        duplicates=[trial_view.classify(t) == trial_view.TrialKind.DUPLICATE for t in trials],
        trained=sum(map(trial_view.is_trained, trials)),
        best=max(accuracies, default=float("nan")),
    )


def main() -> None:
    defaults = BenchSetup()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--scorers", nargs="+", choices=SCORERS, default=list(SCORERS))
    parser.add_argument("--seeds", type=int, default=10, help="runs per sampler: seeds 0..N-1")
    parser.add_argument("--proposals", type=int, default=defaults.proposals)
    parser.add_argument("--early", type=int, default=defaults.early)
    parser.add_argument("--late", type=int, default=defaults.late)
    parser.add_argument("--budget", type=float, default=defaults.budget, help="e.g. 5e6")
    parser.add_argument("--space", default=defaults.space)
    parser.add_argument("--target", type=int, default=defaults.target, help="the --trials")
    parser.add_argument("--pruner", choices=PRUNERS, default=defaults.pruner)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--rejected", choices=REJECTED_AS, default=defaults.rejected)
    args = parser.parse_args()
    setups = [
        BenchSetup(
            budget=int(args.budget),
            space=args.space,
            target=args.target,
            proposals=args.proposals,
            early=args.early,
            late=args.late,
            scorer=scorer,
            pruner=args.pruner,
            epochs=args.epochs,
            rejected=args.rejected,
        )
        for scorer in args.scorers
    ]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    space = SearchSpace.resolve(args.space)
    first = setups[0]
    print(
        f"date={datetime.datetime.now().isoformat(timespec='seconds')} "
        f"machine={platform.machine()} cpus={usable_cpus()} "
        f"load_average_1min={os.getloadavg()[0]:.2f} optuna={optuna.__version__} "
        f"store_folder={tempfile.gettempdir()}"
    )
    print(
        f"space={first.space} budget={first.budget:,} "
        f"uniform_share_over={1 - space.fraction_under(first.budget, 10):.2f} "
        f"target={first.target} (tpe random start-up: {tpe_startup(first.target)} trained; "
        f"nsga2 population: {nsga2_population(first.target)}) proposals={first.proposals} "
        f"seeds=0..{args.seeds - 1} pruner={first.pruner} epochs={first.epochs} "
        f"rejected_as={first.rejected}"
    )
    print(
        f"| scorer | sampler | over budget, first {first.early} | over budget, last "
        f"{first.late} | last/first | duplicates, last {first.late} | trained | best score "
        "| seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    per_seed = []
    with tempfile.TemporaryDirectory() as folder:
        for setup in setups:
            for sampler in args.samplers:
                start = time.perf_counter()
                runs = [run_study(setup, sampler, seed, Path(folder)) for seed in range(args.seeds)]
                seconds = time.perf_counter() - start
                early = statistics.mean(run.early_share(setup.early) for run in runs)
                late = statistics.mean(run.late_share(setup.late) for run in runs)
                duplicates = statistics.mean(run.late_duplicates(setup.late) for run in runs)
                trained = statistics.mean(run.trained for run in runs)
                best = statistics.mean(run.best for run in runs)
                print(
                    f"| {setup.scorer} | {sampler} | {early:.2f} | {late:.2f} "
                    f"| {late / early if early else 0:.2f} | {duplicates:.2f} | {trained:.1f} "
                    f"| {best:.4f} | {seconds:.0f} |",
                    flush=True,
                )
                shares = " ".join(
                    f"{run.early_share(setup.early):.2f}->{run.late_share(setup.late):.2f}"
                    for run in runs
                )
                per_seed.append(f"{setup.scorer} {sampler}: {shares}")
    print("\nper seed, over budget (first -> last):")
    print("\n".join(per_seed))


if __name__ == "__main__":
    main()
