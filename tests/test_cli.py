"""The one command line, `nas {search,retrain,report,params,space}`: help a user reads, built-in
spaces by name from any folder, read-only commands that never create a store. The commands run
in this process (`helpers.run_in_process`, in a temporary working folder): that `python -m nas`
exits with the same statuses in a real process is test_faults.py's; that inference imports no
search is test_export.py's."""

from __future__ import annotations

import re
import runpy
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from nas.arch.space import SearchSpace, builtin_spaces
from nas.cli.main import build_parser, main
from nas.config.data import DataConfig

from helpers import run_in_process

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def nas_process(*argv: str, cwd: Path) -> Ran:
    """`nas ARGV` run from the folder `cwd`, in this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        return Ran(*run_in_process(main, list(argv)))


def one_sentence(result: Ran) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("command", ["search", "retrain", "report", "params", "space"])
def test_every_command_has_help_written_for_a_user(command, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert text.startswith(f"usage: nas {command}")
    assert "(default: None)" not in text
    for flag_help in re.split(r"\s--", text):
        assert flag_help.count("(default") <= 1, flag_help


def test_the_top_level_help_lists_the_commands_not_the_module_docstring():
    result = nas_process("--help", cwd=ROOT)
    assert result.returncode == 0
    assert "Owns" not in result.stdout
    for command in ("search", "retrain", "report", "params", "space"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command


def test_defaults_are_the_config_dataclasses_own():
    from nas.cli.search_settings import search_settings
    from nas.config.machine import Machine
    from nas.config.recipe import Recipe
    from nas.config.search import SEARCH_EPOCHS, SearchConfig

    config, data, recipe, machine = search_settings(build_parser().parse_args(["search"]))
    assert recipe == Recipe(epochs=SEARCH_EPOCHS)  # the reference recipe, 40 epochs
    assert machine == Machine()
    assert (config.sampler, config.pruner, config.budget, config.space) == (
        SearchConfig.sampler,
        SearchConfig.pruner,
        SearchConfig.budget,
        SearchConfig.space,
    )
    assert data == DataConfig()
    assert build_parser().parse_args(["retrain"]).epochs == Recipe.epochs == 150


def test_smoke_settings_leave_the_parsed_flags_as_they_were():
    from nas.cli.search_settings import search_settings

    args = build_parser().parse_args(["search", "--smoke", "--storage", "sqlite:///x.db"])
    before = dict(vars(args))
    config, data, recipe, machine = search_settings(args)
    assert (data.dataset, config.space, config.trials, recipe.epochs) == ("synthetic", "tiny", 4, 2)
    assert machine.device == "cpu"  # --smoke's own device
    assert vars(args) == before  # nothing written back into the namespace (dataset stays None)
    assert args.dataset is None


def test_the_scripts_are_the_same_commands(monkeypatch, capsys):
    for script, command in (("search.py", "search"), ("retrain_best.py", "retrain")):
        monkeypatch.setattr(sys, "argv", [script, "--help"])
        with pytest.raises(SystemExit) as exited:  # the script's own `sys.exit(main())`
            runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: nas {command}")


def test_space_list_names_the_built_in_spaces(capsys):
    assert main(["space", "--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^resnet\s+13,063,680\s+386,858\s+56,025,578\s+32-px", out, re.M), out
    assert re.search(r"^tiny\s+1,008\s+1,490\s+33,138\s+CPU smoke", out, re.M), out


def test_built_in_spaces_are_found_by_name_from_any_folder(tmp_path):
    result = nas_process("space", "tiny", "--budget", "20k", "--samples", "500", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "distinct architectures: 1,008" in result.stdout
    assert "the built-in space 'tiny'" in result.stdout


def test_the_repository_s_space_files_are_the_package_s():
    for name, text in builtin_spaces().items():
        assert (ROOT / "search_spaces" / f"{name}.yaml").read_text() == text
        shipped = SearchSpace.resolve(name)
        in_repository = SearchSpace.load(ROOT / "search_spaces" / f"{name}.yaml")
        assert replace(shipped, source="") == replace(in_repository, source="")


def test_an_unknown_space_name_says_which_exist(tmp_path):
    err = one_sentence(nas_process("space", "resnt", cwd=tmp_path))
    assert "no built-in search space named 'resnt'" in err and "resnet, tiny" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--storage", "sqlite:///typo.db"],
        ["report", "--storage", "sqlite:///studies/typo.db", "--study", "x"],
        ["retrain", "--storage", "sqlite:///typo.db"],
    ],
)
def test_read_only_commands_never_create_a_store(argv, tmp_path):
    err = one_sentence(nas_process(*argv, cwd=tmp_path))
    assert "there is no study store at" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["search", "--seed", "-1"], "'-1' must be 0 or more"),
        (["search", "--study", "s" * 5000], "use at most 200"),
        (["search", "--storage", "nonsense"], "is not a storage URL"),
        (["search", "--storage", "postgresql+nodriver://u:pw@localhost/db"], "driver"),
        (["search", "--stor", "sqlite:///x.db"], "unrecognized arguments"),
    ],
)
def test_more_bad_input_is_one_sentence(argv, fragment, tmp_path):
    err = one_sentence(nas_process(*argv, cwd=tmp_path))
    assert fragment in err
    assert "pw@" not in err
    assert list(tmp_path.iterdir()) == []
