"""The import layers ARCHITECTURE.md describes: every module of `nas/` sits in one layer of
`LAYERS`, imports only from its own layer or those below, and `nas/` has no import cycle.

Imports are read with `ast`, so every import counts: at the top of a module, inside a function
(a lazy import is still a dependency) and under `if TYPE_CHECKING:` (a type-only cycle says a
definition lives in the wrong module). `from nas import NAME` counts when NAME is a module;
other names (`__version__`) come from the package itself, which every import runs anyway.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nas"

# Lowest first. A module may import from its own layer and the layers before it. `confirm` is a
# module being written now: placed where its job belongs, so it lands without editing this table.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "foundations",
        frozenset(
            {"errors", "files", "records", "settings", "config", "config_search", "machine"}
            | {"cost_table"}
        ),
    ),
    (
        "architecture and space",
        frozenset({"arch", "arch_counts", "presets", "space", "space_format"}),
    ),
    (
        "model, data, training and the store",
        frozenset(
            {"model", "run_folder", "data", "readers", "augment", "autoaugment", "batches"}
            | {
                "train",
                "fit_state",
                "evaluation",
                "checkpoint",
                "precision",
                "step",
                "device_memory",
            }
            | {"devices", "torch_devices", "storage"}
        ),
    ),
    (
        "budgets and costs",
        frozenset(
            {
                "budgets",
                "latency",
                "training_memory",
                "run_plan",
                "step_timing",
                "estimate",
                "doctor",
            }
        ),
    ),
    (
        "search",
        frozenset(
            {"search", "objective", "samplers", "study_setup", "warm_start", "workers", "fidelity"}
            | {"front"}
            | {"study_choice", "commands", "confirm", "winner", "time_budget"}
            | {"search_progress", "search_stops"}
        ),
    ),
    (
        "outputs",
        frozenset(
            {
                "retrain",
                "retrain_record",
                "curves",
                "report",
                "report_figures",
                "report_trials",
                "export",
                "export_check",
            }
            | {"inference", "model_card"}
        ),
    ),
    (
        "command line",
        frozenset(
            {"cli", "cli_common", "cli_budgets", "cli_search", "cli_search_settings", "cli_summary"}
            | {"cli_retrain"}
            | {"cli_arch", "cli_flags", "cli_inspect", "cli_progress", "cli_export", "cli_doctor"}
            | {"__main__", "__init__"}
        ),
    ),
)


def module_names(package: Path) -> set[str]:
    """Dotted names (relative to the package) of every Python module under `package`."""
    return {
        ".".join(path.relative_to(package).with_suffix("").parts) for path in package.rglob("*.py")
    }


def imports_of(path: Path, modules: set[str], package: str = "nas") -> set[str]:
    """The package's modules that the file at `path` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(_inside(alias.name, package))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .x import y
                base = node.module or ""
                found.add(base)
                found.update(f"{base}.{a.name}".strip(".") for a in node.names)
            elif node.module == package:
                found.update(alias.name for alias in node.names)
            elif node.module:
                found.add(_inside(node.module, package))
    return {name for name in found if name in modules}


def _inside(dotted: str, package: str) -> str:
    """`nas.cli.common` -> `cli_common`; names outside the package -> ''."""
    prefix = f"{package}."
    return dotted[len(prefix) :] if dotted.startswith(prefix) else ""


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = module_names(package)
    return {
        name: imports_of(package / Path(*name.split(".")).with_suffix(".py"), modules) - {name}
        for name in sorted(modules)
    }


def layer_of(layers=LAYERS) -> dict[str, int]:
    return {module: rank for rank, (_, names) in enumerate(layers) for module in names}


def unplaced(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    placed = layer_of(layers)
    return [
        f"nas/{name.replace('.', '/')}.py is in no layer: add it to LAYERS in "
        "tests/test_layers.py and to ARCHITECTURE.md, at the layer of what it owns"
        for name in graph
        if name not in placed
    ]


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    rank = layer_of(layers)
    return [
        f"{name} ({layers[rank[name]][0]}) imports {target} ({layers[rank[target]][0]}), a "
        "higher layer: move the definition it needs down, or the importer up"
        for name, targets in graph.items()
        for target in sorted(targets)
        if name in rank and target in rank and rank[target] > rank[name]
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
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


# ---- the package -----------------------------------------------------------------------------


def test_every_module_has_a_layer():
    problems = unplaced(import_graph(PACKAGE))
    assert not problems, "\n".join(problems)


def test_no_module_imports_from_a_higher_layer():
    problems = upward_imports(import_graph(PACKAGE))
    assert not problems, "\n".join(problems)


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_map_names_every_module_in_its_layer():
    # ARCHITECTURE.md's layer table, row by row: the map a newcomer reads stays the one enforced
    rows = {}
    for line in (PACKAGE.parent / "ARCHITECTURE.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 3 and cells[2].startswith("`"):
            rows[cells[1]] = set(cells[2].replace("`", "").replace(" ", "").split(","))
    for layer, modules in LAYERS:
        named = rows.get(layer, set())
        missing = sorted(
            m for m in modules if m not in named and not (m.startswith("cli_") and "cli_*" in named)
        )
        assert not missing, f"ARCHITECTURE.md's {layer!r} row does not name {', '.join(missing)}"


def test_each_module_is_in_one_layer():
    names = [name for _, layer in LAYERS for name in layer]
    assert len(names) == len(set(names))


# ---- the checks themselves, on a package written here ------------------------------------


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A package `nas` with a type-only cycle (low <-> high), a lazy upward import and one
    module no layer names."""
    package = tmp_path / "nas"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nas.high import Thing\n"
    )
    (package / "high.py").write_text("from nas import low\n")
    (package / "lazy.py").write_text("def f():\n    import nas.high\n")
    (package / "stray.py").write_text("import os\n")
    return package


TOY_LAYERS = (
    ("bottom", frozenset({"low", "lazy", "__init__"})),
    ("top", frozenset({"high"})),
)


def test_the_walk_counts_type_only_and_lazy_imports(toy: Path):
    graph = import_graph(toy)
    assert graph == {
        "__init__": set(),
        "high": {"low"},
        "lazy": {"high"},
        "low": {"high"},
        "stray": set(),
    }
    assert find_cycle(graph) == ["high", "low", "high"]


def test_the_checks_name_an_upward_import_and_an_unplaced_module(toy: Path):
    graph = import_graph(toy)
    upward = upward_imports(graph, TOY_LAYERS)
    assert [line.split(" (")[0] for line in upward] == ["lazy", "low"]
    assert "imports high (top), a higher layer" in upward[0]
    (problem,) = unplaced(graph, TOY_LAYERS)
    assert problem.startswith("nas/stray.py is in no layer: add it to LAYERS")
    assert "ARCHITECTURE.md" in problem
