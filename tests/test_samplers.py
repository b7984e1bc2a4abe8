"""nas.search.samplers: TPE's start-up counts trained candidates, NSGA-II's population is sized from
the target, the constraint reaches the samplers without a deprecation warning on the installed
Optuna, and over-budget proposals get rarer as a study learns (a small bench_samplers run)."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas import records, trial_view
from nas.config.search import PRUNERS, SAMPLERS
from nas.search.samplers import (
    HAS_SET_CONSTRAINT,
    TrainedStartupTPESampler,
    budget_constraint,
    constraint_of,
    make_pruner,
    make_sampler,
    nsga2_population,
    record_constraints,
    tpe_startup,
)

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 100  # the toy gate below: x * 200 parameters, so x > 0.5 is over the budget


def load_bench():
    """benchmarks/bench_samplers.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_samplers", ROOT / "benchmarks" / "bench_samplers.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def new_study(tmp_path: Path, sampler: optuna.samplers.BaseSampler, name: str = "s"):
    return optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{tmp_path / 'samplers.db'}",
        sampler=sampler,
        direction="maximize",
        load_if_exists=True,
    )


def finish(study: optuna.Study, x: float | None = None) -> optuna.trial.FrozenTrial:
    """One trial through the toy gate: over the budget it is rejected (PRUNED, as the search
    records it), else it is trained with value 1 - x (smaller is better)."""
    if x is not None:
        study.enqueue_trial({"x": x})
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    params = round(x * 200)
    trial.set_user_attr(records.PARAMS, params)
    relative = (params - BUDGET) / BUDGET  # as nas.costs.budgets.Verdict.relative
    trial.set_user_attr(records.CONSTRAINT, relative)
    record_constraints(trial, {"params": relative})
    if params > BUDGET:
        trial.set_user_attr(records.OVER_BUDGET_BY, {"params": params - BUDGET})
        return study.tell(trial, state=TrialState.PRUNED)
    trial.set_user_attr(records.TRAINED, True)
    return study.tell(trial, 1.0 - x)


def draws(study: optuna.Study, count: int) -> list[float]:
    """What the sampler proposes next, `count` times, without changing the study (each
    proposal is told FAIL, which neither TPE nor the trained count sees)."""
    proposed = []
    for _ in range(count):
        trial = study.ask()
        proposed.append(trial.suggest_float("x", 0.0, 1.0))
        study.tell(trial, state=TrialState.FAIL)
    return proposed


def test_tpe_samples_at_random_until_enough_candidates_were_trained(tmp_path):
    sampler = make_sampler("tpe", seed=3, trials=15)
    startup = tpe_startup(15)
    assert isinstance(sampler, TrainedStartupTPESampler) and startup == 3
    study = new_study(tmp_path, sampler)
    for x in (0.02, 0.04):  # trained, at the low end (the best): one short of the start-up
        finish(study, x)
    for index in range(9):  # with them, more than Optuna's own start-up of 10 trials
        finish(study, 0.6 + 0.04 * index)
    kinds = [trial_view.classify(t) for t in study.trials]
    assert kinds.count(trial_view.TrialKind.TRAINED) == startup - 1
    assert kinds.count(trial_view.TrialKind.REJECTED) == 9

    # one trained candidate short: still uniform over [0, 1], so about half over 0.5
    random_draws = draws(study, 8)
    assert sum(x > 0.5 for x in random_draws) >= 2, random_draws

    finish(study, 0.06)  # the start-up's last trained candidate: TPE now models
    modelled = draws(study, 8)
    assert sum(x > 0.5 for x in modelled) <= 1, modelled


def test_tpe_startup_is_a_fifth_of_the_target_between_2_and_10():
    assert [tpe_startup(t) for t in (0, 4, 10, 25, 50, 100, 1000)] == [2, 2, 2, 5, 10, 10, 10]
    assert [tpe_startup(t) for t in (12, 27, 49)] == [2, 5, 9]  # whole candidates, rounded down


def test_nsga2_population_is_an_eighth_of_the_target_between_4_and_50():
    assert [nsga2_population(t) for t in (0, 20, 50, 100, 400, 1000)] == [4, 4, 6, 12, 50, 50]


@pytest.mark.parametrize("trials", [1, 20, 50, 400])
def test_nsga2_population_is_sized_from_the_target(trials):
    sampler = make_sampler("nsga2", seed=0, trials=trials)
    parents = optuna.samplers.nsgaii.UniformCrossover().n_parents  # the default crossover
    assert sampler.population_size == nsga2_population(trials)
    assert parents * 2 <= sampler.population_size <= max(parents * 2, trials)


