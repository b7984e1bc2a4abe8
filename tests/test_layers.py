"""The layers of `nas/`, as rules read from the tree rather than a table of module names.

The layers, lowest first (`LAYERS`): the foundations (the top-level modules `errors`, `files`,
`records`, `trial_view`, `commands`, `version`, `process` and the packages `config` and `store`),
then the packages `arch`, `data`, `train`, `costs`, `search`, `report`, `run`, `api` and `cli`.
`nas/__init__.py` holds the public names and `nas/__main__.py` runs the command line. The checks:

(a) every module of `nas/` belongs to a known layer: a new top-level module or package that the
    order does not name fails, saying where to add it (and every name the order holds exists);
(b) a module imports only from its own package and the layers below; within the foundations in
    any order (but no cycle, (d)); `nas.config` imports only `nas.errors` and itself; no module
    imports `nas` itself (the public names) but `nas/__main__.py`;
(c) nothing imports `nas.cli` but `nas/__main__.py` and the command line itself;
    `nas/__init__.py` may import any package but `nas.cli`;
(d) `nas/` has no import cycle among its modules;
(e) each package's `__init__.py` is a docstring only (saying what the package owns and what it
    may import), and every package folder has one;
(f) `nas/` holds at most `MAX_TOP_LEVEL` modules at its top level besides its packages (its
    `__init__` and `__main__` counted), no module over `MAX_MODULE_LINES` lines and no function
    over `MAX_FUNCTION_LINES` lines (its `def` line to its last, docstring included).

Imports are read with `ast`, so every import counts: at the top of a module, inside a function
(a lazy import is still a dependency) and under `if TYPE_CHECKING:` (a type-only cycle says a
definition lives in the wrong module). `from nas.pkg import name` counts as importing the module
`nas.pkg.name` when there is one, else `nas.pkg` (its `__init__`); `from nas import name` counts
as importing `nas` itself unless `name` is a module. Relative imports are resolved the same way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nas"

# The foundations: modules every layer may use, in any order among themselves.
FOUNDATIONS = frozenset(
    {"errors", "files", "records", "trial_view", "commands", "version", "process"}
    | {"config", "store"}
)
# Lowest first; a package may import from itself and the layers before it.
LAYERS = (
    "foundations", "arch", "data", "train", "costs", "search", "report", "run", "api", "cli"
)  # fmt: skip
CONFIG_MAY_IMPORT = frozenset({"config", "errors"})  # config is read by every parser: no torch
FACES = ("__init__", "__main__")  # the public names; `python -m nas`
COMMAND_LINE = "cli"

MAX_TOP_LEVEL = 12
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


# ---- reading the tree ------------------------------------------------------------------------


def module_files(package: Path) -> dict[str, Path]:
    """Every Python module under `package` by its dotted name (`nas`, `nas.arch`,
    `nas.arch.space`, `nas.__main__`), a package named by its `__init__.py`."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join((package.name, *parts))] = path
    return files


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `name` (the file at `path`) imports, wherever the import
    statement is; `from A import B` counts as `A.B` when that is a module, else `A`."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..x import y
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules} - {name}


