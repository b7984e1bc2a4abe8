"""Owns how candidates are proposed: the samplers and pruners of a study and how the budget
reaches them.

Claims:
- `make_sampler(name, seed, trials)` sizes the sampler from the study's target (`--trials`,
  trained candidates): TPE samples at random until `tpe_startup(trials)` candidates were
  really trained (`trial_view.is_trained`; over-budget rejections, duplicates and "not needed"
  trials do not count, where Optuna's own `n_startup_trials` would count every finished
  trial), then models; NSGA-II's population is `nsga2_population(trials)` trained candidates,
  so a study of tens of trials goes through several generations instead of never leaving its
  random first one (Optuna's default population is 50).
- Every sampler is seeded: in the same study, the same seed proposes the same candidates.
- How the budgets reach each sampler: every gated trial carries its excess over each budget,
  as a share of that budget, as constraints (<= 0 feasible; `nas.costs.budgets`). On Optuna >= 5 the
  objective records them with `record_constraints` (`Trial.set_constraint`, one per budget) and
  no sampler gets `constraints_func` (which 5.0 deprecates); on Optuna 4.x
  `record_constraints` does nothing and TPE's `constraints_func` reads `records.CONSTRAINT`,
  the budgets in one number. Rejected candidates stay PRUNED trials without intermediate
  values, so `trial_view.classify`, the report and the median pruner's start-up (COMPLETE trials
  only) see them as before. TPE puts them, infeasible, in its "bad" group, so over-budget
  regions get rarer. NSGA-II builds its populations from COMPLETE trials only, so a rejected
  child never becomes a parent and every parent is within the budget; it needs no constraint
  (its COMPLETE trials are all feasible). Finishing rejections as COMPLETE with a worst value
  and the constraint was measured too and did no better (benchmarks/RESULTS.md), at the cost
  of fake COMPLETE trials in the store.
- `optuna-tpe` is `optuna.samplers.TPESampler` with Optuna's defaults (seeded; its start-up
  counts every finished trial, rejections too), the comparison's "Optuna raw"; the budgets
  reach it as they reach `tpe` on Optuna >= 5 (`Trial.set_constraint`), not on 4.x.
- `gp` is Optuna's `GPSampler`, given the budgets as constraints as TPE is:
  `Trial.set_constraint` on Optuna >= 5, `constraints_func` on 4.2-4.9. It models COMPLETE
  trials only (within the budget), so over-budget rejections, PRUNED, never reach its model,
  and parameters only some trials have (a deeper layer's width) are drawn at random. Without
  scipy (GPSampler's optimizer) asking for it is one sentence, a `UserError`, before the study
  is created.
- The `fidelity` pruner (`FidelityPruner`) applies the median rule only from the earliest epoch
  that the study's own rank fidelity (`nas.search.fidelity`, over its trials that ran every epoch)
  says ranks like the last; before enough full-length trials, or while no epoch agrees, it
  prunes nothing.
- Only public Optuna API: the TPE wrapper overrides `BaseSampler`'s public hooks.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nas import records, trial_view
from nas.errors import UserError
from nas.search.fidelity import rank_fidelity

CONSTRAINT_SUFFIX = "_excess"  # Optuna >= 5: constraint `<cost>_excess` per budget (set_constraint)
HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5.0

TPE_STARTUP_MAX = 10  # random trained candidates before TPE models (Optuna's default count)
TPE_STARTUP_MIN = 2  # fewest: TPE needs a couple of trained candidates to split good from bad
NSGA2_POPULATION_MAX = 50  # Optuna's default population, kept for studies of 250+ trials
NSGA2_POPULATION_MIN = 4  # fewest: at least twice the crossover's 2 parents
TPE_STARTUP_SHARE = 5  # TPE's random start-up: a fifth of the target (50 trials -> 10)
NSGA2_POPULATION_SHARE = 8  # NSGA-II's population: an eighth of the target (50 trials -> 6)


def tpe_startup(trials: int) -> int:
    """Trained candidates TPE draws at random before it models: a fifth of the target."""
    return max(TPE_STARTUP_MIN, min(TPE_STARTUP_MAX, trials // TPE_STARTUP_SHARE))


def nsga2_population(trials: int) -> int:
    """NSGA-II's population: COMPLETE trials per generation, an eighth of the target. Only
    COMPLETE trials count, not the rejected ones nor those the pruner stopped, so a study of
    `trials` goes through a few generations; with a fifth (10 for 50 trials) the first
    generation took most of an 80-proposal study (benchmarks/RESULTS.md)."""
    return max(NSGA2_POPULATION_MIN, min(NSGA2_POPULATION_MAX, trials // NSGA2_POPULATION_SHARE))


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """The sampler `name` (one of `nas.config.search.SAMPLERS`), seeded, sized for a target of
    `trials`."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        population = nsga2_population(trials)
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if name == "optuna-tpe":  # Optuna's TPESampler as its docs teach it: its own defaults
        return optuna.samplers.TPESampler(seed=seed)
    if name == "gp":
        check_gp_sampler()
        return optuna.samplers.GPSampler(
            seed=seed,
            # random until as many COMPLETE trials as TPE's start-up (GPSampler counts COMPLETE
            # trials only, so rejections do not use it up); Optuna's 10 would never end in a
            # short study
            n_startup_trials=tpe_startup(trials),
            # a space's deeper layers' widths exist only in some trials: GPSampler draws those
            # at random, as intended here, and would warn on every trial
            warn_independent_sampling=False,
            **constraint_kwargs(),
        )
    return TrainedStartupTPESampler(
        n_trained_startup=tpe_startup(trials),
        seed=seed,
        multivariate=True,  # widths and block counts interact through the budget
        group=True,  # 4- and 5-layer candidates have different parameters
        **constraint_kwargs(),
    )