def test_nsga2_leaves_its_first_generation_in_a_study_of_tens_of_trials(tmp_path):
    """With Optuna's default population (50), a study of tens of trained candidates never leaves
    generation 0: a random search. Sized from a target of 20, 12 trained candidates reach
    generation 2; rejected candidates (PRUNED) take no place in a generation."""
    assert optuna.samplers.NSGAIISampler().population_size == 50
    sampler = make_sampler("nsga2", seed=0, trials=20)
    assert sampler.population_size == 4
    study = new_study(tmp_path, sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for index in range(18):
            if index % 3 == 2:
                finish(study, 0.99)  # rejected
                continue
            trial = study.ask()  # trained (no gate here: NSGA-II's children may fall over)
            study.tell(trial, trial.suggest_float("x", 0.0, 1.0))
    trained = study.get_trials(states=(TrialState.COMPLETE,))
    generations = [sampler.get_trial_generation(study, t) for t in trained]
    assert generations == [0] * 4 + [1] * 4 + [2] * 4


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_sampler_builds_and_learns_without_deprecation_warnings(tmp_path, name):
    """On the installed Optuna: 4.x gets constraints_func (experimental there), 5.x gets the
    constraint from Trial.set_constraint, and neither warns of a deprecation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        study = new_study(tmp_path, make_sampler(name, seed=0, trials=10))
        finished = [finish(study) for _ in range(12)]  # past TPE's start-up and NSGA-II's
        for pruner in PRUNERS:
            make_pruner(pruner, epochs=3)
    rejected = [t for t in finished if trial_view.classify(t) == trial_view.TrialKind.REJECTED]
    trained = [t for t in finished if trial_view.is_trained(t)]
    assert rejected and trained
    if name in ("tpe", "gp") or (name == "optuna-tpe" and HAS_SET_CONSTRAINT):
        # the constraint reached the sampler (random and NSGA-II use none)
        for trial in rejected + trained:
            assert constraint_of(study.trials[trial.number]) == trial.user_attrs[records.CONSTRAINT]


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_sampler_proposes_what_its_seed_says(name):
    """The same seed proposes the same candidates, from the random start to the modelled or
    bred ones (8 trials: past TPE's and GP's start-up of 4 and NSGA-II's first generation of
    4); another seed proposes others."""

    def proposals(seed: int) -> list[float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = make_sampler(name, seed=seed, trials=20)
            study = optuna.create_study(sampler=sampler, direction="maximize")  # in memory
            return [finish(study).params["x"] for _ in range(8)]

    first = proposals(3)
    assert proposals(3) == first
    assert proposals(4) != first


@pytest.mark.slow  # 80 trials on SQLite: about 15 s
def test_over_budget_proposals_get_rarer_as_tpe_learns(tmp_path):
    """One study of benchmarks/bench_samplers.py (resnet space, 5M budget, random scores as in
    issue 12, the median pruner, seed 0): TPE's last 40 of 80 proposals are over the budget at
    most half as often as its first 20, which are random (uniform samples: about 70 %)."""
    bench = load_bench()
    setup = bench.BenchSetup(scorer="random")
    assert (setup.proposals, setup.early, setup.late, setup.budget) == (80, 20, 40, 5_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        run = bench.run_study(setup, "tpe", seed=0, folder=tmp_path)
    assert len(run.rejected) == 80
    assert run.early_share(20) >= 0.6
    assert run.late_share(40) <= run.early_share(20) / 2


@pytest.mark.slow  # a real search, 4 s; fast tests check GPSampler's draws and constraints
def test_a_short_search_with_the_gp_sampler_runs_and_gives_it_the_budget(tmp_path):
    """`--sampler gp`: Optuna's GPSampler drives a real search (tiny space, synthetic data,
    SQLite) past its random start-up (2 COMPLETE trials for a target of 6), and every trial it
    models carries the parameter budget as a constraint (<= 0 within it), the same names on
    each, as GPSampler requires. The budget holds the whole space: GPSampler models COMPLETE
    trials only, so a rejection never reaches it, and at a budget of 1,500 here it proposed
    over-budget candidates until the rejection streak ended the search (docs/search.md)."""
    from nas.config.data import DataConfig
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe
    from nas.config.search import SearchConfig
    from nas.search.loop import run_search

    space = tmp_path / "space.yaml"
    space.write_text(
        "name: tinygp\nstem: 4\nlayers: [1, 2]\nchannels: [4, 16]\nblocks: [1, 2]\n"
        "conv_kernel: [1, 3]\nskip_kernel: [1]\nkernels: shared\n"
    )
    config = SearchConfig(
        budget=100_000, trials=6, space=str(space), study="gp", sampler="gp", pruner="none",
        storage=f"sqlite:///{tmp_path / 's.db'}", warm_start=False, confirm=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = run_search(
            config, DataConfig(dataset="synthetic", subset=48),
            Recipe(epochs=1, batch_size=16, augment="none", flip=False), Machine(device="cpu"),
        )  # fmt: skip
    assert isinstance(study.sampler, optuna.samplers.GPSampler)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sum(trial_view.is_trained(t) for t in trials) == 6 and len(complete) >= 6
    for trial in complete:  # what GPSampler models: within the budget, constraint <= 0
        assert trial.user_attrs[records.PARAMS] <= 100_000
        assert constraint_of(trial) == trial.user_attrs[records.CONSTRAINT] <= 0
    if HAS_SET_CONSTRAINT:  # Optuna 5: one named constraint per budget, the same on every trial
        assert {tuple(t.constraints) for t in complete} == {("params_excess",)}


def test_the_gp_sampler_draws_as_optunas_after_the_start_up_and_is_quiet_about_deeper_layers(
    caplog,
):
    """Optuna's own GPSampler with `n_startup_trials=tpe_startup(trials)` (4 for 20) is the
    reference, draw for draw past its start-up; a parameter only some trials have (a deeper
    layer's width, `z`) is drawn at random without the warning GPSampler would log each time."""

    def draws(sampler: optuna.samplers.BaseSampler) -> list[tuple]:
        study = optuna.create_study(sampler=sampler, direction="maximize")
        for x in (0.1, 0.2, 0.3, 0.4):  # within the toy budget: 4 COMPLETE trials
            finish(study, x)
        drawn = []
        for _ in range(3):
            trial = study.ask()
            drawn.append((trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("z", 1, 64)))
            record_constraints(trial, {"params": -0.5})  # GPSampler needs them on every trial
            study.tell(trial, 0.5)
        return drawn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        reference = optuna.samplers.GPSampler(seed=3, n_startup_trials=4)
        expected = draws(reference)
        optuna.logging.enable_propagation()  # Optuna's warnings reach pytest's log capture
        try:
            caplog.clear()
            ours = draws(make_sampler("gp", seed=3, trials=20))
        finally:
            optuna.logging.disable_propagation()
    assert ours == expected
    assert [
        r.getMessage() for r in caplog.records if "sampled independently" in r.getMessage()
    ] == []


def test_the_gp_sampler_without_scipy_is_one_sentence(monkeypatch):
    from nas.errors import UserError

    monkeypatch.setitem(sys.modules, "scipy", None)  # as if scipy were not installed
    with pytest.raises(UserError) as refused:
        make_sampler("gp", seed=0, trials=10)
    assert str(refused.value) == (
        "--sampler gp needs scipy (Optuna's GPSampler uses it): pip install scipy"
    )


def test_optuna_tpe_is_optunas_own_tpe_not_this_tools():
    sampler = make_sampler("optuna-tpe", seed=0, trials=10)
    assert type(sampler) is optuna.samplers.TPESampler  # not TrainedStartupTPESampler
    assert type(make_sampler("tpe", seed=0, trials=10)) is TrainedStartupTPESampler


@pytest.mark.skipif(not HAS_SET_CONSTRAINT, reason="Optuna 4.x: record_constraints sets none")
def test_recording_the_constraints_a_retried_trial_holds_already_warns_of_nothing():
    """A trial retried after its process died (the storage's RetryFailedTrialCallback) holds
    its constraints already: the same architecture under the same budgets, the same values."""
    study = optuna.create_study()
    trial = study.ask()
    trial.set_constraint("params_excess", 0.5)  # as the retry copied it over
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record_constraints(trial, {"params": 0.5, "macs": -0.25})
    assert study.trials[0].constraints == {"params_excess": 0.5, "macs_excess": -0.25}


def test_the_optuna_4_constraint_is_the_gates_one_number_and_feasible_when_unrecorded():
    # Optuna 4.x samplers read the budgets through `constraints_func`: the number the gate
    # recorded, as a float in a 1-tuple; a trial without it (never gated) counts as feasible

    def trial(**user_attrs):
        return optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=0.5, user_attrs=user_attrs
        )

    assert budget_constraint(trial(**{records.CONSTRAINT: 3})) == (3.0,)
    assert isinstance(budget_constraint(trial(**{records.CONSTRAINT: 3}))[0], float)
    assert budget_constraint(trial(**{records.CONSTRAINT: -0.25})) == (-0.25,)
    assert budget_constraint(trial()) == (0.0,)


