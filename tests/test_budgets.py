"""Tests of the budgets beyond parameters (issue 14: nas.costs.budgets, the gate in
nas.search.objective, the study's records and resume checks in nas.search.loop) on real SQLite
stores, real Optuna studies,
the tiny search space and small synthetic data on the CPU. Latency is really measured
(nas.costs.latency; memory by nas.costs.memory); no test asserts a timing, only what the gate
does with what it measured.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.arch.counts import count_macs, count_params
from nas.arch.space import SearchSpace
from nas.cli.main import search_main
from nas.config.costs import describe_limits
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.costs.budgets import Budgets, Gate, Verdict, record_verdict
from nas.costs.latency import Latency, LatencySetup, measure_latency
from nas.costs.memory import TrainingMemory
from nas.errors import UserError
from nas.search.loop import run_search
from nas.search.objective import Objective
from nas.search.samplers import HAS_SET_CONSTRAINT, constraint_of

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.usefixtures("one_thread"),  # conftest.py: one torch thread for the module
]

SMALL = Architecture((8, 12), (1, 1), conv_kernel=3, skip_kernel=1, stem=8)
LARGE = Architecture((16, 16, 16), (2, 2, 2), conv_kernel=3, skip_kernel=3, stem=8)
RECIPE = Recipe(epochs=1, batch_size=16, augment="none")
MACHINE = Machine(device="cpu")
DATA = DataConfig(dataset="synthetic", subset=48, synthetic_size=60)


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


# ---- the gate --------------------------------------------------------------------------------


def test_a_candidate_over_an_analytic_budget_is_rejected_without_being_timed():
    macs = count_macs(LARGE, 32)
    budgets = Budgets(params=10**9, macs=macs - 1, latency_ms=1e6)
    verdict = Gate(budgets, 32, RECIPE, MACHINE).check(LARGE, earlier=lambda: pytest.fail("read"))
    assert verdict.broken == {"macs": 1}
    assert "latency" not in verdict.costs  # no timing once MACs reject it
    assert verdict.reason(budgets.limits()) == (
        f"over budget: MACs {macs / 1e6:,.1f}M > {(macs - 1) / 1e6:,.1f}M"
    )
    assert verdict.constraint() == pytest.approx(1 / (macs - 1))


def test_a_candidate_within_the_analytic_budgets_is_timed_and_compared_with_every_budget():
    budgets = Budgets(params=count_params(SMALL), macs=count_macs(SMALL, 32), latency_ms=1e-6)
    verdict = Gate(budgets, 32, RECIPE, MACHINE).check(SMALL)
    assert verdict.excess["params"] == 0 and verdict.excess["macs"] == 0  # at the limit: within
    assert set(verdict.broken) == {"latency"}  # no model runs in a nanosecond
    latency = verdict.details["latency"]
    assert latency["median_ms"] == verdict.costs["latency"] > 0
    assert verdict.reason(budgets.limits()).startswith("over budget: latency ")
    assert verdict.reason(budgets.limits()).endswith(" > 0.00 ms")
    # the samplers see each budget as a share of it: a millisecond weighs like a parameter
    assert verdict.relative["latency"] == pytest.approx(verdict.costs["latency"] / 1e-6 - 1)


def test_latency_is_measured_under_the_budgets_setup_on_the_image_size_of_the_data():
    asked = []

    def meter(arch, image_size, setup):
        asked.append((arch, image_size, setup))
        return Latency(median_ms=3.123456, low_ms=2.5, high_ms=3.5, runs=15, seconds=0.5)

    budgets = Budgets(params=10**9, latency_ms=2.0, latency_batch=4, latency_threads=2)
    verdict = Gate(budgets, 24, RECIPE, MACHINE, latency_meter=meter).check(SMALL)
    assert asked == [(SMALL, 24, LatencySetup(device="cpu", batch=4, threads=2))]
    assert verdict.broken == {"latency": 1.1235}  # measured values keep four decimals
    assert verdict.details["latency"]["runs"] == 15


def test_an_earlier_trials_measurement_is_reused_not_repeated():
    recorded = {
        records.LATENCY: {"median_ms": 123.0, "low_ms": 120.0, "high_ms": 125.0, "runs": 15,
                          "seconds": 2.0},
    }  # fmt: skip
    budgets = Budgets(params=10**9, latency_ms=100.0)
    verdict = Gate(budgets, 32, RECIPE, MACHINE).check(SMALL, earlier=lambda: recorded)
    assert verdict.reused
    assert verdict.costs["latency"] == 123.0  # a new measurement of SMALL would be ~1 ms
    assert verdict.broken == {"latency": 23.0}


def test_a_memory_measured_earlier_is_reused_and_every_cost_is_recorded_on_the_trial(tmp_path):
    def never(*_args):
        raise AssertionError("measured again")

    recorded = {records.MEMORY: {"megabytes": 812.0, "measured": True, "device": "cuda:0",
                                 "parts": {"peak": 812.0, "weights": 0.1}}}  # fmt: skip
    budgets = Budgets(params=10**9, memory_mb=800.0)
    cuda = Machine(device="cuda:0")  # measured there; the meter stands in, no CUDA touched
    verdict = Gate(budgets, 32, RECIPE, cuda, memory_meter=never).check(
        SMALL, earlier=lambda: recorded
    )
    assert verdict.reused and verdict.costs["memory"] == 812.0
    assert verdict.broken == {"memory": 12} and type(verdict.broken["memory"]) is int
    study = optuna.create_study(storage=url_of(tmp_path / "v.db"), direction="maximize")
    trial = study.ask()
    record_verdict(trial, verdict)
    assert study.trials[0].user_attrs == {
        records.MACS: count_macs(SMALL, 32),
        records.MEMORY_MB: 812.0,
        records.MEMORY: recorded[records.MEMORY],
        records.EXCESS: {"params": count_params(SMALL) - 10**9, "memory": 12},
        records.CONSTRAINT: 12 / 800,
    }  # fmt: skip


def test_each_cost_is_measured_once_where_it_is_budgeted_and_nowhere_else():
    # counting meters stand in for the measurements (no CUDA touched on a cuda:N machine)
    calls = []

    def memory(arch, image_size, recipe, machine):
        calls.append(("memory", arch, machine.device))
        return TrainingMemory(100.0, machine.device != "cpu", machine.device, {"peak": 100.0})

    def latency(arch, image_size, setup):
        calls.append(("latency", arch, setup.device))
        return Latency(median_ms=1.0, low_ms=1.0, high_ms=1.0, runs=15, seconds=0.5)

    for device in ("cpu", "cuda:1"):
        machine = Machine(device=device)
        plain = Gate(Budgets(params=10**9), 32, RECIPE, machine, memory, latency).check(SMALL)
        assert set(plain.costs) == {"params", "macs"} and calls == []
        both = Budgets(params=10**9, memory_mb=200.0, latency_ms=2.0, latency_device="cuda")
        verdict = Gate(both, 32, RECIPE, machine, memory, latency).check(SMALL)
        if device == "cpu":  # the estimate is analytic: first, before any timing
            assert calls == [("memory", SMALL, "cpu"), ("latency", SMALL, "cuda")]
        else:  # both measured, latency on the worker's own GPU (a bare `cuda` is it)
            assert calls == [("latency", SMALL, "cuda:1"), ("memory", SMALL, "cuda:1")]
        assert not verdict.rejected
        calls.clear()


def test_a_latency_measurement_that_runs_out_of_memory_is_a_verdict_on_its_device():
    def latency(*_args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    budgets = Budgets(params=10**9, latency_ms=2.0, latency_device="cuda")
    verdict = Gate(budgets, 32, RECIPE, Machine(device="cuda:1"), latency_meter=latency).check(
        SMALL
    )
    assert verdict.unfit_on == "cuda:1" and verdict.relative["latency"] == 1.0
    assert verdict.reason(budgets.limits()) == "does not fit on cuda:1"


def test_training_memory_on_the_cpu_is_an_estimate_labelled_so():
    budgets = Budgets(params=10**9, memory_mb=0.001)
    verdict = Gate(budgets, 32, RECIPE, MACHINE).check(SMALL)
    assert set(verdict.broken) == {"memory"}
    assert verdict.details["memory"]["measured"] is False
    assert "latency" not in verdict.costs  # no latency budget: nothing timed


def _out_of_memory(*_args):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0)")


def test_a_memory_measurement_that_runs_out_of_memory_is_a_rejection_not_a_crash():
    budgets = Budgets(params=10**9, memory_mb=1e6)
    gate = Gate(budgets, 32, RECIPE, MACHINE, memory_meter=_out_of_memory)
    verdict = gate.check(SMALL)
    assert verdict.rejected and verdict.unfit_on == "cpu"
    assert verdict.broken == {}  # no budget is known to be broken: the device is too small
    assert verdict.reason(budgets.limits()) == "does not fit on cpu"
    assert "memory" not in verdict.costs  # nothing was measured
    assert verdict.relative["memory"] == 1.0 and verdict.constraint() == 1.0  # infeasible


def test_an_out_of_memory_on_a_gpu_other_workers_share_is_not_a_lasting_verdict():
    budgets = Budgets(params=10**9, memory_mb=1e6)
    shared = Machine(device="cuda:0", gpu_shared_by=2)  # the gate itself never touches CUDA
    verdict = Gate(budgets, 32, RECIPE, shared, memory_meter=_out_of_memory).check(SMALL)
    assert verdict.rejected and verdict.unfit_on == "cuda:0" and verdict.shared_by == 2
    assert verdict.reason(budgets.limits()) == (
        "out of memory on cuda:0, shared by 2 workers: measured again later"
    )
    assert verdict.relative["memory"] == 0.0  # the samplers learn no "does not fit" from it
    alone = Machine(device="cuda:0")
    verdict = Gate(budgets, 32, RECIPE, alone, memory_meter=_out_of_memory).check(SMALL)
    assert verdict.reason(budgets.limits()) == "does not fit on cuda:0"
    assert verdict.relative["memory"] == 1.0


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("GET was unable to find an engine to execute this computation", "does not fit on cpu"),
        (
            "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
            "does not fit on cpu",
        ),
        # cuDNN refusing a layer is not the device's memory (torch's AT_CUDNN_CHECK text)
        (
            "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a "
            "non-contiguous input.",
            "cuDNN does not support one of its layers on cpu",
        ),
    ],
)
def test_a_measurement_failure_is_rejected_with_its_own_reason(message, reason):
    def failing(*_args):
        raise RuntimeError(message)

    budgets = Budgets(params=10**9, memory_mb=1e6)
    verdict = Gate(budgets, 32, RECIPE, MACHINE, memory_meter=failing).check(SMALL)
    assert verdict.rejected and verdict.reason(budgets.limits()) == reason


def test_a_cudnn_refusal_on_a_shared_gpu_is_the_candidates_own_verdict():
    # only the device's memory running out can be another worker's doing: cuDNN refusing a
    # layer is the candidate's, whoever shares the GPU
    def refused(*_args):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.")

    budgets = Budgets(params=10**9, memory_mb=1e6)
    shared = Machine(device="cuda:0", gpu_shared_by=2)
    verdict = Gate(budgets, 32, RECIPE, shared, memory_meter=refused).check(SMALL)
    assert verdict.unfit_on == "cuda:0" and verdict.shared_by == 1
    assert verdict.relative["memory"] == 1.0
    assert verdict.reason(budgets.limits()) == "cuDNN does not support one of its layers on cuda:0"


def test_a_rejection_names_every_budget_broken_and_the_device_it_did_not_fit():
    # the costs' own words (nas.config.costs), joined by hand
    verdict = Verdict(
        costs={"params": 1200, "macs": 412_300_000, "latency": 1.0},
        excess={"params": 200, "macs": 112_300_000, "latency": -1.0},
        unfit_on="cuda:0",
    )
    limits = {"params": 1000, "macs": 300_000_000, "latency": 2.0}
    assert verdict.reason(limits) == (
        "over budget: params 1,200 > 1,000, MACs 412.3M > 300.0M; does not fit on cuda:0"
    )


def test_a_measurement_failing_for_another_reason_still_raises():
    def broken(*_args):
        raise RuntimeError("size mismatch")

    gate = Gate(Budgets(params=10**9, memory_mb=1e6), 32, RECIPE, MACHINE, memory_meter=broken)
    with pytest.raises(RuntimeError, match="size mismatch"):
        gate.check(SMALL)


def test_the_constraint_combines_budgets_as_shares_of_each():
    verdict = Verdict(relative={"params": -0.5, "latency": -0.1})
    assert verdict.constraint() == -0.1  # all met: the tightest margin
    verdict = Verdict(relative={"params": 0.25, "macs": -0.5, "latency": 0.5})
    assert verdict.constraint() == 0.75  # over two: their excesses add up
    assert Verdict().constraint() == 0.0  # nothing checked: nothing broken


def test_budgets_record_the_latency_setup_only_where_latency_is_measured():
    plain = Budgets(params=1000, macs=10**6)
    assert plain.to_dict() == {"params": 1000, "macs": 10**6, "latency_ms": None, "memory_mb": None}
    timed = Budgets(params=1000, latency_ms=2.0, latency_batch=8)
    assert timed.to_dict()["latency_batch"] == 8 and timed.to_dict()["latency_device"] == "cpu"
    assert describe_limits(timed.limits()) == "1,000 parameters, 2.00 ms latency"
    assert timed.describe() == "1,000 parameters, 2.00 ms latency (cpu, batch 8, 1 thread)"


# ---- a search with several budgets (the acceptance) ---------------------------------


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory) -> tuple[Path, SearchConfig, optuna.Study]:
    """A search with a parameter, a MAC and a latency budget together on synthetic data. The
    latency budget is three times what this machine measures for tiny's smallest candidate, so
    it means the same on a fast CPU and a slow one (the MAC budget keeps candidates within
    about three times the smallest's work)."""
    store = tmp_path_factory.mktemp("budgets") / "b.db"
    smallest = SearchSpace.resolve("tiny").smallest(10)
    measured = measure_latency(smallest, 32, LatencySetup()).median_ms
    config = SearchConfig(
        budget=20_000,
        max_macs=5_000_000,  # tiny's candidates need 1.7M..12M MACs
        max_latency_ms=max(0.01, round(3 * measured, 2)),
        trials=3,
        space="tiny",
        study="budgets",
        storage=url_of(store),
        sampler="random",
        warm_start=False,
    )
    study = run_search(config, DATA, RECIPE, MACHINE)
    return store, config, study


def test_only_candidates_within_every_budget_train_and_rejections_name_what_they_broke(budgeted):
    _, config, study = budgeted
    limits = {"params": 20_000, "macs": 5_000_000, "latency": config.max_latency_ms}
    trained = [t for t in study.trials if trial_view.is_trained(t)]
    rejected = [t for t in study.trials if trial_view.classify(t) == trial_view.TrialKind.REJECTED]
    assert len(trained) == 3
    assert rejected, "random seed 0 meets candidates over the MAC budget in tiny"
    for trial in trained:
        assert trial.user_attrs["params"] <= limits["params"]
        assert trial.user_attrs["macs"] <= limits["macs"]
        assert trial.user_attrs["latency_ms"] <= limits["latency"]  # timed before training
        assert set(trial.user_attrs["excess"]) == {"params", "macs", "latency"}
        assert trial.user_attrs["constraint"] <= 0
        _check_samplers_view(trial)
    for trial in rejected:
        broken = trial.user_attrs["over_budget_by"]
        assert broken and all(value > 0 for value in broken.values())
        for name, value in broken.items():
            assert trial.user_attrs["excess"][name] == pytest.approx(value)
        reason = trial.user_attrs["prune_reason"]
        names = {"params": "params ", "macs": "MACs ", "latency": "latency "}
        assert reason.startswith("over budget: ")
        assert [n for n in names if names[n] in reason] == [n for n in names if n in broken]
        if "params" in broken or "macs" in broken:  # analytic budgets reject before timing
            assert "latency_ms" not in trial.user_attrs
        assert trial.state == TrialState.PRUNED and trial.intermediate_values == {}
        assert trial.user_attrs["constraint"] > 0
        _check_samplers_view(trial)


def _check_samplers_view(trial) -> None:
    """On Optuna 5 every trial carries its constraints (set_constraint); on 4.x only a sampler
    with a constraints_func (TPE) stores them, and this study's random sampler has none."""
    if HAS_SET_CONSTRAINT:
        assert constraint_of(trial) == pytest.approx(trial.user_attrs["constraint"])


def test_the_study_records_every_budget_and_refuses_a_resume_with_another(budgeted):
    _, config, study = budgeted
    recorded = study.user_attrs[records.BUDGETS]
    latency = config.max_latency_ms
    assert recorded["macs"] == 5_000_000 and recorded["latency_ms"] == latency
    assert recorded["latency_device"] == "cpu" and recorded["latency_threads"] == 1
    assert trial_view.budget_limits(study.user_attrs) == {
        "params": 20_000,
        "macs": 5_000_000,
        "latency": latency,
    }
    trials_before = len(study.trials)
    for change, words in (
        (
            {"max_latency_ms": latency + 1},
            f"a latency budget of {latency:.2f} ms, not a latency budget of {latency + 1:.2f} ms",
        ),
        ({"max_macs": None}, "a MAC budget of 5.0M MACs, not no MAC budget"),
        ({"max_memory_mb": 100.0}, "no memory budget, not a memory budget of 100.0 MB"),
        ({"latency_batch": 4}, "latency measured with batch 1, not latency measured with batch"),
        ({"objective": "pareto"}, "--objective accuracy, not --objective pareto --minimize"),
    ):
        with pytest.raises(UserError, match=words):
            run_search(dataclasses.replace(config, **change), DATA, RECIPE, MACHINE)
    reloaded = optuna.load_study(study_name=config.study, storage=config.storage)
    assert len(reloaded.trials) == trials_before  # nothing stored was touched
    run_search(
        config, DATA, RECIPE, MACHINE
    )  # the same budgets resume (the target is met: no trial)
    assert len(optuna.load_study(study_name=config.study, storage=config.storage).trials) == (
        trials_before
    )


def test_a_repeated_architecture_reuses_the_measured_latency(tmp_path):
    study = optuna.create_study(storage=url_of(tmp_path / "r.db"), direction="maximize")
    space = SearchSpace.resolve("tiny")
    params = space.params_for(SMALL)
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    budgets = Budgets(params=10**6, latency_ms=1e-6)  # rejects both after timing them
    objective = Objective(space, _splits(), RECIPE, MACHINE, budgets)
    study.optimize(objective, n_trials=2)
    first, second = study.trials
    assert first.user_attrs["over_budget_by"].keys() == {"latency"}
    assert second.user_attrs[records.LATENCY] == first.user_attrs[records.LATENCY]  # not re-timed


def _memory_search(store: Path, trials: int, max_rejections: int = 500) -> SearchConfig:
    return SearchConfig(
        budget=100_000,  # every tiny candidate (33,138 parameters at most)
        max_memory_mb=1e6,  # far above any tiny candidate: only running out of memory rejects
        trials=trials,
        space="tiny",
        study="memory",
        storage=url_of(store),
        sampler="random",
        warm_start=False,
        max_rejections=max_rejections,
    )


def test_a_candidate_that_runs_out_of_memory_while_measured_is_stored_as_rejected(tmp_path):
    from nas.costs.memory import training_memory

    calls = []

    def meter(arch, image_size, recipe, machine):
        calls.append(arch)
        if len(calls) == 1:  # the first candidate does not fit the device
            _out_of_memory()
        return training_memory(arch, image_size, recipe, machine)

    config = _memory_search(tmp_path / "m.db", trials=1)
    said: list[str] = []
    study = run_search(config, DATA, RECIPE, MACHINE, memory_meter=meter, announce=said.append)
    # the search goes on after it; first it said where the data lives (48 x 3,072 B, the CPU:
    # the most batches of 16 within 8,192 images)
    assert said[-1] == "data: 48 images (147 kB) on cpu, augmented in chunks of 8,192"
    first, *rest = study.trials
    assert first.state == TrialState.PRUNED
    assert first.user_attrs[records.PRUNE_REASON] == "does not fit on cpu"
    assert first.user_attrs[records.OUT_OF_MEMORY] == "cpu"
    assert first.user_attrs[records.PARAMS] == count_params(calls[0])
    assert first.user_attrs[records.OVER_BUDGET_BY] == {}
    assert trial_view.classify(first) == trial_view.TrialKind.REJECTED
    assert first.intermediate_values == {} and records.MEMORY_MB not in first.user_attrs
    assert first.user_attrs["constraint"] == 1.0  # the samplers see it as infeasible
    _check_samplers_view(first)
    # one trained (the target), and the claim of its confirmation run (nas.search.confirm)
    proposed = [t for t in rest if records.CONFIRMS not in t.user_attrs]
    assert [t.state for t in proposed] == [TrialState.COMPLETE]
    assert [t.user_attrs[records.CONFIRMS] for t in rest if t not in proposed] == [
        proposed[0].number
    ]


def test_a_search_whose_every_candidate_runs_out_of_memory_says_so(tmp_path):
    config = _memory_search(tmp_path / "m.db", trials=2, max_rejections=3)
    with pytest.raises(UserError) as caught:
        run_search(config, DATA, RECIPE, MACHINE, memory_meter=_out_of_memory)
    assert str(caught.value) == (
        "the last 3 candidates did not fit in the memory of cpu (at a batch of 16); lower "
        "--batch-size, use a space with smaller widths, or use a device with more memory"
    )
    trials = optuna.load_study(study_name="memory", storage=config.storage).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 3
    assert {t.user_attrs[records.PRUNE_REASON] for t in trials} == {"does not fit on cpu"}


def _splits():
    from nas.data.loading import load_splits

    return load_splits(DATA)


def test_a_space_with_nothing_under_the_mac_budget_is_refused_before_any_trial(tmp_path):
    store = tmp_path / "m.db"
    config = SearchConfig(
        budget=10**6, max_macs=1000, trials=1, space="tiny", study="m", storage=url_of(store)
    )
    with pytest.raises(UserError, match=r"the cheapest architecture in .* over --max-macs"):
        run_search(config, DATA, RECIPE, MACHINE)
    assert not store.exists() or optuna.get_all_study_names(url_of(store)) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-macs", "lots"], "'lots' is not a number of MACs"),
        (["--max-latency-ms", "0"], "'0' must be above 0"),
        (["--minimize", "macs"], "--minimize applies to --objective pareto"),
        (["--objective", "pareto", "--pruner", "median"], "Optuna prunes no study of several"),
        (["--latency-device", "tpu"], "--latency-device must be cpu or cuda"),
    ],
)
def test_bad_budget_flags_get_one_sentence_and_exit_2(tmp_path, capsys, argv, message):
    store = tmp_path / "x.db"
    status = search_main(["--smoke", "--storage", url_of(store), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not store.exists()


def test_params_costs_prints_what_the_budgets_would_see(capsys):
    from nas.cli.main import main
    from nas.costs.memory import estimate_training_memory

    assert main(["params", "--arch", SMALL.describe()]) == 0
    plain = capsys.readouterr().out
    assert f"MACs per image: {count_macs(SMALL, 32) / 1e6:,.1f}M" in plain
    assert "latency" not in plain  # timing only when asked
    assert main(["params", "--arch", SMALL.describe(), "--costs", "--batch-size", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    memory = estimate_training_memory(SMALL, 32, 16, "adam").describe()
    assert f"training memory, batch 16, Adam: {memory}" in lines
    assert lines[-1].startswith("latency (cpu, batch 1, 1 thread): ") and " ms (" in lines[-1]


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_a_streak_of_rejected_candidates_ends_the_search_with_what_to_change(sampler):
    from optuna.trial import create_trial

    from nas.search.progress import RejectionStreak

    config = SearchConfig(budget=5_000, max_rejections=3, sampler=sampler, space="tiny")
    streak = RejectionStreak(config, batch_size=16)
    rejected = create_trial(state=TrialState.PRUNED, user_attrs={"over_budget_by": {"params": 1}})
    trained = create_trial(value=0.5, user_attrs={records.TRAINED: True, records.EPOCHS: 1})
    for trial in (rejected, rejected, trained, rejected, rejected):
        streak.record(trial)
        streak.check()  # a trained candidate starts the count again: 2 in a row, not 4
    streak.record(rejected)
    with pytest.raises(UserError) as caught:
        streak.check()
    advice = "raise a budget, widen the space, or lower --trials"
    if sampler == "gp":  # GPSampler never learns from a rejection: the way out is another sampler
        advice = "use --sampler tpe, which learns from rejected candidates, or " + advice
    assert str(caught.value) == (
        "the last 3 candidates were all over the budgets (5,000 parameters) or already trained; "
        + advice
    )


@pytest.mark.parametrize(
    "budgets, said",
    [
        (Budgets(latency_ms=2.0), "cpu, batch 1, 1 thread"),
        (Budgets(latency_ms=2.0, latency_threads=2, latency_batch=4), "cpu, batch 4, 2 threads"),
        (Budgets(latency_ms=2.0, latency_device="cuda", latency_threads=2), "cuda, batch 1"),
    ],
)
def test_the_latency_setup_says_its_threads_in_words_only_on_the_cpu(budgets, said):
    assert budgets.latency_setup_text() == said


def test_a_searchs_budgets_carry_its_latency_setup_and_measure_latency_only_to_lower_it():
    config = SearchConfig(budget=1000, latency_device="cuda", latency_batch=4, latency_threads=2)
    budgets = Budgets.of(config)
    assert (budgets.latency_device, budgets.latency_batch, budgets.latency_threads) == (
        "cuda", 4, 2
    )  # fmt: skip
    assert budgets.measure_latency is False  # accuracy only: latency is no objective
    lowering = Budgets.of(dataclasses.replace(config, objective="pareto", minimize="latency"))
    assert lowering.measure_latency is True
    assert Budgets.of(dataclasses.replace(config, objective="pareto")).measure_latency is False
    assert Budgets.of(dataclasses.replace(config, minimize="latency")).measure_latency is False


def test_a_budget_the_smallest_architecture_meets_exactly_is_feasible_and_one_less_is_not():
    from nas.costs.budgets import check_feasible

    space = SearchSpace.resolve("tiny")
    smallest = count_params(space.smallest(10))
    check_feasible(space, smallest, 10, None, 32)
    with pytest.raises(UserError) as refused:
        check_feasible(space, smallest - 1, 10, None, 32)
    assert str(refused.value) == (
        f"the smallest architecture in {space.source} has {smallest:,} parameters, over the "
        f"budget of {smallest - 1:,}; raise --budget or use a space with smaller widths"
    )
    fewest = count_macs(space.smallest(10, by=lambda a: count_macs(a, 32)), 32)
    check_feasible(space, 10**9, 10, fewest, 32)
    with pytest.raises(UserError) as refused:
        check_feasible(space, 10**9, 10, fewest - 1, 32)
    assert str(refused.value).endswith("; raise --max-macs or use a space with smaller widths")
