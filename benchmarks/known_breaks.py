"""The six one-line breaks that once passed the whole fast suite (issue 32), each applied alone
to a copy of the working tree: the fast tests of its area must now fail.

    python benchmarks/known_breaks.py

Prints one line per break with the first test that caught it; exits 1 if any break passed.
Not a test (it runs pytest seven times, about a minute): a check of the suite's strength,
like mutation testing (benchmarks/README.md), for breaks a person chose rather than mutmut.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Break:
    what: str  # the break in words
    path: str  # the file it changes, from the repository root
    old: str  # text that occurs once in that file
    new: str  # what replaces it
    tests: tuple[str, ...]  # the test modules of its area (the fast part)


BREAKS = (
    Break(
        "the retrain scores the test split with the last epoch's weights",
        "nas/run/retrain.py",
        "    model.load_state_dict(result.best_state)\n",
        "",
        ("tests/test_best_weights.py", "tests/test_retrain.py"),
    ),
    Break(
        "the best weights are replaced every epoch, whatever the validation loss",
        "nas/train/state.py",
        "if row.val_loss < self.best_val_loss:",
        "if True:",
        ("tests/test_best_weights.py", "tests/test_train_state.py", "tests/test_train.py"),
    ),
    Break(
        "a confirmation run trains with the first run's seed",
        "nas/search/confirm.py",
        "seed = recipe.seed + SEED_OFFSET",
        "seed = recipe.seed",
        ("tests/test_confirm.py",),
    ),
    Break(
        "every epoch has the same shuffle and augmentation seed",
        "nas/train/fit.py",
        "return (seed * 1_000_003 + epoch) % (2**63)",
        "return (seed * 1_000_003) % (2**63)",
        ("tests/test_epoch_seeds.py", "tests/test_train.py"),
    ),
    Break(
        "the winner's tie-break is reversed",
        "nas/search/winner.py",
        "(-c.score, -len(c.runs), c.number)",
        "(-c.score, -len(c.runs), -c.number)",
        ("tests/test_confirm.py", "tests/test_study_choice.py"),
    ),
    Break(
        "latency is timed on every thread instead of those asked for",
        "nas/costs/latency.py",
        "        torch.set_num_threads(setup.threads)\n",
        "",
        ("tests/test_costs.py",),
    ),
)


def tracked_files() -> list[str]:
    """The working tree's files git knows or would add (not studies, data or mutants/)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [name for name in listed.splitlines() if (ROOT / name).is_file()]


def pytest(copy: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess:
    # `python -m pytest` puts the copy first on sys.path: its `nas`, not the installed one
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=copy, capture_output=True, text=True,
    )  # fmt: skip


def first_failure(copy: Path, broken: Break) -> str | None:
    """The first test that fails with `broken` applied in `copy` (None: all passed)."""
    target = copy / broken.path
    text = target.read_text()
    if text.count(broken.old) != 1:
        raise SystemExit(f"{broken.path} no longer has the text this break changes: update it")
    target.write_text(text.replace(broken.old, broken.new))
    try:
        result = pytest(copy, broken.tests)
    finally:
        target.write_text(text)
    if result.returncode == 0:
        return None
    failed = re.search(r"^FAILED (\S+)", result.stdout, re.MULTILINE)
    return failed.group(1) if failed else f"pytest exit status {result.returncode}"


def main() -> int:
    passed = 0
    with tempfile.TemporaryDirectory(prefix="known-breaks-") as folder:
        copy = Path(folder)
        for name in tracked_files():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
        # unbroken, the same tests pass: a failure below is the break's, not the machine's
        every_test = tuple(sorted({test for broken in BREAKS for test in broken.tests}))
        if pytest(copy, every_test).returncode != 0:
            raise SystemExit(f"these tests fail without any break: {' '.join(every_test)}")
        for broken in BREAKS:
            caught = first_failure(copy, broken)
            passed += caught is None
            print(
                f"{'caught' if caught else 'PASSED'}  {broken.what}: {caught or 'no test failed'}"
            )
    return 1 if passed else 0


if __name__ == "__main__":
    sys.exit(main())