def check_gp_sampler() -> None:
    """Refuse `--sampler gp` in one sentence where it cannot run, or cannot see the budgets:
    GPSampler (experimental since Optuna 3.6) takes constraints from 4.2, through
    `constraints_func` (deprecated in 5.0 for `Trial.set_constraint`); on 4.0 and 4.1, which
    pyproject's range allows, it is refused (not run: the suite runs on 5.1)."""
    import importlib.util
    import inspect

    if "constraints_func" not in inspect.signature(optuna.samplers.GPSampler).parameters:
        raise UserError(
            f"--sampler gp needs Optuna 4.2 or later, whose GPSampler takes the budget as a "
            f"constraint; this is Optuna {optuna.__version__}"
        )
    if importlib.util.find_spec("scipy") is None:
        raise UserError("--sampler gp needs scipy (Optuna's GPSampler uses it): pip install scipy")


def constraint_kwargs() -> dict[str, Any]:
    """What a constrained sampler's constructor needs: `constraints_func` before Optuna 5 only
    (5.0 deprecates it and reads the constraints `record_constraints` sets)."""
    return {} if HAS_SET_CONSTRAINT else {"constraints_func": budget_constraint}


def budget_constraint(trial: FrozenTrial) -> tuple[float]:
    """Every budget in one number (<= 0 feasible), as recorded by the gate (Optuna 4.x)."""
    return (float(trial.user_attrs.get(records.CONSTRAINT, 0.0)),)


def record_constraints(trial: optuna.Trial, relative_excess: dict[str, float]) -> None:
    """Give the samplers a gated trial's excess over each budget, as a share of the budget
    (<= 0 is feasible; `nas.costs.budgets.Verdict.relative`).

    Call it for every gated trial, next to `records.CONSTRAINT`. On Optuna >= 5 it sets one
    constraint per budget (`<cost>_excess`); on 4.x it does nothing (the sampler's
    `constraints_func` reads `records.CONSTRAINT`, the same budgets in one number)."""
    if not HAS_SET_CONSTRAINT:
        return
    with warnings.catch_warnings():
        # a trial retried after its process died (the storage's RetryFailedTrialCallback) has
        # its constraints copied over: the same architecture under the same budgets, so the
        # same values; Optuna keeps the first and would warn the user about each
        warnings.filterwarnings("ignore", "The constraint value is ignored", UserWarning)
        for name, value in relative_excess.items():
            trial.set_constraint(f"{name}{CONSTRAINT_SUFFIX}", float(value))


def constraint_of(trial: FrozenTrial) -> float | None:
    """The budgets as the samplers see them, in one number (None if none was stored): on
    Optuna >= 5 the per-budget constraints combined as `Verdict.constraint` combines them."""
    if HAS_SET_CONSTRAINT:
        values = [v for k, v in trial.constraints.items() if k.endswith(CONSTRAINT_SUFFIX)]
        if not values:
            return None
        over = [v for v in values if v > 0]
        return sum(over) if over else max(values)
    stored = trial.system_attrs.get("constraints")  # Optuna 4.x: constraints_func's result
    return float(stored[0]) if stored else None


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs))
    if name == "asha":  # Optuna's SuccessiveHalvingPruner with its documented defaults
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "fidelity":
        return FidelityPruner(epochs)
    # compare with the median only after a few full trials and a third of the epochs
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 3))


def trained_count(study: optuna.Study) -> int:
    """Finished trials that trained a candidate (`trial_view.is_trained`)."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return sum(trial_view.is_trained(trial) for trial in finished)


class TrainedStartupTPESampler(optuna.samplers.TPESampler):
    """TPE that samples at random until `n_trained_startup` candidates were trained.

    Optuna's `n_startup_trials` counts every COMPLETE or PRUNED trial, so with a budget that
    rejects most of the space TPE would model after a handful of trained candidates. Here the
    choice is made once per trial, in `before_trial`, from the trained count at that moment;
    the start-up draws come from a `RandomSampler` with the same seed."""

    def __init__(self, *, n_trained_startup: int, seed: int | None = None, **tpe_options: Any):
        super().__init__(n_startup_trials=0, seed=seed, **tpe_options)
        self.n_trained_startup = n_trained_startup
        self.startup_sampler = optuna.samplers.RandomSampler(seed=seed)
        self.random_trials: set[int] = set()  # trial numbers drawn at random (start-up)

    def is_startup(self, trial: FrozenTrial) -> bool:
        """Whether `trial` is (or was) drawn at random by this sampler."""
        return trial.number in self.random_trials

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        super().before_trial(study, trial)
        if trained_count(study) < self.n_trained_startup:
            self.random_trials.add(trial.number)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self.is_startup(trial):
            return {}
        return super().infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self.is_startup(trial):
            return {}
        return super().sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if self.is_startup(trial):
            return self.startup_sampler.sample_independent(
                study, trial, param_name, param_distribution
            )
        return super().sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self.startup_sampler.reseed_rng()


class FidelityPruner(optuna.pruners.BasePruner):
    """The median rule, applied only from the epoch at which the study's own rank fidelity
    (`nas.search.fidelity`, over its trials that ran every epoch) says the ranking already agrees
    with the last epoch's. Until enough full-length trials exist, and while no earlier epoch
    agrees, it prunes nothing: a search whose early epochs rank unlike the last trains every
    candidate to the end."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)

    def trusted_epoch(self, study: optuna.Study) -> int | None:
        """The earliest epoch whose ranking the study's full-length trials say agrees."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return rank_fidelity(complete, self.epochs).agreeing_epoch()

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step >= self.epochs:
            return False
        epoch = self.trusted_epoch(study)
        if epoch is None or step < epoch:
            return False
        return self.median.prune(study, trial)
