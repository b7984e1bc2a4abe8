"""pyproject.toml allows torch>=2.3: the package and the GPU acceptance script may name only the
torch APIs that 2.3 already has. Each API at risk is listed with the release that added it (from
the torch release notes; the issue that found the first one: `torch.OutOfMemoryError`, 2.4, where
2.3 has only `torch.cuda.OutOfMemoryError`), and the source is read for it: a use in code, not
in a comment or docstring, fails."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OLDEST = (2, 3)  # pyproject.toml: torch>=2.3
# API -> (the release that added it, what to use instead in 2.3)
NEWER_THAN_OLDEST = {
    "torch.OutOfMemoryError": ((2, 4), "torch.cuda.OutOfMemoryError"),
    "torch.accelerator": ((2, 6), "torch.cuda"),
    "torch.serialization.add_safe_globals": ((2, 4), "plain tensors and values"),
    "torch.AcceleratorError": ((2, 8), "RuntimeError (its base)"),
}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _uses(path: Path) -> set[str]:
    """Every dotted name `torch.x.y` the file's code uses (not its comments or strings)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name is not None and name.startswith("torch."):
                names.add(name)
    return names


SOURCES = sorted([*ROOT.joinpath("nas").rglob("*.py"), *ROOT.joinpath("benchmarks").glob("*.py")])


def test_the_oldest_allowed_torch_is_the_one_this_test_checks_against():
    text = ROOT.joinpath("pyproject.toml").read_text()
    found = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert found and (int(found[1]), int(found[2])) == OLDEST


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_names_a_torch_api_newer_than_the_oldest_allowed(path):
    risky = {
        name: NEWER_THAN_OLDEST[api]
        for name in _uses(path)
        for api in NEWER_THAN_OLDEST
        if (name == api or name.startswith(api + ".")) and NEWER_THAN_OLDEST[api][0] > OLDEST
    }
    assert not risky, f"{path.name} names {risky}: use what torch 2.3 has"


def test_the_scan_finds_a_use_in_code_and_not_in_a_comment(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "# torch.accelerator in a comment\n"
        '"""torch.accelerator in a docstring"""\n'
        "except_ = torch.OutOfMemoryError\n"
    )
    assert _uses(source) == {"torch.OutOfMemoryError"}
