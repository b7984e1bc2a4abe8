"""The torch-free configuration (nas/config/recipe.py, nas/config/machine.py, nas/config/search.py):
the commands that only read it start without torch or optuna, the choice lists agree with what
uses them, every value a `Recipe` or a `Machine` accepts means something, and what an earlier
release recorded (one dict holding both) is read back apart."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.config.fields import kept_names
from nas.config.machine import DATA_PATHS, PRECISIONS, Machine
from nas.config.recipe import MACHINE_SETTINGS, POLICY_NAMES, Recipe
from nas.data.autoaugment import POLICIES
from nas.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# Runs `nas ARGV...` in this interpreter as `python -m nas` would, then names the heavy
# packages the run imported on stderr's last line.
PROBE = """
import runpy, sys
sys.argv = ["nas", *sys.argv[1:]]
try:
    runpy.run_module("nas", run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    status = exit_.code
else:
    status = 0
loaded = [name for name in ("torch", "optuna") if name in sys.modules]
print(f"status={status} heavy={','.join(loaded) or 'none'}", file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["params", "--preset", "paper-model1"], ["space", "--list"]],
    ids=["help", "params", "space-list"],
)
def test_reading_commands_import_neither_torch_nor_optuna(argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, cwd=ROOT
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last == "status=0 heavy=none", result.stderr
    assert result.stdout.strip()  # the command printed what it was asked for


def test_the_config_modules_import_neither_torch_nor_optuna():
    code = (
        "import sys, nas.config.recipe, nas.config.machine, nas.config.fields; "
        "print(','.join(n for n in ('torch', 'optuna') if n in sys.modules) or 'none')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"


@pytest.mark.slow  # imports torch in a fresh process: seconds on a busy machine
def test_the_probe_sees_torch_when_a_command_loads_it():
    """The check above can fail: `nas export` loads a run with torch (here: none there)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
    argv = ["export", "no-such-run", "--format", "torchscript"]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, cwd=ROOT
    )
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("status=2 heavy=torch"), result.stderr


def test_autoaugment_holds_every_policy_the_settings_accept_in_their_order():
    assert tuple(POLICIES) == POLICY_NAMES == ("cifar10", "svhn", "imagenet")


# ---- recipe values that mean something ---------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.999])
def test_momentum_from_zero_up_to_below_one_is_accepted(momentum):
    assert Recipe(optimizer="sgd", momentum=momentum).momentum == momentum


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"momentum": 1.0}, "momentum must be at least 0 and below 1, got 1.0"),
        ({"momentum": 1.5}, "momentum must be at least 0 and below 1, got 1.5"),
        ({"momentum": -0.1}, "momentum must be at least 0 and below 1, got -0.1"),
        ({"weight_decay": -1e-4}, "weight_decay must be a finite number of 0 or more"),
        ({"weight_decay": math.inf}, "weight_decay must be a finite number of 0 or more"),
        ({"lr": 0.0}, "lr must be a finite number above 0, got 0.0"),
        ({"lr": math.inf}, "lr must be a finite number above 0, got inf"),
        ({"lr": math.nan}, "lr must be a finite number above 0, got nan"),
        ({"lr_factor": 1.0}, "lr_factor must lie between 0 and 1 (both excluded), got 1.0"),
        ({"lr_factor": 0.0}, "lr_factor must lie between 0 and 1 (both excluded), got 0.0"),
        ({"batch_size": 0}, "batch_size must be a whole number of at least 1, got 0"),
        ({"batch_size": 32.5}, "batch_size must be a whole number of at least 1, got 32.5"),
        ({"epochs": -1}, "epochs must be a whole number of at least 0, got -1"),
        ({"lr_patience": -1}, "lr_patience must be a whole number of at least 0, got -1"),
        ({"seed": -1}, "seed must be a whole number of at least 0, got -1"),
        ({"lr": "fast"}, "lr must be a finite number above 0, got 'fast'"),
        ({"optimizer": "lion"}, "optimizer must be one of adam, adamw, sgd, got 'lion'"),
        ({"flip": "no"}, "flip must be true or false, got 'no'"),
    ],
)
def test_a_recipe_value_that_cannot_mean_anything_is_one_sentence(settings, fragment):
    with pytest.raises(UserError) as raised:
        Recipe(**settings)
    message = str(raised.value)
    assert fragment in message
    assert "\n" not in message and message.count(". ") == 0


@pytest.mark.parametrize(
    "settings",
    [{"momentum": 0.0}, {"weight_decay": 0.0}, {"lr_factor": 0.999}, {"epochs": 0}, {"lr": 10}],
)
def test_recipe_values_on_the_accepted_side_of_each_bound(settings):
    config = Recipe(**settings)
    assert config.to_dict().items() >= settings.items()


# ---- machine values that mean something --------------------------------------------------------


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"eval_batch_size": 0}, "eval_batch_size must be a whole number of at least 1, got 0"),
        ({"chunk_size": 0}, "chunk_size must be a whole number of at least 1, got 0"),
        ({"chunk_size": 8192.0}, "chunk_size must be a whole number of at least 1, got 8192.0"),
        ({"workers": -1}, "workers must be a whole number of at least 0, got -1"),
        ({"workers": True}, "workers must be a whole number of at least 0, got True"),
        ({"compile": "yes"}, "compile must be true or false, got 'yes'"),
        ({"precision": "fp8"}, "precision must be one of auto, bf16, fp16, fp32, got 'fp8'"),
        ({"data_path": "disk"}, "data_path must be one of auto, device, loader, got 'disk'"),
        ({"channels_last": "yes"}, "channels_last must be true, false or null, got 'yes'"),
        ({"device": ""}, "device must be one of auto, cpu, cuda or cuda:N, got ''"),
        ({"device": None}, "device must be one of auto, cpu, cuda or cuda:N, got None"),
    ],
)
def test_a_machine_value_that_cannot_mean_anything_is_one_sentence(settings, fragment):
    with pytest.raises(UserError) as raised:
        Machine(**settings)
    message = str(raised.value)
    assert fragment in message
    assert "\n" not in message and message.count(". ") == 0


@pytest.mark.parametrize(
    "settings",
    [
        {"workers": 0}, {"workers": None}, {"eval_batch_size": 1}, {"chunk_size": 1},
        {"channels_last": None}, {"channels_last": False}, {"device": "cuda:3"},
        *({"precision": precision} for precision in PRECISIONS),
        *({"data_path": path} for path in DATA_PATHS),
    ],
)  # fmt: skip
def test_machine_values_on_the_accepted_side_of_each_bound(settings):
    assert Machine(**settings).to_dict().items() >= settings.items()


def test_the_recipe_and_the_machine_share_no_setting_and_the_recipe_drops_every_machine_one():
    recipe = {field.name for field in dataclasses.fields(Recipe)}
    machine = {field.name for field in dataclasses.fields(Machine)}
    assert not recipe & machine
    # what Recipe.from_dict leaves to the machine: each of its settings, and `amp`
    assert set(MACHINE_SETTINGS) == machine | {"amp"}
    assert kept_names(Machine) == ()  # another machine may resume any run


def test_search_refuses_momentum_one_and_a_half_in_one_sentence(tmp_path):
    store = tmp_path / "never.db"
    result = subprocess.run(
        [sys.executable, "-m", "nas", "search", "--momentum", "1.5", "--smoke",
         "--storage", f"sqlite:///{store}"],
        capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: momentum must be at least 0 and below 1, got 1.5 (SGD's momentum; 0.9 is usual)"
    ]
    assert not store.exists()


# ---- precision: a device setting, and what older stores wrote as `amp` ------------------------


def test_precision_is_a_device_setting_a_resume_may_change():
    assert Machine.precision == "auto"
    assert PRECISIONS == ("auto", "bf16", "fp16", "fp32")
    assert "precision" not in kept_names(Recipe) and "precision" not in kept_names(Machine)
    recipe = {field.name for field in dataclasses.fields(Recipe)}
    machine = {field.name for field in dataclasses.fields(Machine)}
    assert "precision" not in recipe and "precision" in machine
    assert "amp" not in recipe | machine


# a recipe as nas 0.1.0 stored it on a study and in a run's metrics.json, before `precision`
OLDER_RECIPE = {
    "epochs": 40, "batch_size": 64, "optimizer": "adam", "lr": 0.001, "momentum": 0.9,
    "weight_decay": 0.0, "lr_factor": 0.1, "lr_patience": 10, "augment": "recipe",
    "policy": "cifar10", "flip": True, "seed": 0, "device": "auto", "workers": None,
    "amp": True, "channels_last": None, "data_path": "auto", "eval_batch_size": 1000,
    "compile": False,
}  # fmt: skip


@pytest.mark.parametrize("amp, precision", [(True, "auto"), (False, "fp32")])
def test_an_older_recipe_with_amp_still_loads(amp, precision):
    recipe = Recipe.from_dict({**OLDER_RECIPE, "amp": amp})
    machine = Machine.from_dict({**OLDER_RECIPE, "amp": amp})
    assert machine.precision == precision
    assert (recipe.epochs, recipe.lr, machine.device) == (40, 0.001, "auto")
    assert "amp" not in recipe.to_dict() and "amp" not in machine.to_dict()


# ---- what the release before the packages recorded: one dict for recipe and machine ----------

# the "config" of tests/fixtures/before-packages/run-finished/metrics.json, as that release wrote
# it (the checkpoint's "config" and a study's recipe record held the same dict)
OLD_RELEASE_CONFIG = {
    "epochs": 2, "batch_size": 32, "optimizer": "adam", "lr": 0.001, "momentum": 0.9,
    "weight_decay": 0.0, "lr_factor": 0.1, "lr_patience": 10, "augment": "recipe",
    "policy": "cifar10", "flip": True, "seed": 0, "device": "auto", "workers": None,
    "precision": "auto", "channels_last": None, "data_path": "auto", "eval_batch_size": 1000,
    "chunk_size": 8192, "compile": False,
}  # fmt: skip


def test_the_literal_is_the_fixtures_own_record():
    metrics = ROOT / "tests" / "fixtures" / "before-packages" / "run-finished" / "metrics.json"
    assert json.loads(metrics.read_text())["config"] == OLD_RELEASE_CONFIG


def test_a_recipe_reads_an_earlier_releases_record_and_leaves_the_machine_settings():
    recipe = Recipe.from_dict(OLD_RELEASE_CONFIG)
    assert recipe == Recipe(epochs=2, batch_size=32)
    assert set(recipe.to_dict()) == {field.name for field in dataclasses.fields(Recipe)}


def test_a_machine_reads_an_earlier_releases_record_and_ignores_the_recipe_settings():
    assert Machine.from_dict(OLD_RELEASE_CONFIG) == Machine()
    changed = {**OLD_RELEASE_CONFIG, "device": "cuda:1", "workers": 3, "compile": True}
    assert Machine.from_dict(changed) == Machine(device="cuda:1", workers=3, compile=True)
    assert Recipe.from_dict(changed) == Recipe(epochs=2, batch_size=32)  # the same recipe


def test_the_two_read_apart_are_the_record_they_came_from():
    """metrics.json and the checkpoint still hold one merged dict: splitting it and merging
    it back loses and adds nothing."""
    recipe, machine = Recipe.from_dict(OLD_RELEASE_CONFIG), Machine.from_dict(OLD_RELEASE_CONFIG)
    assert {**recipe.to_dict(), **machine.to_dict()} == OLD_RELEASE_CONFIG
    merged = {**recipe.to_dict(), **machine.to_dict()}
    assert (Recipe.from_dict(merged), Machine.from_dict(merged)) == (recipe, machine)


def test_an_unknown_name_in_an_old_record_is_refused_in_one_sentence():
    with pytest.raises(UserError) as raised:
        Recipe.from_dict({**OLD_RELEASE_CONFIG, "colour": 1})
    assert str(raised.value) == "unknown training setting(s): colour"
    with pytest.raises(UserError) as raised:
        Machine.from_dict({**OLD_RELEASE_CONFIG, "colour": 1})
    assert str(raised.value) == "unknown machine setting(s): colour"


def test_a_machine_value_in_an_old_record_is_checked():
    with pytest.raises(UserError, match="precision must be one of auto, bf16, fp16, fp32"):
        Machine.from_dict({**OLD_RELEASE_CONFIG, "precision": "fp8"})
    with pytest.raises(UserError, match="chunk_size must be a whole number of at least 1"):
        Machine.from_dict({**OLD_RELEASE_CONFIG, "chunk_size": 0})
    # the recipe leaves them to the machine: not its values to check
    assert Recipe.from_dict({**OLD_RELEASE_CONFIG, "chunk_size": 0}) == Recipe(
        epochs=2, batch_size=32
    )


def test_the_search_and_retrain_flags_set_precision_and_the_study_keeps_it_out(tmp_path):
    from nas import records
    from nas.cli.main import build_parser
    from nas.cli.search_settings import search_settings
    from nas.search.loop import run_search

    parser = build_parser()
    assert parser.parse_args(["retrain", "--precision", "fp16"]).precision == "fp16"
    args = parser.parse_args(
        ["search", "--smoke", "--precision", "fp32", "--storage", f"sqlite:///{tmp_path}/s.db"]
    )
    config, data, recipe, machine = search_settings(args)
    assert machine.precision == "fp32"
    study = run_search(dataclasses.replace(config, trials=0), data, recipe, machine)
    # the study records the recipe alone: another machine may resume it in another precision
    assert study.user_attrs[records.RECIPE] == recipe.to_dict()
    assert "precision" not in study.user_attrs[records.RECIPE]


def test_precision_help_names_the_choices_and_what_auto_means(capsys):
    from nas.cli.main import main

    for command in ("search", "retrain"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--precision {auto,bf16,fp16,fp32}" in text
        assert (
            "auto: bf16 at compute capability 8.0 or more, fp16 with a gradient scaler below"
            in text
        )
        assert "fp32 on the CPU" in text
