"""The records contract: one classification of every kind of trial the search writes, and the
search summary, the report and the retrain all reading it the same way."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.cli.summary import print_summary
from nas.config.search import SearchConfig
from nas.report import figures as report_figures
from nas.report import page as report
from nas.search.choice import choose_from_study
from nas.search.progress import outcome_of, trial_counts
from nas.trial_view import TrialKind

BUDGET = 50_000
DISTRIBUTIONS = {"width": IntDistribution(8, 64)}


def _arch(width: int) -> dict:
    arch = Architecture(channels=(width, width), blocks=(1, 1), stem=8)
    return {records.ARCHITECTURE: arch.to_json(), records.PARAMS: 1000 * width}


def _trained_attrs(width: int, accuracy: float) -> dict:
    return {
        **_arch(width),
        records.CONSTRAINT: 1000 * width - BUDGET,
        records.DEVICE: "cpu",
        records.TRAINED: True,
        records.EPOCHS: 2,
        records.BEST_VAL_LOSS: 1.0,
        records.BEST_VAL_ACCURACY: accuracy,
        records.SECONDS_PER_EPOCH: 2.0,
    }


# every kind the search writes, exactly as nas.search.objective and the search loop write it
WRITTEN = {
    "trained": dict(
        state=TrialState.COMPLETE,
        value=0.60,
        user_attrs=_trained_attrs(16, 0.60),
        intermediate_values={1: 0.5, 2: 0.6},
    ),
    "trained-better": dict(
        state=TrialState.COMPLETE,
        value=0.70,
        user_attrs=_trained_attrs(24, 0.70),
        intermediate_values={1: 0.6, 2: 0.7},
    ),
    "stopped by the pruner": dict(
        state=TrialState.PRUNED,
        user_attrs={
            **_trained_attrs(32, 0.80),
            records.EPOCHS: 1,
            records.PRUNE_REASON: "stopped by the pruner after epoch 1",
        },
        intermediate_values={1: 0.8},
    ),
    "duplicate": dict(
        state=TrialState.COMPLETE,
        value=0.70,
        user_attrs={**_arch(24), records.DUPLICATE_OF: 1, records.BEST_VAL_ACCURACY: 0.70},
    ),
    "rejected": dict(
        state=TrialState.PRUNED,
        user_attrs={
            **_arch(60),
            records.OVER_BUDGET_BY: 10_000,
            records.PRUNE_REASON: "over budget",
        },
    ),
    "not needed": dict(
        state=TrialState.PRUNED,
        user_attrs={
            **_arch(40),
            records.NOT_NEEDED: True,
            records.PRUNE_REASON: "not needed: other workers' trials fill the target",
        },
    ),
    # a non-finite loss in epoch 2, after an epoch 1 whose accuracy beats every trained trial
    "non-finite after one epoch": dict(
        state=TrialState.PRUNED,
        user_attrs={
            **_arch(48),
            records.DEVICE: "cpu",
            records.PRUNE_REASON: "non-finite loss: the training loss became nan in epoch 2",
        },
        intermediate_values={1: 0.99},
    ),
    "stopped by SIGTERM": dict(
        state=TrialState.FAIL,
        user_attrs={**_arch(20), records.STOPPED_AFTER_EPOCH: 1},
        intermediate_values={1: 0.95},
    ),
    "a confirmation's claim, its run training": dict(  # neither trained nor running
        state=TrialState.RUNNING, user_attrs={records.CONFIRMS: 0, records.CLAIM_TOKEN: "x"}
    ),
}
EXPECTED = {
    "trained": TrialKind.TRAINED,
    "trained-better": TrialKind.TRAINED,
    "stopped by the pruner": TrialKind.STOPPED,
    "duplicate": TrialKind.DUPLICATE,
    "rejected": TrialKind.REJECTED,
    "not needed": TrialKind.NOT_NEEDED,
    "non-finite after one epoch": TrialKind.FAILED,
    "stopped by SIGTERM": TrialKind.FAILED,
    "a confirmation's claim, its run training": TrialKind.CONFIRMATION,
    "running": TrialKind.RUNNING,
    "waiting": TrialKind.WAITING,
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> optuna.Study:
    url = f"sqlite:///{tmp_path_factory.mktemp('records')}/s.db"
    study = optuna.create_study(study_name="kinds", storage=url, direction="maximize")
    study.set_user_attr(records.BUDGET, BUDGET)
    for written in WRITTEN.values():
        if records.ARCHITECTURE not in written["user_attrs"]:  # a claim proposes no candidate
            study.add_trial(create_trial(**written))
            continue
        width = Architecture.from_json(written["user_attrs"][records.ARCHITECTURE]).channels[0]
        study.add_trial(
            create_trial(params={"width": width}, distributions=DISTRIBUTIONS, **written)
        )
    running = study.ask()  # a trial another worker is training right now
    running.set_user_attr(records.ARCHITECTURE, Architecture((8, 8), (1, 1)).to_json())
    study.enqueue_trial({"width": 8})  # a stopped trial's retry, queued for the next run
    return study


def test_every_kind_the_search_writes_is_classified_once(study):
    kinds = [trial_view.classify(t) for t in study.trials]
    assert kinds == list(EXPECTED.values())
    assert set(kinds) == set(TrialKind)  # the fixture covers every kind


def test_the_search_counts_and_reports_each_trial_as_classified(study, capsys):
    assert trial_counts(study) == (3, 1)  # trained + stopped by the pruner; one running
    finished = [t for t in study.trials if t.state.is_finished()]
    assert [outcome_of(t).kind for t in finished] == [trial_view.classify(t) for t in finished]
    broke = outcome_of(study.trials[6])
    assert broke.val_accuracy is None  # never shown as a trained accuracy
    config = SearchConfig(budget=BUDGET, study="kinds", storage="sqlite:///unused.db")
    print_summary(study, config, Path("r.html"))
    out = capsys.readouterr().out
    table = out[: out.index("\nstudy")]
    assert sorted(int(n) for n in re.findall(r"^\s+\d+\s+(\d+)\s", table, re.M)) == [0, 1, 2]
    assert "study 'kinds': 3 trained candidates" in out
    counted = Counter(trial_view.classify(t) for t in study.trials)
    for kind, count in counted.items():
        assert f"{count} {kind.name.lower().replace('_', ' ')}" in out


def test_the_report_shows_and_counts_each_trial_as_classified(study, tmp_path):
    text = report.write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    header = text[text.index("<table class='summary'>") :]
    header = dict(
        re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", header[: header.index("</table>")])
    )
    counted = Counter(trial_view.classify(t) for t in study.trials)
    for kind in TrialKind:
        assert header[kind.value] == str(counted[kind]), kind
    assert header["trained"] == "3"
    trained = {0, 1, 2}
    assert {t.number for t in report.top_trials(study.get_trials(), 20)} == trained
    figure = report_figures.build_figures(study)["params_vs_accuracy"]
    points = next(trace for trace in figure.data if trace.name == report_figures.TRAINED_TRACE)
    assert sorted(points.x) == sorted(study.trials[n].user_attrs[records.PARAMS] for n in trained)
    assert max(points.y) == pytest.approx(0.80)  # the 0.99 and 0.95 of broken trials are absent


def test_the_retrain_picks_the_best_trial_trained_to_the_end(study):
    choice = choose_from_study(study)
    assert choice.trial.number == 1  # not the stopped (0.80), broken (0.99) or failed (0.95)
    assert trial_view.classify(choice.trial) == TrialKind.TRAINED


# ---- the records on the study, typed: the stored JSON keys are the old ones --------------------

# as the release before the packages stored them (tests/fixtures/before-packages/study.sql)
OLD_CONFIRMATION = {
    "seed": 1,
    "val_accuracy": 0.35,
    "first_val_accuracy": 0.49,
    "mean_val_accuracy": 0.42,
    "epochs": 2,
    "seconds": 0.905178181999986,
}
OLD_RETRAIN = {
    "test_accuracy": 0.535,
    "test_loss": 1.9002642822265625,
    "run_dir": "runs/smoke/trial-4",
    "epochs": 2,
    "artifacts": True,
}


def test_a_confirmation_record_round_trips_to_the_old_keys():
    record = records.Confirmation.from_dict(OLD_CONFIRMATION)
    assert (record.seed, record.val_accuracy, record.first_val_accuracy) == (1, 0.35, 0.49)
    assert (record.mean_val_accuracy, record.epochs, record.seconds) == (0.42, 2, 0.905178181999986)
    assert record.note == ""
    assert record.to_dict() == OLD_CONFIRMATION
    assert list(record.to_dict()) == list(OLD_CONFIRMATION)


def test_a_confirmation_stores_its_note_only_when_there_is_one():
    diverged = records.Confirmation(
        seed=8, val_accuracy=0.0, first_val_accuracy=0.5, mean_val_accuracy=0.25, epochs=3,
        seconds=1.5, note="non-finite loss: nan",
    )  # fmt: skip
    assert diverged.to_dict() == {
        "seed": 8,
        "val_accuracy": 0.0,
        "first_val_accuracy": 0.5,
        "mean_val_accuracy": 0.25,
        "epochs": 3,
        "seconds": 1.5,
        "note": "non-finite loss: nan",
    }
    assert records.Confirmation.from_dict(diverged.to_dict()) == diverged


def test_a_retrain_record_round_trips_to_the_old_keys():
    record = records.Retrained.from_dict(OLD_RETRAIN)
    assert record == records.Retrained(
        test_accuracy=0.535, run_dir="runs/smoke/trial-4", test_loss=1.9002642822265625,
        epochs=2, artifacts=True,
    )  # fmt: skip
    assert record.to_dict() == OLD_RETRAIN
    assert list(record.to_dict()) == list(OLD_RETRAIN)


def test_a_retrain_is_read_from_the_study_or_from_a_trial_of_the_earlier_version():
    on_study = create_trial(value=0.5, user_attrs={})
    on_study.number = 4
    assert records.retrain_record({"retrain_trial_4": OLD_RETRAIN}, on_study) == (
        records.Retrained(0.535, "runs/smoke/trial-4", 1.9002642822265625, 2, True)
    )
    on_trial = create_trial(value=0.5, user_attrs={"test_accuracy": 0.7, "run_dir": "runs/x"})
    assert records.retrain_record({}, on_trial) == records.Retrained(0.7, "runs/x")
    assert records.retrain_record({}, create_trial(value=0.5)) is None


def test_a_time_account_round_trips_to_the_stored_keys():
    stored = {
        "started": "2025-01-02T03:04:05+00:00",
        "limit": 20.0,
        "used": 19.5,
        "stopped_by_limit": True,
        "spent": {"trained": 12.0, "confirmation": 3.0},
        "counts": {"trained": 3, "confirmation": 1},
    }
    account = records.TimeAccount.from_dict(stored)
    assert (account.started, account.limit, account.used) == ("2025-01-02T03:04:05+00:00", 20, 19.5)
    assert account.stopped_by_limit is True
    assert account.spent == {"trained": 12.0, "confirmation": 3.0}
    assert account.counts == {"trained": 3, "confirmation": 1}
    assert account.to_dict() == stored and list(account.to_dict()) == list(stored)


@pytest.mark.parametrize(
    "cls, stored",
    [
        (records.Confirmation, {**OLD_CONFIRMATION, "mean": 0.4}),
        (records.Retrained, {**OLD_RETRAIN, "test_acc": 0.5}),
    ],
)
def test_a_record_with_a_key_no_version_writes_is_refused(cls, stored):
    with pytest.raises(ValueError, match="unknown"):
        cls.from_dict(stored)


def test_the_keys_of_the_records_inside_study_attributes_are_the_old_ones():
    # spelled by hand: what studies already in stores hold
    assert (records.WORKER_HOST, records.WORKER_PID) == ("host", "pid")
    assert (records.OBJECTIVE_KIND, records.OBJECTIVE_MINIMIZE) == ("objective", "minimize")
    assert (records.SEARCH_SAMPLER, records.SEARCH_PRUNER, records.SEARCH_SEED) == (
        "sampler",
        "pruner",
        "seed",
    )
    assert (records.TRIAL_TEST_ACCURACY, records.TRIAL_RUN_DIR) == ("test_accuracy", "run_dir")
    assert (records.confirm_key(4), records.retrain_key(4)) == (
        "confirm_trial_4",
        "retrain_trial_4",
    )
