"""Every `nas` command the README and the docs/ pages show still parses: its command and flags
exist and its values are accepted (nas.cli.main's real parser; nothing runs). A renamed or removed
flag fails here until the page that shows it is fixed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from nas.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PREFIXES = {  # how a page may spell a command -> the words `nas` parses after it
    "nas": [],
    "python -m nas": [],
    "python scripts/search.py": ["search"],
    "python scripts/retrain_best.py": ["retrain"],
}
# a placeholder (NAME, FILE, N, ...), a choice list (a|b) or an optional part ([--flag]) is a
# pattern, not a command
PATTERN = re.compile(r"\b[A-Z][A-Z_]*\b|\||\[|\.\.\.")


def shown_commands(text: str) -> set[str]:
    """The commands a page shows: inline code and the lines of code blocks, `$ ` prompts and
    trailing `# comments` removed, `&&` chains cut into their commands."""
    pieces = re.findall(r"`([^`\n]+)`", text)
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        pieces.extend(block.splitlines())
    commands = set()
    for piece in pieces:
        for part in piece.split("&&"):
            line = re.sub(r"\s+#.*$", "", part.strip().removeprefix("$ ").strip())
            if any(line == p or line.startswith(p + " ") for p in PREFIXES):
                commands.add(line)
    return commands


CASES = sorted(
    (page.relative_to(ROOT).as_posix(), command)
    for page in PAGES
    for command in shown_commands(page.read_text())
    # `nas` alone names the tool in prose; PATTERN skips the words before the arguments ("nas",
    # "python"), whose case says nothing
    if command != "nas" and not PATTERN.search(command.partition(" ")[2])
)


def test_the_pages_show_commands():
    # the README alone shows the search, the retrain, params, space, export, predict, doctor
    assert len(CASES) >= 40


def exit_status(argv: list[str]) -> int:
    """What nas's parser does with `argv`: 0 when it parses (or prints help), else its exit."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    return 0


@pytest.mark.parametrize(("page", "command"), CASES)
def test_a_shown_command_parses(page, command, capsys):
    prefix = max((p for p in PREFIXES if command == p or command.startswith(p + " ")), key=len)
    argv = PREFIXES[prefix] + shlex.split(command[len(prefix) :])
    if len(argv) <= 1 or argv[-1].startswith("--"):
        # prose naming a command (`nas predict`) or one of its flags (`nas retrain --study`):
        # the command exists and its help lists the flag
        assert exit_status(argv[:1] + ["--help"]) == 0, f"{page}: no command {argv[:1]}"
        help_text = capsys.readouterr().out
        for flag in (word for word in argv[1:] if word.startswith("--")):
            assert flag in help_text, f"{page} shows `{command}`: {argv[0]} has no {flag}"
        return
    status = exit_status(argv)
    assert status == 0, f"{page} shows `{command}`, which nas refuses (exit {status})"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", [*PAGES, *sorted((ROOT / "examples").rglob("*.md"))])
def test_every_relative_link_names_a_file_that_exists(page):
    links = [link for link in LINK.findall(page.read_text()) if "://" not in link]
    missing = [link for link in links if not (page.parent / link).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"
