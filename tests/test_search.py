"""Tests of the search (nas.search.loop and the `search` command line) on real SQLite stores.

Everything runs on the CPU with real Optuna studies in temporary SQLite files, the tiny search
space and a small synthetic dataset. Interrupts and crashes are real signals sent to a real
`python -m nas search` process; the store is watched through Optuna while it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import nas
from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.arch.space import SearchSpace
from nas.cli.main import search_main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.errors import UserError
from nas.search.loop import run_search
from nas.search.samplers import constraint_of
from nas.trial_view import is_trained

from helpers import (
    ctrl_c_as_by_default,
    hook_counted_macs,
    running_with_an_epoch,
    wait_for_trials,
)

pytestmark = [
    # the search and its stores use Optuna features it still marks experimental
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.usefixtures("one_thread"),  # conftest.py: one torch thread for the module
]

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "search_spaces" / "tiny.yaml"
STUDY = "t"
BUDGET = 8000  # about half of tiny.yaml's candidates (1,490..33,138 parameters) fit under it
EPOCHS = 2
CPU = Machine(device="cpu")  # the machine every in-process search here trains on
# a quick but complete search: synthetic data, tiny space, no augmentation, the CPU
FAST = [
    "--dataset", "synthetic", "--subset", "48", "--augment", "none", "--device", "cpu",
    "--batch-size", "16", "--space", str(TINY), "--seed", "0",
]  # fmt: skip


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def search(*argv: str) -> tuple[int, str, str]:
    """Run the search command in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = search_main(list(argv))
        except SystemExit as exit_:  # argparse errors exit from parse_args
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with the value after `flag` replaced."""
    index = argv.index(flag)
    return [*argv[: index + 1], value, *argv[index + 2 :]]


def load(path: Path, study: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=url_of(path))


def snapshot(path: Path) -> dict:
    """What a store holds: its studies and, per study, every trial's number, state, value, attrs."""
    storage = optuna.storages.RDBStorage(url_of(path))
    return {
        summary.study_name: [
            (t.number, t.state, t.values, t.user_attrs, t.intermediate_values)
            for t in storage.get_all_trials(summary._study_id)
        ]
        for summary in storage.get_all_studies()
    }