def test_the_tpe_draws_as_optunas_random_sampler_then_as_optunas_tpe_draw_for_draw(tmp_path):
    """Optuna's own samplers are the reference: the start-up draws are `RandomSampler(seed)`'s,
    and once enough candidates were trained (3 here, fewer than Optuna's default start-up of 10
    trials) every draw is `TPESampler(seed, n_startup_trials=0, multivariate, group)`'s: the
    widths every candidate has (`x`, `y`) and a deeper layer's width and blocks (`z`, `w`) that
    only some had, which TPE models as a group of their own; and one no finished trial had
    yet (`v`), which TPE draws on its own."""
    ours = new_study(tmp_path, make_sampler("tpe", seed=3, trials=15), name="ours")
    reference = new_study(tmp_path, optuna.samplers.RandomSampler(seed=3), name="random")
    assert draws(ours, 1) == draws(reference, 1)  # the start-up: Optuna's RandomSampler

    def next_draw(study, **fixed):
        if fixed:
            study.enqueue_trial(fixed)
        trial = study.ask()
        drawn = (trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("y", 1, 64))
        if not fixed or "z" in fixed:  # a deeper candidate: one more layer's width and blocks
            drawn += (trial.suggest_int("z", 1, 64), trial.suggest_int("w", 1, 4))
        if fixed:  # trained: the smaller x + y / 64, the better
            trial.set_user_attr(records.TRAINED, True)
            study.tell(trial, 1.0 - drawn[0] - drawn[1] / 64)
            return drawn
        return (*drawn, trial.suggest_int("v", 1, 8))  # one no finished trial had: independent

    # the start-up's 3 trained candidates, two of them deeper (TPE models `z` and `w` together,
    # as a group of their own)
    for fixed in ({"x": 0.02, "y": 60, "z": 40, "w": 1}, {"x": 0.3, "y": 5, "z": 9, "w": 3},
                  {"x": 0.9, "y": 33}):  # fmt: skip
        next_draw(ours, **fixed)
    tpe = optuna.samplers.TPESampler(n_startup_trials=0, seed=3, multivariate=True, group=True)
    modelled = new_study(tmp_path, tpe, name="tpe")
    modelled.add_trials(ours.trials)
    expected = [next_draw(modelled) for _ in range(4)]
    assert [next_draw(ours) for _ in range(4)] == expected
    assert len({x for x, *_ in expected}) == 4  # four different draws, not a constant


