"""How long the analytic counts take (`nas.arch.counts.count_params`, `count_macs`): the budget gate
calls them for every sampled candidate before anything is built, so they must stay far below a
trial's cost. The target: well under a millisecond per call on any CPU (was a test's wall-clock
bound; a speed target is a benchmark, not a test).

Not a test; run it by hand, e.g.
    python benchmarks/bench_count.py --samples 2000 --space resnet
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from nas.arch.counts import count_macs, count_params
from nas.arch.space import SearchSpace

TARGET_SECONDS = 1e-3  # per call: a thousand candidates a second at the very least


def per_call(function, archs, repeats: int) -> float:
    """The median over `repeats` rounds of the seconds one call takes."""
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for arch in archs:
            function(arch)
        rounds.append((time.perf_counter() - started) / len(archs))
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="sampled architectures")
    parser.add_argument("--space", default="resnet", help="built-in space name or YAML path")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median shown)")
    args = parser.parse_args()
    space = SearchSpace.resolve(args.space)
    rng = random.Random(0)
    archs = [space.sample(rng, 10) for _ in range(args.samples)]
    for name, function in (
        ("count_params", count_params),
        ("count_macs at 32 px", lambda arch: count_macs(arch, 32)),
    ):
        seconds = per_call(function, archs, args.repeats)
        verdict = "ok" if seconds < TARGET_SECONDS else "OVER TARGET"
        print(
            f"{name}: {seconds * 1e6:.1f} us per call ({args.samples} archs of {args.space}; "
            f"target < {TARGET_SECONDS * 1e3:.0f} ms: {verdict})"
        )


if __name__ == "__main__":
    main()