def copy_store(source: Path, target: Path) -> Path:
    """A consistent copy of a (WAL-mode) SQLite store."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


@pytest.fixture(scope="module")
def searched(one_thread, tmp_path_factory):
    """A 3-trained-candidate study written by the command line (default TPE sampler)."""
    folder = tmp_path_factory.mktemp("searched")
    store = folder / "s.db"
    argv = [*FAST, "--budget", str(BUDGET), "--trials", "3", "--epochs", str(EPOCHS)]
    argv += ["--storage", url_of(store), "--study", STUDY]
    status, out, err = search(*argv)
    assert status == 0, err
    return store, argv, out


def proposed(study) -> list:
    """The trials the sampler proposed: all but the claims of confirmation runs."""
    return [t for t in study.trials if "confirms" not in t.user_attrs]


# ---- the budget gate and what a study records -----------------------------------------------


def test_no_trained_trial_is_over_budget_and_rejections_are_pruned_without_values(searched):
    store, _, _ = searched
    trials = load(store).trials
    trained = [t for t in trials if is_trained(t)]
    rejected = [t for t in trials if "over_budget_by" in t.user_attrs]
    assert len(trained) == 3
    assert rejected, "the seed-0 study should have met at least one over-budget candidate"
    for trial in trained:
        assert trial.user_attrs["params"] <= BUDGET
        assert trial.user_attrs["constraint"] <= 0
    for trial in rejected:
        params = trial.user_attrs["params"]
        assert trial.state == TrialState.PRUNED
        assert params > BUDGET
        assert trial.user_attrs["over_budget_by"] == {"params": params - BUDGET}
        assert trial.user_attrs["excess"] == {"params": params - BUDGET}
        assert trial.user_attrs["prune_reason"] == f"over budget: params {params:,} > {BUDGET:,}"
        assert trial.user_attrs["constraint"] == pytest.approx((params - BUDGET) / BUDGET)
        assert trial.intermediate_values == {}
        assert not trial.user_attrs.get("trained")
        # the excess, as a share of the budget, reaches the sampler as Optuna's constraint
        # (set_constraint on Optuna 5, constraints_func's stored result on 4.x)
        assert constraint_of(trial) == pytest.approx((params - BUDGET) / BUDGET)
    # every trial is trained or rejected here (no duplicates in 3 trained of 1,008), but the
    # one claim of the winner's confirmation run (nas.search.confirm)
    claims = [t for t in trials if "confirms" in t.user_attrs]
    assert len(claims) == 1 and claims[0].state == TrialState.FAIL
    assert len(trained) + len(rejected) + len(claims) == len(trials)


def test_trial_params_rebuild_the_recorded_architecture_and_its_count(searched):
    store, _, _ = searched
    study = load(store)
    space = SearchSpace.from_text(study.user_attrs["space_text"])
    for trial in proposed(study):
        arch = Architecture.from_json(trial.user_attrs["architecture"])
        assert space.from_params(trial.params, arch.num_classes) == arch
        assert count_params(arch) == trial.user_attrs["params"]


def test_study_records_what_a_retrain_needs(searched):
    store, _, _ = searched
    study = load(store)
    attrs = study.user_attrs
    assert attrs["budget"] == BUDGET
    assert attrs["space_text"] == TINY.read_text()
    assert attrs["dataset"]["dataset"] == "synthetic"
    assert attrs["dataset"]["subset"] == 48
    assert attrs["recipe"]["epochs"] == EPOCHS
    assert attrs["recipe"]["augment"] == "none"
    assert attrs["tool_version"] == nas.__version__
    assert study.metric_names == ["val_accuracy"]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_trained_trials_record_attrs_and_per_epoch_val_accuracy(searched):
    store, _, _ = searched
    for trial in (t for t in load(store).trials if is_trained(t)):
        attrs = trial.user_attrs
        assert trial.state == TrialState.COMPLETE
        # the built model's own count (its layers' shapes as it runs), at the data's 32 px
        arch = Architecture.from_json(attrs["architecture"])
        assert attrs["macs"] == hook_counted_macs(nas.build_model(arch), 32)
        per_epoch = attrs["seconds_per_epoch"]
        assert math.isfinite(per_epoch) and per_epoch > 0
        assert attrs["device"] == "cpu"
        assert math.isfinite(attrs["best_val_loss"]) and attrs["best_val_loss"] > 0
        assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))
        assert all(0.0 <= v <= 1.0 for v in trial.intermediate_values.values())
        # the objective is the best per-epoch validation accuracy
        assert attrs["best_val_accuracy"] == max(trial.intermediate_values.values())
        assert trial.value == attrs["best_val_accuracy"]


def test_search_prints_trials_top_table_and_next_commands(searched):
    store, _, out = searched
    study = load(store)
    for trial in proposed(study):  # a confirmation's claim proposes no candidate: not listed
        assert f"trial {trial.number:>4}" in out
    assert "rank" in out and "val acc" in out
    assert f"next:   optuna-dashboard {url_of(store)}" in out
    assert f"nas retrain --study {STUDY} --storage {url_of(store)}" in out
    report = store.parent / f"{STUDY}.html"
    assert f"report: {report}" in out
    assert report.read_text().lstrip().lower().startswith("<!doctype html")


# ---- resume, the study-wide target, duplicates ---------------------------------------------


def test_same_command_twice_trains_nothing_new(searched, tmp_path):
    store, argv, _ = searched
    copy = copy_store(store, tmp_path / "s.db")
    before = snapshot(copy)
    status, out, err = search(*with_flag(argv, "--storage", url_of(copy)))
    assert status == 0, err
    assert snapshot(copy) == before  # nothing sampled, nothing trained, nothing changed
    assert "study 't': 3 trained candidates" in out


def test_an_architecture_already_trained_is_not_trained_again(searched, tmp_path):
    store, argv, _ = searched
    copy = copy_store(store, tmp_path / "s.db")
    study = load(copy)
    original = next(t for t in study.trials if is_trained(t))
    first_new = len(study.trials)
    before = snapshot(copy)
    study.enqueue_trial(original.params)
    study.enqueue_trial(original.params)

    argv = with_flag(with_flag(argv, "--storage", url_of(copy)), "--trials", "4")
    status, out, err = search(*argv)
    assert status == 0, err

    trials = load(copy).trials
    duplicates = trials[first_new : first_new + 2]
    for trial in duplicates:
        assert trial.params == original.params
        assert trial.user_attrs["duplicate_of"] == original.number
        assert not is_trained(trial)
        assert trial.state == TrialState.COMPLETE
        assert trial.value == original.value
        assert trial.intermediate_values == {}
        assert f"duplicate of trial {original.number}" in out
    same = [
        t
        for t in trials
        if is_trained(t) and t.user_attrs["architecture"] == original.user_attrs["architecture"]
    ]
    assert [t.number for t in same] == [original.number]
    # --trials counts over the whole study: one more trained candidate, duplicates not counted
    assert sum(is_trained(t) for t in trials) == 4
    assert snapshot(copy)[STUDY][:first_new] == before[STUDY]
    # the final table lists each architecture once, not the original and its duplicates
    table = out[out.index("rank  trial") :].split("\n\n")[0].splitlines()[2:]
    numbers = [int(row.split()[1]) for row in table]
    assert original.number in numbers
    assert not {t.number for t in duplicates} & set(numbers)


# ---- mistakes a user can make ---------------------------------------------------------------


@pytest.mark.parametrize("budget", ["abc", "0", "-5", "5Q"])
def test_bad_budget_is_one_sentence_and_exit_2(budget, tmp_path):
    store = tmp_path / "s.db"
    status, out, err = search(*FAST, "--budget", budget, "--storage", url_of(store))
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert repr(budget) in err and "Traceback" not in err
    assert not store.exists()


@pytest.mark.parametrize("budget, expected", [("5e6", 5_000_000), ("2.5M", 2_500_000)])
def test_budget_spellings_are_accepted(budget, expected):
    from nas.cli.main import build_parser

    assert build_parser().parse_args(["search", "--budget", budget]).budget == expected


def _refused(store: Path, *argv: str) -> str:
    before = snapshot(store)
    status, _, err = search(*argv, "--storage", url_of(store))
    assert status == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert snapshot(store) == before  # nothing stored, nothing lost
    return err


def test_budget_under_the_smallest_architecture_is_refused_before_any_trial(searched, tmp_path):
    store = copy_store(searched[0], tmp_path / "s.db")
    smallest = count_params(SearchSpace.load(TINY).smallest(10))
    err = _refused(store, *FAST, "--budget", str(smallest - 1), "--study", "new", "--epochs", "1")
    assert f"{smallest:,}" in err and f"{smallest - 1:,}" in err
    # the same budget for the existing study is refused too, with the same sentence
    _refused(store, *FAST, "--budget", str(smallest - 1), "--study", STUDY)


def test_missing_space_file_is_refused(searched, tmp_path):
    store = copy_store(searched[0], tmp_path / "s.db")
    missing = tmp_path / "nope.yaml"
    err = _refused(
        store, *with_flag(FAST, "--space", str(missing)), "--budget", str(BUDGET), "--study", STUDY
    )
    assert str(missing) in err


def test_another_budget_for_an_existing_study_is_refused(searched, tmp_path):
    store = copy_store(searched[0], tmp_path / "s.db")
    err = _refused(store, *FAST, "--budget", "9000", "--study", STUDY, "--trials", "5")
    assert f"{BUDGET:,}" in err and "9,000" in err and "--study" in err


@pytest.mark.parametrize(
    "flag, value, recorded",
    [("--epochs", "3", "epochs = 2"), ("--augment", "recipe", "augment = 'none'")],
)
def test_another_recipe_for_an_existing_study_is_refused(searched, tmp_path, flag, value, recorded):
    # trials trained for other epochs or with other augmentation would not be comparable
    store = copy_store(searched[0], tmp_path / "s.db")
    argv = with_flag([*FAST, "--epochs", str(EPOCHS)], flag, value)
    err = _refused(store, *argv, "--budget", str(BUDGET), "--study", STUDY, "--trials", "5")
    assert recorded in err and "--study" in err


def test_another_space_for_an_existing_study_is_refused(searched, tmp_path):
    store = copy_store(searched[0], tmp_path / "s.db")
    other = tmp_path / "other.yaml"
    other.write_text(TINY.read_text().replace("blocks: [1, 2]", "blocks: [1, 3]"))
    err = _refused(
        store,
        *with_flag(FAST, "--space", str(other)),
        "--budget",
        str(BUDGET),
        "--study",
        STUDY,
        "--trials",
        "5",
    )
    assert "--study" in err


def test_a_long_run_of_rejections_ends_with_a_clear_message(tmp_path):
    store = tmp_path / "s.db"
    smallest = count_params(SearchSpace.load(TINY).smallest(10))
    config = SearchConfig(
        budget=smallest,  # only the very smallest candidates fit
        trials=3,
        space=str(TINY),
        study="rejections",
        storage=url_of(store),
        sampler="random",
        max_rejections=5,
    )
    data = DataConfig(dataset="synthetic", subset=16, synthetic_size=40)
    recipe = Recipe(epochs=1, batch_size=16, augment="none")
    with pytest.raises(UserError, match=r"the last 5 candidates were all over the budget"):
        run_search(config, data, recipe, CPU)
    trials = load(store, "rejections").trials
    assert len(trials) < 20
    assert all(not is_trained(t) for t in trials[-5:])
    assert all(t.state == TrialState.PRUNED for t in trials[-5:])


def test_a_trial_stopped_by_the_pruner_counts_as_trained_and_keeps_its_measurements(tmp_path):
    store = tmp_path / "s.db"
    config = SearchConfig(
        budget=BUDGET,
        trials=0,  # create and record the study, train nothing
        space=str(TINY),
        study="pruned",
        storage=url_of(store),
        sampler="random",
        pruner="median",
        confirm=0,  # the added trials' architectures build nothing to confirm
    )
    data = DataConfig(dataset="synthetic", subset=48)
    recipe = Recipe(epochs=2, batch_size=16, augment="none")
    run_search(config, data, recipe, CPU)
    study = load(store, "pruned")
    for index in range(5):  # the median pruner's start-up trials, each perfect from epoch 1
        study.add_trial(
            optuna.trial.create_trial(
                value=1.0,
                intermediate_values={1: 1.0, 2: 1.0},
                user_attrs={"trained": True, "architecture": f"earlier-{index}"},
            )
        )
    run_search(dataclasses.replace(config, trials=6), data, recipe, CPU)

    (trial,) = [t for t in load(store, "pruned").trials[5:] if is_trained(t)]
    attrs = trial.user_attrs
    assert trial.state == TrialState.PRUNED
    assert attrs["prune_reason"] == "stopped by the pruner after epoch 1"
    assert list(trial.intermediate_values) == [1]
    assert attrs["epochs"] == 1
    assert attrs["best_val_accuracy"] == trial.intermediate_values[1]
    assert math.isfinite(attrs["best_val_loss"])
    per_epoch = attrs["seconds_per_epoch"]
    assert math.isfinite(per_epoch) and per_epoch > 0
    assert attrs["device"] == "cpu"


# ---- --smoke -------------------------------------------------------------------------------


def test_smoke_runs_end_to_end_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no search_spaces/ here: the shipped tiny.yaml must be found
    # the smoke settings, trimmed further so the test stays quick
    status, out, err = search(
        "--smoke", "--subset", "48", "--augment", "none", "--epochs", "1", "--trials", "2"
    )
    assert status == 0, err
    assert (tmp_path / "studies" / "nas.db").exists()
    study = load(tmp_path / "studies" / "nas.db", "smoke")
    assert study.user_attrs["space_text"] == TINY.read_text()
    assert study.user_attrs["budget"] == 20_000
    assert sum(is_trained(t) for t in study.trials) == 2
    assert all(t.params and "params" in t.user_attrs for t in proposed(study))
    assert "rank" in out and "val acc" in out
    assert "next:   optuna-dashboard sqlite:///studies/nas.db" in out
    assert "nas retrain --study smoke" in out
    assert (tmp_path / "studies" / "smoke.html").stat().st_size > 1000


# ---- a killed process and Ctrl-C, with real signals ----------------------------------------


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # see one_thread
# seed 0 samples 7,586 then 21,162 parameters (both rejected here), then trains 5,138
SIGNAL_BUDGET = 7000


def _command(store: Path, trials: int) -> list[str]:
    return [
        sys.executable, "-m", "nas", "search", *with_flag(FAST, "--subset", "64"),
        "--budget", str(SIGNAL_BUDGET), "--trials", str(trials), "--epochs", "3",
        "--pruner", "none", "--heartbeat", "1", "--storage", url_of(store), "--study", STUDY,
    ]  # fmt: skip


def mid_trial(trials: list) -> int | None:
    """A trial RUNNING with an epoch reported after some trial finished: its number."""
    if any(t.state.is_finished() for t in trials):
        return running_with_an_epoch(trials)
    return None


def _wait_mid_trial(process: subprocess.Popen, store: Path, timeout: float = 90.0) -> int:
    """Watch the store until a trial is caught mid-training; return that trial's number."""
    return wait_for_trials(process, store, STUDY, mid_trial, timeout)