def import_graph(package: Path) -> dict[str, set[str]]:
    files = module_files(package)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def unit(module: str) -> str:
    """What a module belongs to: its top-level module or package under `nas/`, or `__init__`
    for the package itself (`nas` -> `__init__`, `nas.errors` -> `errors`, `nas.cli.main` ->
    `cli`, `nas.__main__` -> `__main__`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(name: str, foundations=FOUNDATIONS, layers=LAYERS) -> str | None:
    if name in foundations:
        return layers[0]
    return name if name in layers[1:] else None


# ---- the rules ---------------------------------------------------------------------------


def unplaced(package: Path, foundations=FOUNDATIONS, layers=LAYERS) -> list[str]:
    """(a): the top-level modules and packages of `package` in no layer, and the names of the
    order that `package` does not hold."""
    problems = []
    present = set()
    for name in sorted(module_files(package)):
        what = unit(name)
        present.add(what)
        if what in FACES or layer_of(what, foundations, layers):
            continue
        if (package / what).is_dir():
            problems.append(
                f"nas/{what}/ is a package in no layer: add it to LAYERS in tests/test_layers.py "
                "(and to ARCHITECTURE.md's map) above every package it imports and below every "
                "package that imports it"
            )
        else:
            problems.append(
                f"nas/{what}.py is a top-level module in no layer: move it into the package that "
                "owns its concept, or, if it is a foundation (torch-free, importing only other "
                "foundations), add it to FOUNDATIONS in tests/test_layers.py"
            )
    missing = sorted(({*foundations} | {*layers[1:]}) - present)
    problems.extend(
        f"{what} is in the layer order of tests/test_layers.py but nas/ has no {what}: remove it"
        for what in missing
    )
    return sorted(set(problems))


def forbidden_imports(
    graph: dict[str, set[str]], foundations=FOUNDATIONS, layers=LAYERS
) -> list[str]:
    """(b): imports of a higher layer, imports of `nas` itself, and `nas.config`'s imports of
    anything but `nas.errors`. Imports of the command line are (c)'s; unplaced modules (a)'s."""
    problems = []
    for importer, targets in sorted(graph.items()):
        here = unit(importer)
        for target in sorted(targets):
            there = unit(target)
            if here == "__main__" or there == COMMAND_LINE or here == there:
                continue
            if there == "__init__":
                problems.append(
                    f"{importer} imports nas itself (the public names, which import much of "
                    "nas): import the name from the module that defines it"
                )
            elif here == "__init__":
                continue  # the public names may come from any package but the command line
            elif here == "config" and there not in CONFIG_MAY_IMPORT:
                problems.append(
                    f"{importer} imports {target}: nas.config imports only nas.errors and "
                    "itself, so every parser is built without loading the rest"
                )
            elif (low := layer_of(here, foundations, layers)) and (
                high := layer_of(there, foundations, layers)
            ):
                if layers.index(high) > layers.index(low):
                    problems.append(
                        f"{importer} ({low}) imports {target} ({high}), a higher layer: move "
                        "the definition it needs down, or the importer up"
                    )
    return problems


def command_line_importers(graph: dict[str, set[str]]) -> list[str]:
    """(c): modules outside the command line (and `nas/__main__.py`) that import it."""
    return [
        f"{importer} imports {target}: only nas/__main__.py and nas.cli itself import the "
        "command line; move what it needs out of nas.cli, down to the layer that owns it"
        for importer, targets in sorted(graph.items())
        if unit(importer) not in {COMMAND_LINE, "__main__"}
        for target in sorted(targets)
        if unit(target) == COMMAND_LINE
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """(d): one import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def faces_that_define(package: Path) -> list[str]:
    """(e): package folders under `package` whose `__init__.py` is missing or holds more than
    a docstring (the top-level `__init__.py`, the public names, excepted)."""
    problems = []
    for folder in sorted({path.parent for path in package.rglob("*.py")} - {package}):
        face = folder / "__init__.py"
        where = face.relative_to(package.parent).as_posix()
        if not face.is_file():
            problems.append(
                f"{where} is missing: add one whose docstring says what the package "
                "owns and what it may import"
            )
            continue
        body = ast.parse(face.read_text(), filename=str(face)).body
        docstring = (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        )
        if not docstring or len(body) > 1:
            problems.append(
                f"{where} must be a docstring only (what the package owns and may import): "
                "move what it defines or re-exports into a module, and import it from there"
            )
    return problems


def oversized(package: Path) -> list[str]:
    """(f): too many top-level modules, modules over the line limit, functions over theirs."""
    problems = []
    top_level = sorted(path.name for path in package.glob("*.py"))
    if len(top_level) > MAX_TOP_LEVEL:
        problems.append(
            f"nas/ holds {len(top_level)} top-level modules ({', '.join(top_level)}), more than "
            f"{MAX_TOP_LEVEL}: move some into the package that owns their concept"
        )
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent).as_posix()
        text = path.read_text()
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            problems.append(
                f"{where} has {lines} lines, more than {MAX_MODULE_LINES}: split it by concept"
            )
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(
                        f"{where}:{node.lineno} {node.name} has {length} lines, more than "
                        f"{MAX_FUNCTION_LINES}: split it into named steps"
                    )
    return problems