@pytest.mark.parametrize(
    "name, kind",
    [
        ("none", optuna.pruners.NopPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("asha", optuna.pruners.SuccessiveHalvingPruner),
        ("median", optuna.pruners.MedianPruner),
    ],
)
def test_each_pruner_name_gives_its_optuna_pruner(name, kind):
    assert type(make_pruner(name, 12)) is kind


def stopped_after(trial: optuna.Trial, value: float, epochs: int) -> int | None:
    """Report `value` at each epoch until the study's pruner stops `trial`: that epoch, or None
    when it runs to the end."""
    for epoch in range(1, epochs + 1):
        trial.report(value, epoch)
        if trial.should_prune():
            return epoch
    return None


def first_pruned_epochs(pruner: optuna.pruners.BasePruner, epochs: int, trials: int) -> list:
    """Where `pruner` stops each of `trials` trials of a study (None: never): the first ran
    only a third of the epochs (a study resumed with more epochs holds such trials), the others
    every epoch, each one value throughout, good and bad trials interleaved."""
    study = optuna.create_study(direction="maximize", study_name="p", pruner=pruner)
    stops = []
    for number in range(trials):
        trial = study.ask()
        value = (number * 7 % trials) / trials
        stop = stopped_after(trial, value, max(1, epochs // 3) if number == 0 else epochs)
        stops.append(stop)
        if stop is None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    return stops


@pytest.mark.parametrize("epochs", [1, 9])
def test_hyperband_runs_its_brackets_from_epoch_1_to_the_last_epoch(epochs):
    # Optuna's own pruner with those resources is the reference: an earlier first rung (2, 6,
    # 18 for min_resource 2) or a last epoch guessed from the first trial ("auto", 3 here) differ
    reference = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    ours = first_pruned_epochs(make_pruner("hyperband", epochs), epochs, trials=30)
    assert ours == first_pruned_epochs(reference, epochs, trials=30)
    assert {epoch for epoch in ours if epoch} == ({1, 3, 9} if epochs == 9 else {1})


@pytest.mark.parametrize(
    ("epochs", "first_prunable"), [(2, 1), (3, 1), (5, 1), (6, 2), (9, 3), (12, 4)]
)
def test_the_median_pruner_stops_no_trial_before_a_third_of_the_epochs_and_5_full_trials(
    epochs, first_prunable
):
    def first_pruned_epoch(full_trials: int) -> int | None:
        """A trial far below `full_trials` earlier ones at every epoch: where it is stopped."""
        study = optuna.create_study(direction="maximize", pruner=make_pruner("median", epochs))
        for _ in range(full_trials):
            trial = study.ask()
            assert stopped_after(trial, 0.9, epochs) is None
            study.tell(trial, 0.9)
        return stopped_after(study.ask(), 0.1, epochs)

    assert first_pruned_epoch(full_trials=5) == first_prunable
    assert first_pruned_epoch(full_trials=4) is None
