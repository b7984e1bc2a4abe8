"""Does the search find better models than random search for the same compute? On real images,
on the CPU, with the real search, paired by seed (issue 23; issue 17 compared equal trials).

The data: scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`: 1,797 real
8x8 grey images, 10 classes; they ship inside the scikit-learn package, so `pip install -e
'.[bench]'` is all it needs: nothing is downloaded, and this machine has no network), written
once as an image folder (`train/<digit>/*.png`, `test/<digit>/*.png`) with a stratified test
split of `--test-images` images no search sees. The search holds out `--val-fraction` of the
training images for validation, as always.

The space: `SPACE` below (1-3 layers of 4-32 channels, 1-3 blocks, conv kernels 1, 2, 3, 5),
under a `--budget` of 5,000 parameters that rejects most of it.

Equal compute: every method of every seed spends the same number of training epochs
(`--compute`, default 100 = 20 candidates x 5 epochs). Epochs a pruned trial trained count, a
candidate rejected over the budget or reused as a duplicate costs nothing, confirmation runs
count. The searches run `nas.search.loop.run_search` with a `nas.search.time_budget.TimeBudget`
whose clock counts the study's training epochs instead of seconds: the search's own time-limit
rule (no new trial once the rest cannot hold one at the measured pace and the confirmation runs), so
the last trial may overrun by a few epochs; the epochs really used are printed.

Methods (`--methods`):
- defaults: `SearchConfig`'s sampler, pruner and confirmation runs, and the warm start: the
  digits space holds none of the reference study's 5M-parameter models, so the benchmark
  queues `REFERENCE_LIKE` first, the largest nets under the budget built like them;
- random: random search, no pruner, no warm start, no confirmation;
- warm: the warm start alone: the `REFERENCE_LIKE` nets trained in turn with seeds seed,
  seed+1, ... until the compute is spent, ranked by their mean validation accuracy;
- variants of the defaults, each one change, to measure before it becomes a default (`VARIANTS`).

What is compared: each method's winner (the architecture the search names), retrained from
scratch with `--retrain-seeds` seeds no search used (1000 + seed, 2000 + seed, ...) with the same
recipe, its lowest-validation-loss weights evaluated on the test split; the mean over those
retrains is the method's test accuracy for that seed. Per method: mean +- standard error over
seeds; against random, the paired differences' mean +- standard error and wins/ties/losses.

Each (seed, method) runs in its own process with its own SQLite store (`--jobs` at once); torch
on the CPU is deterministic with one thread and compute is counted in epochs, so the load of
the machine changes the seconds, never a result. `--results FILE` appends each result as a JSON
line and reuses those already there (same settings): run random and warm once, then each
variant alone.

    pip install -e '.[bench]'
    python benchmarks/bench_search.py --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2 --results r.jsonl
    python benchmarks/bench_search.py --seeds 0 --methods defaults random --compute 30  # a look
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch

from nas import records, trial_view
from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.arch.space import SearchSpace
from nas.config.data import DataConfig
from nas.config.machine import Machine, usable_cpus
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.data.loading import load_splits
from nas.errors import UserError
from nas.search.loop import run_search
from nas.search.time_budget import TimeBudget
from nas.train.devices import resolve_device
from nas.train.fit import evaluate, fit, set_seed
from nas.train.model import build_model

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
# The reference study's models are 3x3 convolutions with 3x3 projection shortcuts, widths that
# grow and block counts that fall with depth. The largest such net under 5,000 parameters of
# each depth the digits space allows (found by enumerating the space):
REFERENCE_LIKE = {
    "ref-like 1 layer": Architecture((8,), (2,), conv_kernel=3, skip_kernel=3, stem=16),
    "ref-like 2 layers": Architecture((4, 8), (3, 2), conv_kernel=3, skip_kernel=3, stem=16),
    "ref-like 3 layers": Architecture((4, 8, 8), (2, 2, 1), conv_kernel=3, skip_kernel=3, stem=4),
}
# name: overrides of SearchConfig's defaults (a variant is one candidate change)
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "tpe+median": {"sampler": "tpe", "pruner": "median", "confirm": 0},
    "tpe+median+confirm": {"sampler": "tpe", "pruner": "median", "confirm": 3},
    "tpe+median+confirm2": {"sampler": "tpe", "pruner": "median", "confirm": 2},
    "tpe+median+confirm1": {"sampler": "tpe", "pruner": "median", "confirm": 1},
    "tpe": {"sampler": "tpe", "pruner": "none", "confirm": 0},
    "tpe+fidelity": {"sampler": "tpe", "pruner": "fidelity", "confirm": 0},
    "tpe+confirm": {"sampler": "tpe", "pruner": "none", "confirm": 3},
    "tpe+fidelity+confirm": {"sampler": "tpe", "pruner": "fidelity", "confirm": 3},
    "random": {"sampler": "random", "pruner": "none", "confirm": 0, "warm_start": False},
    # what users would run instead (issue 30): Optuna as its docs teach it, no warm start, no
    # confirmation: optuna.samplers.TPESampler() with its defaults and the HyperbandPruner
    # (min_resource 1, its default; max_resource the epochs, what its default "auto" finds
    # once a trial has completed)
    "optuna-raw": {
        "sampler": "optuna-tpe",
        "pruner": "hyperband",
        "confirm": 0,
        "warm_start": False,
    },
    # this tool's TPE (multivariate + group, random until candidates trained) with Optuna's
    # pruners, no warm start, no confirmation (named optuna-hyperband, optuna-asha before)
    "tool-tpe+hyperband": {
        "sampler": "tpe",
        "pruner": "hyperband",
        "confirm": 0,
        "warm_start": False,
    },
    "tool-tpe+asha": {"sampler": "tpe", "pruner": "asha", "confirm": 0, "warm_start": False},
    # Optuna's GPSampler in place of TPE, everything else the defaults
    "gp": {"sampler": "gp"},
    # the defaults without the warm start's queued nets (they take 15 of the 100 epochs)
    "defaults-no-warm": {"warm_start": False},
}
BASELINE = "random"
RAW = "optuna-raw"  # what users would run instead of this tool
RECHECK_SEED = 5000  # --recheck-seeds: seeds 5000, 5001, ... (the retrains use 1000-3999)
DEFAULT_METHODS = ["defaults", "random", "warm"]  # the comparison of RESULTS.md


def write_digits(folder: Path, test_images: int) -> None:
    """The digits as train/<digit>/*.png and test/<digit>/*.png."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype("uint8")  # 0..16 grey levels -> 0..255
    train, test = train_test_split(
        list(range(len(pixels))), test_size=test_images, stratify=digits.target, random_state=0
    )
    for split, chosen in (("train", train), ("test", test)):
        for index in chosen:
            path = folder / split / str(digits.target[index]) / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[index], mode="L").save(path)


def recipe_for(args, seed: int) -> Recipe:
    return Recipe(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        augment="none",  # 8x8 digits: AutoAugment's ops and flips make other digits
        flip=False,
        seed=seed,
    )


CPU = Machine(device="cpu")  # one thread: deterministic runs (see train_once)


def data_config(args) -> DataConfig:
    return DataConfig(
        dataset="imagefolder",
        data_dir=str(args.folder / "digits"),
        image_size=args.image_size,
        val_fraction=args.val_fraction,
    )


def train_once(arch: Architecture, splits, recipe: Recipe, cache: Path | None = None):
    """(best validation accuracy, test accuracy of the lowest-validation-loss weights).

    Training on the CPU with one thread is deterministic, so a run is kept in `cache` (one
    JSON file per architecture, recipe and seed) and not repeated: the warm start's runs of
    consecutive seeds overlap, and several methods often retrain the same winner."""
    key = hashlib.sha256(f"{arch.to_dict()}{recipe.to_dict()}{CPU.to_dict()}".encode()).hexdigest()[
        :24
    ]
    path = cache / f"{key}.json" if cache is not None else None
    if path is not None and path.exists():
        return tuple(json.loads(path.read_text()))
    set_seed(recipe.seed)  # as the search's objective does before building the model
    model = build_model(arch)
    result = fit(model, splits, recipe, CPU, progress=False)
    model.load_state_dict(result.best_state)
    _, test = evaluate(model, splits.test, splits, CPU, resolve_device(CPU.device))
    if path is not None:
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps([result.best_val_accuracy, test]))
        partial.replace(path)
    return result.best_val_accuracy, test


def study_epochs(study: optuna.Study) -> int:
    """Training epochs the study has spent: trained and pruned trials, confirmation runs."""
    trials = study.get_trials(deepcopy=False)
    spent = sum(t.user_attrs.get(records.EPOCHS, 0) for t in trials if trial_view.is_trained(t))
    return spent + confirmation_epochs(study)


def confirmation_epochs(study: optuna.Study) -> int:
    try:
        from nas.search.winner import confirmation_epochs as spent
    except ImportError:  # before confirmation runs existed
        return 0
    return spent(study)


def named_winner(study: optuna.Study) -> tuple[optuna.trial.FrozenTrial, float]:
    """The trial the search names best and the score it is named by."""
    try:
        from nas.search.winner import winner
    except ImportError:
        trained = [t for t in study.get_trials(deepcopy=False) if trial_view.is_trained(t)]
        best = max(trained, key=lambda t: (trial_view.accuracy(t), -t.number))
        return best, trial_view.accuracy(best)
    return winner(study)


def run_search_method(args, method: str, seed: int, splits) -> dict:
    overrides = dict(VARIANTS[method])
    warm = overrides.pop("warm_start", True)
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    overrides = {k: v for k, v in overrides.items() if k in fields}  # older code: no `confirm`
    store = f"sqlite:///{args.folder / f'{method}-seed{seed}.db'}"
    config = SearchConfig(
        budget=args.budget,
        trials=10_000,  # the compute ends the search, not a count
        space=str(args.folder / "digits.yaml"),
        study=f"{method}-seed{seed}",
        storage=store,
        seed=seed,
        warm_start=False,  # the digits space holds no reference model: REFERENCE_LIKE instead
        **overrides,
    )
    recipe = recipe_for(args, seed)
    if warm:  # queued before the search opens the study, as its warm start queues its own
        study = optuna.create_study(study_name=config.study, storage=store, direction="maximize")
        space = SearchSpace.resolve(config.space)
        for name, arch in REFERENCE_LIKE.items():
            study.enqueue_trial(space.params_for(arch), user_attrs={records.WARM_START: name})
    holder: dict = {}

    def clock() -> float:  # the study's training epochs so far
        if "study" not in holder:
            try:
                holder["study"] = optuna.load_study(study_name=config.study, storage=store)
            except KeyError:  # not created yet
                return 0.0
        return float(study_epochs(holder["study"]))

    budget = TimeBudget(limit=args.compute, clock=clock)
    started = time.perf_counter()
    ended = ""
    try:
        study = run_search(
            config, data_config(args), recipe, CPU, splits=splits, time_budget=budget
        )
    except UserError as error:  # e.g. a sampler stuck on rejected candidates: the search ends
        ended = str(error)  # and the user has its study as it stands, winner and all
        study = optuna.load_study(study_name=config.study, storage=store)
    best, score = named_winner(study)
    kinds = [trial_view.classify(t) for t in study.get_trials(deepcopy=False)]
    return {
        "ended": ended,
        "arch": best.user_attrs[records.ARCHITECTURE],
        "search_score": score,
        "epochs": study_epochs(study),
        "trained": sum(k.trained for k in kinds),
        "stopped": kinds.count(trial_view.TrialKind.STOPPED),
        "rejected": kinds.count(trial_view.TrialKind.REJECTED),
        "duplicates": kinds.count(trial_view.TrialKind.DUPLICATE),
        "search_wall_s": time.perf_counter() - started,
    }


def run_warm_method(args, seed: int, splits) -> dict:
    """The warm start alone: the reference-like nets in turn, new seeds, until compute is out."""
    names = list(REFERENCE_LIKE)
    scores: dict[str, list[float]] = {name: [] for name in names}
    started, spent, run = time.perf_counter(), 0, 0
    while spent + args.epochs <= args.compute:
        name = names[run % len(names)]
        recipe = recipe_for(args, seed + run // len(names))
        val, _ = train_once(REFERENCE_LIKE[name], splits, recipe, args.cache)
        scores[name].append(val)
        spent, run = spent + args.epochs, run + 1
    best = max(names, key=lambda n: statistics.fmean(scores[n]) if scores[n] else -1.0)
    arch = REFERENCE_LIKE[best]
    return {
        "arch": json.dumps(arch.to_dict(), separators=(",", ":")),
        "search_score": statistics.fmean(scores[best]),
        "epochs": spent,
        "trained": run,
        "stopped": 0,
        "rejected": 0,
        "duplicates": 0,
        "search_wall_s": time.perf_counter() - started,
    }


def run_task(task: tuple) -> dict:
    args, method, seed = task
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = load_splits(data_config(args))
    if method == "warm":
        result = run_warm_method(args, seed, splits)
    else:
        result = run_search_method(args, method, seed, splits)
    arch = Architecture.from_json(result["arch"])
    assert count_params(arch) <= args.budget
    tests = []
    for index in range(1, args.retrain_seeds + 1):
        _, test = train_once(arch, splits, recipe_for(args, 1000 * index + seed), args.cache)
        tests.append(test)
    result.update(
        method=method,
        seed=seed,
        test=statistics.fmean(tests),
        tests=tests,
        arch_line=arch.describe(),
        params=count_params(arch),
        load=os.getloadavg()[0],
        settings=settings_key(args),
        code=code_version(),
    )
    return result


def settings_key(args) -> str:
    keys = ("compute", "epochs", "budget", "image_size", "test_images", "val_fraction")
    keys += ("batch_size", "lr", "retrain_seeds")
    return json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)


def code_version() -> str:
    """Which `nas` runs: its folder and git commit, marked when nas/ has uncommitted changes."""
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
    return f"{commit}" + ("+uncommitted" if dirty else "")


def mean_se(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return statistics.fmean(values), float("nan")
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def paired(results, rows: list[dict], measure: str, other: str) -> str:
    """'+1.0 +- 0.7 | 11/0/9 | ' over `other`'s rows of the same seeds, or '- | - | '."""
    if not all((r["seed"], other) in results for r in rows) or rows[0]["method"] == other:
        return "- | - | "
    diffs = [100 * (r[measure] - results[(r["seed"], other)][measure]) for r in rows]
    d, d_se = mean_se(diffs)
    wins = sum(x > 1e-9 for x in diffs)
    losses = sum(x < -1e-9 for x in diffs)
    return f"{d:+.1f} +- {d_se:.1f} | {wins}/{len(diffs) - wins - losses}/{losses} | "


def measured_cells(results, method: str, rows: list[dict], measure: str) -> str:
    """'| method | mean +- s.e. | ' and the pairs with random search and Optuna raw."""
    value, value_se = mean_se([r[measure] for r in rows])
    cells = f"| {method} | {value:.1%} +- {value_se:.1%} | "
    return cells + paired(results, rows, measure, BASELINE) + paired(results, rows, measure, RAW)


def recheck_task(task: tuple) -> tuple[str, float]:
    args, arch_json, seed = task
    torch.set_num_threads(args.threads)
    splits = load_splits(data_config(args))
    return arch_json, train_once(Architecture.from_json(arch_json), splits,
                                 recipe_for(args, seed), args.cache)[1]  # fmt: skip


def recheck(args, results: dict[tuple[int, str], dict], pool) -> None:
    """Each named winner's test accuracy over `--recheck-seeds` more retrains, the same seeds
    (RECHECK_SEED + k) for every architecture: how good the picked architecture is, with the
    retrain's luck mostly averaged out (3 seeds leave a spread of several points)."""
    archs = sorted({row["arch"] for row in results.values()})
    seeds = [RECHECK_SEED + k for k in range(args.recheck_seeds)]
    tests: dict[str, list[float]] = {arch: [] for arch in archs}
    tasks = [(args, arch, seed) for arch in archs for seed in seeds]
    for arch, test in pool.imap_unordered(recheck_task, tasks):
        tests[arch].append(test)
    for row in results.values():
        row["recheck"] = statistics.fmean(tests[row["arch"]])


def print_tables(results: dict[tuple[int, str], dict], seeds: list[int], methods: list[str]):
    print("| seed | " + " | ".join(f"{m} test (winner)" for m in methods) + " |")
    print("|---|" + "---|" * len(methods))
    for seed in seeds:
        cells = [
            f"{results[(seed, m)]['test']:.1%} ({results[(seed, m)]['arch_line']})" for m in methods
        ]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    print()
    print("| method | test, mean +- s.e. | vs random (points) | wins/ties/losses "
          "| vs optuna-raw | wins/ties/losses | search score | epochs used | trained (pruned) "
          "| rejected |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method in methods:
        rows = [results[(seed, method)] for seed in seeds]
        line = measured_cells(results, method, rows, "test")
        score = statistics.fmean(r["search_score"] for r in rows)
        epochs = statistics.fmean(r["epochs"] for r in rows)
        trained = statistics.fmean(r["trained"] for r in rows)
        stopped = statistics.fmean(r["stopped"] for r in rows)
        rejected = statistics.fmean(r["rejected"] for r in rows)
        line += f"{score:.1%} | {epochs:.1f} | {trained:.1f} ({stopped:.1f}) | {rejected:.1f} |"
        print(line)
    if not all("recheck" in results[(seed, m)] for seed in seeds for m in methods):
        return
    print("\nThe same winners, each retrained with the same more seeds (`--recheck-seeds`):\n")
    print("| method | winner's test over the more seeds | vs random | wins/ties/losses "
          "| vs optuna-raw | wins/ties/losses |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for method in methods:
        rows = [results[(seed, method)] for seed in seeds]
        print(measured_cells(results, method, rows, "recheck").rstrip(" |") + " |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument(
        "--methods", nargs="+", choices=[*VARIANTS, "warm"], default=DEFAULT_METHODS
    )
    parser.add_argument("--compute", type=int, default=100)  # training epochs per search
    parser.add_argument("--epochs", type=int, default=5)  # epochs per candidate
    parser.add_argument("--budget", type=int, default=5_000)  # parameters
    parser.add_argument("--retrain-seeds", type=int, default=3)  # retrains of each winner
    # more retrains of every winner, the same seeds for all: its quality without the luck
    parser.add_argument("--recheck-seeds", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=8)  # the digits' native size
    parser.add_argument("--test-images", type=int, default=400)  # stratified, never searched
    parser.add_argument("--val-fraction", type=float, default=0.2)  # of the training images
    parser.add_argument("--batch-size", type=int, default=64)  # the recipe's
    parser.add_argument("--lr", type=float, default=1e-2)  # Adam; 5 epochs need more than 1e-3
    parser.add_argument("--threads", type=int, default=1)  # torch threads per process
    parser.add_argument("--jobs", type=int, default=1)  # (seed, method) runs at once
    parser.add_argument("--results", type=Path, help="JSON lines: append results, reuse them")
    parser.add_argument("--cache", type=Path, help="keep single training runs here, reuse them")
    return parser.parse_args()


def load_results(path: Path | None, key: str) -> dict[tuple[int, str], dict]:
    if path is None or not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["settings"] == key:
            found[(row["seed"], row["method"])] = row
    return found


def main() -> None:
    args = parse_args()
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, {usable_cpus()} cores, torch "
          f"{torch.__version__}, optuna {optuna.__version__}, {args.jobs} job(s) x "
          f"{args.threads} thread(s), load before {os.getloadavg()[0]:.2f}, code "
          f"{code_version()}", flush=True)  # fmt: skip
    results = load_results(args.results, settings_key(args))
    if args.cache is not None:
        args.cache = args.cache / hashlib.sha256(settings_key(args).encode()).hexdigest()[:12]
        args.cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_search_") as scratch:
        args.folder = Path(scratch)
        write_digits(args.folder / "digits", args.test_images)
        (args.folder / "digits.yaml").write_text(SPACE)
        tasks = [
            (args, method, seed)
            for seed in args.seeds
            for method in args.methods
            if (seed, method) not in results
        ]
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for row in pool.imap_unordered(run_task, tasks):
                results[(row["seed"], row["method"])] = row
                print(f"  seed {row['seed']} {row['method']}: test {row['test']:.1%} "
                      f"({row['arch_line']}, {row['params']:,} params, search score "
                      f"{row['search_score']:.1%}), {row['epochs']} epochs, "
                      f"{row['trained']} trained ({row['stopped']} pruned), "
                      f"{row['rejected']} rejected, search {row['search_wall_s']:.0f} s, "
                      f"load {row['load']:.2f}{'; ended: ' if row.get('ended') else ''}"
                      f"{row.get('ended', '')}", flush=True)  # fmt: skip
                if args.results is not None:
                    with args.results.open("a") as out:
                        out.write(json.dumps(row) + "\n")
            if args.recheck_seeds:
                chosen = {(s, m): results[(s, m)] for s in args.seeds for m in args.methods}
                recheck(args, chosen, pool)
    print(f"\n{time.perf_counter() - started:.0f} s wall, load after {os.getloadavg()[0]:.2f}\n")
    print_tables(results, args.seeds, args.methods)


if __name__ == "__main__":
    main()