# ---- the package -----------------------------------------------------------------------------


def test_the_layer_order_names_each_once():
    names = [*FOUNDATIONS, *LAYERS[1:]]
    assert len(names) == len(set(names))
    assert LAYERS[-1] == COMMAND_LINE


def test_every_module_has_a_layer():
    problems = unplaced(PACKAGE)
    assert not problems, "\n".join(problems)


def test_no_module_imports_from_a_higher_layer():
    problems = forbidden_imports(import_graph(PACKAGE))
    assert not problems, "\n".join(problems)


def test_only_the_entry_point_imports_the_command_line():
    problems = command_line_importers(import_graph(PACKAGE))
    assert not problems, "\n".join(problems)


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_each_package_init_is_a_docstring_only():
    problems = faces_that_define(PACKAGE)
    assert not problems, "\n".join(problems)


def test_modules_and_functions_stay_small():
    problems = oversized(PACKAGE)
    assert not problems, "\n".join(problems)


# ---- the checks themselves, on a package written here ------------------------------------


def write(package: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A package `nas` with foundations `errors` and `config`, packages `low` < `high` < `cli`:
    a type-only cycle (low <-> high), a lazy upward import, a `from PKG import MODULE`, an
    import of `nas` itself, config importing past errors, the command line imported from below,
    a package face that defines something, a stray module and a stray package."""
    return write(
        tmp_path / "nas",
        {
            "__init__.py": '"""Public names."""\nfrom nas.high.thing import Thing\n',
            "__main__.py": "from nas.cli.main import main\n",
            "errors.py": "",
            "config/__init__.py": '"""Configuration."""\n',
            "config/recipe.py": "from nas.errors import UserError\nfrom nas.low import a\n",
            "low/__init__.py": '"""Low."""\nX = 1\n',
            "low/a.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from nas.high.thing import Thing\n"
            ),
            "low/lazy.py": "def f():\n    import nas.high.thing\n    from nas import __version__\n",
            "high/__init__.py": '"""High."""\n',
            "high/thing.py": "from nas.low import a, X\nfrom nas.cli import main\n",
            "cli/__init__.py": '"""Command line."""\n',
            "cli/main.py": "from . import flags\nfrom ..errors import UserError\n",
            "cli/flags.py": "",
            "stray.py": "import os\n",
            "extra/mod.py": "",
        },
    )


TOY_FOUNDATIONS = frozenset({"errors", "config"})
TOY_LAYERS = ("foundations", "low", "high", "cli")


def flagged(problems: list[str]) -> list[tuple[str, str]]:
    """(importer, imported) of each import problem: `nas itself` is `nas`."""
    return [re.match(r"(\S+)(?: \(\w+\))? imports ([\w.]+)", line).groups() for line in problems]


def test_the_walk_counts_type_only_lazy_relative_and_from_package_imports(toy: Path):
    graph = import_graph(toy)
    assert graph["nas.low.a"] == {"nas.high.thing"}  # under TYPE_CHECKING
    assert graph["nas.low.lazy"] == {"nas.high.thing", "nas"}  # inside a function
    # `from nas.low import a, X`: the module a, and the package's face for X
    assert graph["nas.high.thing"] == {"nas.low.a", "nas.low", "nas.cli.main"}
    assert graph["nas.cli.main"] == {"nas.cli.flags", "nas.errors"}  # relative
    assert find_cycle(graph) == ["nas.high.thing", "nas.low.a", "nas.high.thing"]


def test_the_checks_name_each_broken_rule(toy: Path):
    graph = import_graph(toy)
    unplaced_ = unplaced(toy, TOY_FOUNDATIONS, TOY_LAYERS)
    assert [line.split(" ")[0] for line in unplaced_] == ["nas/extra/", "nas/stray.py"]
    assert "add it to LAYERS in tests/test_layers.py" in unplaced_[0]
    assert "add it to FOUNDATIONS in tests/test_layers.py" in unplaced_[1]
    assert unplaced(toy, TOY_FOUNDATIONS | {"files"}, TOY_LAYERS + ("gone",))[:2] == [
        "files is in the layer order of tests/test_layers.py but nas/ has no files: remove it",
        "gone is in the layer order of tests/test_layers.py but nas/ has no gone: remove it",
    ]
    forbidden = forbidden_imports(graph, TOY_FOUNDATIONS, TOY_LAYERS)
    assert flagged(forbidden) == [
        ("nas.config.recipe", "nas.low.a"),  # config: errors and itself only
        ("nas.low.a", "nas.high.thing"),  # upward, type-only
        ("nas.low.lazy", "nas"),  # the public names
        ("nas.low.lazy", "nas.high.thing"),  # upward, lazy
    ]
    assert "nas.config imports only nas.errors and itself" in forbidden[0]
    assert "(low) imports nas.high.thing (high), a higher layer" in forbidden[1]
    # the command line, imported from below: (c) names it, (b) does not repeat it
    assert flagged(command_line_importers(graph)) == [("nas.high.thing", "nas.cli.main")]
    assert [line.split(" ")[0] for line in faces_that_define(toy)] == [
        "nas/extra/__init__.py",  # missing
        "nas/low/__init__.py",  # defines X
    ]


def test_the_size_check_names_a_long_function_and_module(tmp_path: Path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    package = write(
        tmp_path / "nas",
        {
            "long.py": f"def long():\n{body}\n" + "\n" * MAX_MODULE_LINES,
            **{f"m{i}.py": "" for i in range(MAX_TOP_LEVEL)},
        },
    )
    problems = oversized(package)
    assert problems[0].startswith(f"nas/ holds {MAX_TOP_LEVEL + 1} top-level modules")
    assert problems[1].startswith("nas/long.py has ")
    assert problems[2].startswith(f"nas/long.py:1 long has {MAX_FUNCTION_LINES + 1} lines")


# ---- the map a newcomer reads ----------------------------------------------------------------

MAP = PACKAGE.parent / "ARCHITECTURE.md"


def test_the_map_draws_every_package_with_its_modules():
    """ARCHITECTURE.md's tree names every package of `nas/` with each of its modules on the
    package's lines, and every top-level module; a module added, moved or renamed without the
    map fails here (seen failing on a module missing from its package's line)."""
    text = MAP.read_text()
    tree = text[text.index("```\nnas/") : text.index("```", text.index("```\nnas/") + 3)]
    rows: dict[str, str] = {}
    current = ""
    for line in tree.splitlines()[2:]:
        stripped = line.strip()
        if re.match(r"^[a-z_]+/\s", stripped):
            current = stripped.split("/")[0]
            rows[current] = stripped.split(maxsplit=1)[1]
        elif current and line.startswith("             "):
            rows[current] += " " + stripped
    missing = []
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        words = set(rows.get(folder.name, "").split())
        for module in sorted(folder.glob("*.py")):
            if module.stem != "__init__" and module.stem not in words:
                missing.append(f"nas/{folder.name}/{module.name}")
    top = next(line for line in tree.splitlines() if "errors.py" in line)
    missing += [
        f"nas/{m.name}" for m in PACKAGE.glob("*.py") if m.stem not in FACES and m.name not in top
    ]
    assert not missing, f"ARCHITECTURE.md's tree does not name {', '.join(missing)}"


def test_every_file_the_map_names_exists():
    """Each `nas/...py` path ARCHITECTURE.md names (the ten things a newcomer looks for, where
    to add things) is a file of the package."""
    named = set(re.findall(r"`(nas/[\w/]+\.py)`", MAP.read_text()))
    assert len(named) >= 10
    gone = sorted(path for path in named if not (PACKAGE.parent / path).is_file())
    assert not gone, f"ARCHITECTURE.md names files that do not exist: {gone}"