def _finished(store: Path) -> list:
    return [t for t in snapshot(store)[STUDY] if t[1] in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
def test_killed_search_is_recovered_by_the_same_command(tmp_path):
    store = tmp_path / "s.db"
    command = _command(store, trials=1)
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        killed = _wait_mid_trial(process, store)
        process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        process.kill()
        process.communicate(timeout=30)
    finished = _finished(store)
    assert finished
    study = load(store)
    assert study.trials[killed].state == TrialState.RUNNING  # left behind by the dead process

    # with --heartbeat 1 the trial is stale 3 s after its last beat; the rerun's start-up takes
    # seconds more, so it finds the trial stale at once (sooner, it would wait and poll again)
    time.sleep(max(0.0, 2.0 - (time.monotonic() - killed_at)))
    rerun = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False, env=ENV
    )
    assert rerun.returncode == 0, rerun.stderr
    trials = load(store).trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1
    assert retries[0].params == trials[killed].params
    assert is_trained(retries[0])
    assert sum(is_trained(t) for t in trials) == 1
    assert _finished(store)[: len(finished)] == finished  # nothing finished lost or changed


def test_ctrl_c_in_a_trial_fails_it_and_queues_its_candidate_to_be_retried_first(tmp_path):
    """The rule the Ctrl-C process test below proves end to end, in this process: Ctrl-C
    (KeyboardInterrupt) after a trial's first epoch fails that trial, goes on up, and leaves its
    candidate waiting, marked as the retry of the failed trial."""
    from nas.costs.budgets import Budgets
    from nas.data.loading import load_splits
    from nas.search.loop import train_one
    from nas.search.objective import Objective
    from nas.search.time_budget import Ending

    def ctrl_c() -> bool:
        raise KeyboardInterrupt

    study = optuna.create_study(
        storage=url_of(tmp_path / "c.db"),
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    data = DataConfig(dataset="synthetic", subset=16, synthetic_size=40)
    recipe = Recipe(epochs=3, batch_size=16, augment="none")
    objective = Objective(
        SearchSpace.resolve("tiny"), load_splits(data), recipe, CPU, Budgets(params=10**6),
        should_stop=ctrl_c,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train_one(study, objective, Ending(ctrl_c, None))
    interrupted, waiting = study.trials
    assert interrupted.state == TrialState.FAIL
    assert list(interrupted.intermediate_values) == [1]  # stopped after its first epoch
    assert waiting.state == TrialState.WAITING
    assert waiting.user_attrs["retry_of"] == interrupted.number
    assert waiting.system_attrs["fixed_params"] == interrupted.params


@pytest.mark.slow  # a real process and signal; the rule is proven in-process above
def test_ctrl_c_fails_the_running_trial_keeps_the_rest_and_exits_130(tmp_path):
    store = tmp_path / "s.db"
    command = _command(store, trials=1)
    command[1:4] = [str(REPO / "scripts" / "search.py")]  # the script, not python -m nas search
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        preexec_fn=ctrl_c_as_by_default,  # Ctrl-C reaches it however this suite was started
    )  # fmt: skip
    try:
        running = _wait_mid_trial(process, store)
        process.send_signal(signal.SIGINT)
        finished = [t for t in _finished(store) if t[0] < running]
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "rerun the same command to resume" in err
    assert "Traceback" not in err
    trials = load(store).trials
    assert trials[running].state == TrialState.FAIL
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert finished and _finished(store)[: len(finished)] == finished
    # the interrupted candidate waits to be retried first by the next run
    (waiting,) = [t for t in trials if t.state == TrialState.WAITING]
    assert waiting.user_attrs["retry_of"] == running
    assert waiting.system_attrs["fixed_params"] == trials[running].params


# ---- warm start ------------------------------------------------------------------------------


def _new_study(tmp_path: Path, space: str, **overrides) -> tuple[optuna.Study, list[str]]:
    config = SearchConfig(
        budget=5_000_000,
        trials=0,  # create and record the study, train nothing
        space=space,
        study="warm",
        storage=url_of(tmp_path / "w.db"),
        **overrides,
    )
    notes: list[str] = []
    run_search(config, DataConfig(dataset="synthetic", subset=48), Recipe(), CPU,
               announce=notes.append)  # fmt: skip
    return load(tmp_path / "w.db", "warm"), notes


def test_a_new_study_trains_the_reference_models_its_space_holds_first(tmp_path):
    study, notes = _new_study(tmp_path, "resnet")
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["warm_start"] for t in queued] == [
        "paper-model1",
        "paper-model2",
        "paper-model3",
        "paper-model5",
    ]  # fmt: skip  (best reported accuracy first; model 4 and 6 repeat 1 and 5's shapes)
    trial = study.ask()  # what the search's first trial samples
    assert trial.number == 0
    assert SearchSpace.resolve("resnet").suggest(trial, 10) == nas.PRESETS["paper-model1"]
    assert "warm start: paper-model1, paper-model2" in notes[0]


