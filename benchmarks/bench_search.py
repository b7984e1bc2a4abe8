"""Does the search beat random search? TPE with median pruning against random search without
pruning, on real images, on the CPU, with the real search (issue 17).

The data: scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`: 1,797 real
8x8 grey images, 10 classes, no download; `pip install -e '.[bench]'`), written once as an
image folder (`train/<digit>/*.png`, `test/<digit>/*.png`, grey PNGs read as RGB by the
`imagefolder` dataset) with a stratified test split of `--test-images` images. The search
holds out `--val-fraction` of the training images for validation, as always.

The space: a small one written next to the data (`SPACE` below: 1-3 layers of 4-32 channels,
1-3 blocks, conv kernels 1, 2, 3 or 5), under a `--budget` of a few thousand parameters that
rejects most of it, so the candidates that fit differ in accuracy (a kernel-1 net sees almost
no neighbourhood; a deep narrow one loses to a wide shallow one, or the other way round).

For every seed, each method (`--methods`; by default TPE with median pruning, the search's
defaults, and random search without pruning) runs `nas.search.run_search` on its own study in
one temporary SQLite store, with the same recipe (`--epochs`, the seed as training seed, no
augmentation), to the same number of trained candidates (`--trials`; a candidate the pruner
stopped counts, as in any search). Printed, side by side per seed and on average:

- best val: the highest validation accuracy a trained candidate reached (the study's ranking);
- test: that candidate's architecture trained again with the same recipe and seed, all epochs
  (also where the pruner had stopped it; training is seeded per epoch, so an unpruned trial's
  run is repeated: "retrain val" shows it), its weights of the lowest validation loss (what a
  retrain keeps) evaluated on the test split, which no search saw;
- train s: training seconds the search spent, the sum over its trained trials of
  seconds-per-epoch x epochs (`records.SECONDS_PER_EPOCH`, `records.EPOCHS`); wall s: the
  whole search, with proposals rejected over budget, Optuna and the store.

Also printed: the rank fidelity of each study without a pruner (every trial there ran all epochs).

    pip install -e '.[bench]'
    python benchmarks/bench_search.py                         # 3 seeds: 11.5 min at load 4-7
    python benchmarks/bench_search.py --seeds 0 --trials 12   # a quick look
    python benchmarks/bench_search.py --methods tpe random+median   # TPE and pruner apart
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial

from nas import records
from nas.arch import Architecture, count_params
from nas.config import DataConfig, TrainConfig
from nas.config_search import SearchConfig
from nas.data import load_splits
from nas.evaluation import evaluate
from nas.fidelity import study_fidelity
from nas.machine import usable_cpus
from nas.model import build_model
from nas.search import run_search
from nas.train import fit, resolve_device, set_seed

SPACE = """\
# bench_search.py: small ResNets for 8x8 digits; a budget of a few thousand parameters rejects
# most of the space (5,000: about 30 % of uniform draws fit)
name: digits
stem: [4, 8, 16]
layers: [1, 3]
channels: [4, 8, 12, 16, 24, 32]
blocks: [1, 3]
conv_kernel: [1, 2, 3, 5]
skip_kernel: [1, 3]
kernels: shared
"""
METHODS = {  # name: (sampler, pruner)
    "tpe+median": ("tpe", "median"),  # the search's defaults
    "random": ("random", "none"),  # the baseline
    "tpe": ("tpe", "none"),  # with --methods: TPE alone, to tell its share from the pruner's
    "random+median": ("random", "median"),  # ... and the pruner's alone
}
DEFAULT_METHODS = ["tpe+median", "random"]


@dataclass
class Outcome:
    best_val: float  # highest validation accuracy of a trained candidate
    test: float  # that architecture, trained again with the recipe, on the test split
    retrain_val: float  # the best validation accuracy of that training again
    train_seconds: float  # sum over trained trials of seconds per epoch x epochs
    wall_seconds: float  # the whole search
    trained: int  # trained candidates (complete + stopped by the pruner)
    stopped: int  # of those, stopped by the pruner
    rejected: int  # proposals over the budget
    duplicates: int  # proposals of an architecture already trained
    arch: str  # the best candidate, as the report prints it
    params: int


def write_digits(folder: Path, test_images: int) -> tuple[int, int]:
    """The digits as train/<digit>/*.png and test/<digit>/*.png; (train, test) image counts."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype("uint8")  # 0..16 grey levels -> 0..255
    indices = list(range(len(pixels)))
    train, test = train_test_split(
        indices, test_size=test_images, stratify=digits.target, random_state=0
    )
    for split, chosen in (("train", train), ("test", test)):
        for index in chosen:
            path = folder / split / str(digits.target[index]) / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[index], mode="L").save(path)
    return len(train), len(test)


def summarise(study: optuna.Study) -> tuple[FrozenTrial, Outcome]:
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if records.is_trained(t)]
    kinds = [records.classify(t) for t in trials]
    best = max(trained, key=lambda t: (records.accuracy(t), -t.number))
    seconds = sum(
        t.user_attrs[records.SECONDS_PER_EPOCH] * t.user_attrs[records.EPOCHS] for t in trained
    )
    outcome = Outcome(
        best_val=records.accuracy(best),
        test=float("nan"),
        retrain_val=float("nan"),
        train_seconds=seconds,
        wall_seconds=0.0,
        trained=len(trained),
        stopped=kinds.count(records.TrialKind.STOPPED),
        rejected=kinds.count(records.TrialKind.REJECTED),
        duplicates=kinds.count(records.TrialKind.DUPLICATE),
        arch=arch_line(Architecture.from_json(best.user_attrs[records.ARCHITECTURE])),
        params=best.user_attrs[records.PARAMS],
    )
    return best, outcome


def arch_line(arch: Architecture) -> str:
    """The printed form, with the stem width always shown (some versions leave it out)."""
    line = arch.describe()
    return line if "stem" in line else f"{line} / stem{arch.stem}"


def test_accuracy(arch: Architecture, splits, recipe: TrainConfig) -> tuple[float, float]:
    """The architecture trained with the search's recipe and seed: the test accuracy of its
    lowest-validation-loss weights, and its best validation accuracy."""
    set_seed(recipe.seed)  # as the search's objective does before building the model
    model = build_model(arch)
    result = fit(model, splits, recipe, progress=False)
    model.load_state_dict(result.best_state)
    _, accuracy = evaluate(model, splits.test, splits, recipe, resolve_device(recipe.device))
    return accuracy, result.best_val_accuracy


def run_one(args, method: str, seed: int, store: str, data: DataConfig, splits) -> Outcome:
    sampler, pruner = METHODS[method]
    config = SearchConfig(
        budget=args.budget,
        trials=args.trials,
        space=str(args.space_file),
        study=f"{method}-seed{seed}",
        storage=store,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
    )
    recipe = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        augment="none",  # 8x8 digits: AutoAugment's ops and flips make other digits
        flip=False,
        seed=seed,
        device="cpu",
    )
    started = time.perf_counter()
    study = run_search(config, data, recipe, splits=splits)
    wall = time.perf_counter() - started
    best, outcome = summarise(study)
    outcome.wall_seconds = wall
    arch = Architecture.from_json(best.user_attrs[records.ARCHITECTURE])
    assert count_params(arch) <= args.budget
    outcome.test, outcome.retrain_val = test_accuracy(arch, splits, recipe)
    if pruner == "none":
        print(f"  rank fidelity ({method}, seed {seed}): {study_fidelity(study).advice()}")
    return outcome


def code_version() -> str:
    """Which `nas` runs: its folder, and its git commit with a mark when nas/ has uncommitted
    changes (other engineers edit the working tree: a figure must name the code it measured)."""
    import nas

    folder = Path(nas.__file__).parent

    def git(*command: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(folder), *command], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"nas from {folder} (not a git checkout)"
    dirty = git("status", "--porcelain", "--", ".")
    return f"nas from {folder} at {commit}" + (" with uncommitted changes" if dirty else "")


def mean(values) -> float:
    return statistics.fmean(values)


def print_table(
    results: dict[tuple[int, str], Outcome], seeds: list[int], names: list[str]
) -> None:
    head = ["seed"]
    for name in names:
        head += [f"{name} best val", f"{name} test", f"{name} train s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for seed in seeds:
        row = [str(seed)]
        for name in names:
            o = results[(seed, name)]
            row += [f"{o.best_val:.1%}", f"{o.test:.1%}", f"{o.train_seconds:.0f}"]
        print("| " + " | ".join(row) + " |")
    row = ["mean"]
    for name in names:
        outcomes = [results[(seed, name)] for seed in seeds]
        row += [
            f"{mean(o.best_val for o in outcomes):.1%}",
            f"{mean(o.test for o in outcomes):.1%}",
            f"{mean(o.train_seconds for o in outcomes):.0f}",
        ]
    print("| " + " | ".join(row) + " |")
    print()
    print("| seed | method | best architecture | params | trained (stopped) | rejected | "
          "duplicates | wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        for name in names:
            o = results[(seed, name)]
            print(
                f"| {seed} | {name} | {o.arch} | {o.params:,} | {o.trained} ({o.stopped}) | "
                f"{o.rejected} | {o.duplicates} | {o.wall_seconds:.0f} |"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])  # sampler+train seeds
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    parser.add_argument("--trials", type=int, default=20)  # trained candidates per search
    parser.add_argument("--epochs", type=int, default=5)  # epochs per candidate
    parser.add_argument("--budget", type=int, default=5_000)  # parameters
    parser.add_argument("--image-size", type=int, default=8)  # the digits' native size
    parser.add_argument("--test-images", type=int, default=400)  # stratified, never searched
    parser.add_argument("--val-fraction", type=float, default=0.2)  # of the training images
    parser.add_argument("--batch-size", type=int, default=64)  # the recipe's
    parser.add_argument("--lr", type=float, default=1e-2)  # Adam; 5 epochs need more than 1e-3
    parser.add_argument("--threads", type=int, default=1)  # tiny nets: 1 thread is fastest here
    parser.add_argument("--keep", type=Path, help="keep the data and store in this folder")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M} {platform.processor() or platform.machine()}"
          f", {usable_cpus()} cores, torch {torch.__version__}, optuna {optuna.__version__}, "
          f"{args.threads} torch thread(s), load before {os.getloadavg()[0]:.2f}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_search_") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        train_count, test_count = write_digits(folder / "digits", args.test_images)
        args.space_file = folder / "digits.yaml"
        args.space_file.write_text(SPACE)
        store = f"sqlite:///{folder / 'bench.db'}"
        data = DataConfig(
            dataset="imagefolder",
            data_dir=str(folder / "digits"),
            image_size=args.image_size,
            val_fraction=args.val_fraction,
        )
        splits = load_splits(data)
        print(code_version())
        print(f"digits: {len(splits.train)} train, {len(splits.val)} val, {test_count} test "
              f"images at {args.image_size}x{args.image_size}; budget {args.budget:,}; "
              f"{args.trials} trained candidates x {args.epochs} epochs per search; "
              f"seeds {args.seeds}")  # fmt: skip
        results: dict[tuple[int, str], Outcome] = {}
        for seed in args.seeds:
            for method in args.methods:
                outcome = run_one(args, method, seed, store, data, splits)
                results[(seed, method)] = outcome
                print(f"  seed {seed} {method}: best val {outcome.best_val:.1%} "
                      f"({outcome.arch}, {outcome.params:,} params), test {outcome.test:.1%} "
                      f"(retrain val {outcome.retrain_val:.1%}), "
                      f"train {outcome.train_seconds:.0f} s, wall {outcome.wall_seconds:.0f} s, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    print()
    print_table(results, args.seeds, args.methods)
    print(f"\nload after {os.getloadavg()[0]:.2f}; train images {train_count} before the "
          f"validation split")  # fmt: skip


if __name__ == "__main__":
    main()