def test_no_warm_start_and_a_space_without_reference_models_sample_from_the_start(tmp_path):
    plain, notes = _new_study(tmp_path / "a", "resnet", warm_start=False)
    assert plain.get_trials(states=(TrialState.WAITING,)) == [] and notes == []
    tiny, notes = _new_study(tmp_path / "b", str(TINY))
    assert tiny.get_trials(states=(TrialState.WAITING,)) == []
    assert notes == [
        "warm start: the space tiny holds none of the reference study's models within the "
        "budget; starting from sampled candidates"
    ]


# ---- recipe flags ----------------------------------------------------------------------------


def _digit_folder(root: Path) -> Path:
    """A tiny image folder of two hand-drawn digit shapes, 0 (a ring) and 1 (a bar), 12x12."""
    from PIL import Image, ImageDraw

    for split, count in (("train", 24), ("test", 6)):
        for label in ("0", "1"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                image = Image.new("L", (12, 12))
                draw = ImageDraw.Draw(image)
                shift = index % 3
                if label == "0":
                    draw.ellipse((2 + shift, 2, 9 + shift - 1, 10), outline=255, width=2)
                else:
                    draw.line((5 + shift, 1, 5 + shift, 10), fill=255, width=2)
                image.save(folder / f"{index}.png")
    return root


def test_a_search_records_its_augmentation_policy_and_a_resume_must_keep_it(tmp_path):
    data = _digit_folder(tmp_path / "digits")
    store = url_of(tmp_path / "s.db")
    argv = ["--dataset", "imagefolder", "--data-dir", str(data), "--space", str(TINY),
            "--budget", str(BUDGET), "--trials", "1", "--epochs", "1", "--batch-size", "16",
            "--device", "cpu", "--storage", store, "--study", "digits", "--policy", "svhn",
            "--no-flip"]  # fmt: skip
    status, _, err = search(*argv)
    assert status == 0, err
    recipe = optuna.load_study(study_name="digits", storage=store).user_attrs["recipe"]
    assert (recipe["augment"], recipe["policy"], recipe["flip"]) == ("recipe", "svhn", False)
    status, _, err = search(*[a for a in argv if a != "--no-flip"])  # flips on: refused
    assert status == 2 and "flip = False, not True" in err
    changed = argv[: argv.index("--policy")] + ["--policy", "cifar10", "--no-flip"]
    status, _, err = search(*changed)
    assert status == 2 and "policy = 'svhn', not 'cifar10'" in err


@pytest.mark.slow  # a fresh interpreter running a whole search: ~8 s on 2 cores
def test_a_smoke_search_raises_no_deprecation_and_writes_a_plain_log(tmp_path):
    """Optuna's and torch's deprecation notices arrive as FutureWarning/DeprecationWarning: as
    errors here, so a search that leans on a deprecated API fails this test, on every supported
    Optuna. Its output, read from a pipe as a log file would, has no carriage returns."""
    log = tmp_path / "log.txt"
    with log.open("w") as out:
        finished = subprocess.run(
            [
                sys.executable,
                "-W",
                "error::FutureWarning",
                "-W",
                "error::DeprecationWarning",
                "-m",
                "nas",
                "search",
                "--smoke",
                "--subset",
                "48",
                "--epochs",
                "1",
                "--trials",
                "2",
                "--augment",
                "none",
            ],  # fmt: skip
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    text = log.read_text()
    assert finished.returncode == 0, text[-3000:]
    assert "\r" not in text
    assert "Warning" not in text
    assert re.search(r"^trial\s+\d+ .*\[2/2 trained\]$", text, re.M), text
