"""Owns `nas doctor`'s checks: what a user pastes into a bug report. Versions (Python, torch,
CUDA, cuDNN, torchvision, Optuna, optuna-dashboard, plotly), the GPUs with their memory and
compute capability, the precision a run would train in on the chosen device and why, whether
the default dataset is present, whether the default store opens (and its
journal mode), free disk where runs go, and a few seconds of training steps on the chosen
device with images/s.

Claims:
- Read-only: no store, data folder or run folder is created; a SQLite store is opened only if
  its file exists, and its journal mode is read through a read-only connection.
- A missing dataset or store is not a failure (a new user has neither: the first search
  downloads the one and creates the other). A failing import, a store that exists but does not
  open, a training step that errors or gives a non-finite loss, and less than `MIN_FREE_GIB` of
  disk are: each such line is marked failed, by name.
- The precision line is `nas.train.precision`'s choice for `--precision auto` on the chosen device
  (fp32 on a CPU), with its reason (the device type, the compute capability).
- The training steps are `nas.train.step.TrainingStep`s on random tensors with the recipe's
  optimizer, that precision and memory layout (as `nas.train.fit` uses them), and leave the
  global random state as it was.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import platform
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nas.arch.architecture import Architecture
from nas.arch.counts import count_params
from nas.config.machine import Machine, usable_cpus
from nas.config.outputs import DOCTOR_SECONDS
from nas.config.recipe import Recipe
from nas.version import VERSION

# a narrow member of the ResNet family (126k parameters) that trains fast on any device
DOCTOR_ARCH = Architecture((16, 32, 32, 64), (1, 1, 1, 1), conv_kernel=3, skip_kernel=3, stem=16)
DOCTOR_BATCH = 64  # images per training step: the recipe's batch size
MIN_FREE_GIB = 1.0  # less free disk than this where runs go fails: checkpoints need room
RUNS_FOLDER = "runs"  # where retrains write their run folders (relative to the working folder)
PACKAGES = (  # (line name, distribution, module imported to prove it loads)
    ("torchvision", "torchvision", "torchvision"),
    ("optuna", "optuna", "optuna"),
    ("optuna-dashboard", "optuna-dashboard", "optuna_dashboard"),
    ("plotly", "plotly", "plotly"),
)


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str  # what was checked, e.g. "torch"
    value: str  # what was found, one line
    status: str = "ok"  # ok | info (a fact, or something absent that is fine) | FAILED

    @property
    def failed(self) -> bool:
        return self.status == "FAILED"


def failed(name: str, error: BaseException) -> Check:
    """A failed line saying what was raised, on one line (a user error's sentence as it is)."""
    from nas.errors import UserError

    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    kind = type(error).__name__
    if isinstance(error, UserError) and text:
        return Check(name, text, "FAILED")
    return Check(name, f"{kind}: {text}" if text else kind, "FAILED")


def versions() -> list[Check]:
    """Python, the nas package, torch with its CUDA and cuDNN, and the packages around it."""
    checks = [
        Check("python", f"{platform.python_version()} ({platform.python_implementation()})"),
        Check("nas", VERSION),
        Check("platform", f"{platform.platform()}, {usable_cpus()} CPU cores", "info"),
    ]
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - any import failure is the finding
        return [*checks, failed("torch", error)]
    checks.append(Check("torch", f"{torch.__version__} ({torch.get_num_threads()} CPU threads)"))
    if torch.version.cuda is None:
        checks.append(Check("CUDA", "none: this torch is a CPU build", "info"))
    else:
        where = "available" if torch.cuda.is_available() else "no GPU visible"
        checks.append(Check("CUDA", f"{torch.version.cuda} (torch built with it; {where})"))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    checks.append(Check("cuDNN", str(cudnn) if cudnn else "none", "ok" if cudnn else "info"))
    for name, distribution, module in PACKAGES:
        try:
            importlib.import_module(module)
            checks.append(Check(name, importlib.metadata.version(distribution)))
        except Exception as error:  # noqa: BLE001 - a broken install is what this reports
            checks.append(failed(name, error))
    return checks


def gpus() -> list[Check]:
    """Each visible GPU with its memory, compute capability and the precision auto picks."""
    import torch

    from nas.train.precision import choose_precision

    if not torch.cuda.is_available():
        return [Check("GPU", "none visible: training runs on the CPU", "info")]
    checks = []
    for index in range(torch.cuda.device_count()):
        try:
            props = torch.cuda.get_device_properties(index)
            chosen = choose_precision("auto", "cuda", (props.major, props.minor)).name
            checks.append(
                Check(
                    f"GPU {index}",
                    f"{props.name}, {props.total_memory / 2**30:.1f} GiB, "
                    f"compute {props.major}.{props.minor}, trains in {chosen}",
                )
            )
        except Exception as error:  # noqa: BLE001 - a GPU that cannot be queried is a finding
            checks.append(failed(f"GPU {index}", error))
    return checks


def dataset(data_dir: str = "data") -> Check:
    """Whether CIFAR-10, the default dataset, is in `data_dir` (files present, not checksummed)."""
    from torchvision.datasets import CIFAR10

    root = Path(data_dir)
    folder = root / CIFAR10.base_folder
    names = [name for name, _ in (*CIFAR10.train_list, *CIFAR10.test_list)]
    if all((folder / name).is_file() for name in names):
        return Check("dataset", f"CIFAR-10 present in {folder}")
    if (root / CIFAR10.filename).is_file():
        return Check("dataset", f"CIFAR-10 archive in {root} (extracted on first use)")
    return Check(
        "dataset",
        f"CIFAR-10 absent from {root}/: the first search downloads it (or use --dataset)",
        "info",
    )


def store(url: str) -> Check:
    """Whether the store at `url` opens, read-only; for SQLite also its journal mode."""
    from nas.errors import UserError
    from nas.store.opening import display_url, open_storage, sqlite_path, store_file

    shown = display_url(url)
    try:
        path, file = sqlite_path(url), store_file(url)
    except UserError as error:
        return Check("store", f"{shown}: {error}", "FAILED")
    if file is not None and not file.is_file():
        return Check("store", f"{shown} absent: the first search creates it", "info")
    try:
        studies = len(open_storage(url, create=False).get_all_studies())
    except Exception as error:  # noqa: BLE001 - a store that exists but will not open
        return Check("store", f"{shown} does not open: {failed('', error).value}", "FAILED")
    text = f"{shown} opens, {studies} stud{'y' if studies == 1 else 'ies'}"
    if path is not None:
        text += f", journal mode {sqlite_journal_mode(path)}"
    return Check("store", text)


def sqlite_journal_mode(path: Path) -> str:
    """The journal mode of a SQLite file, read through a read-only connection."""
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as connection:
            return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    except sqlite3.Error as error:
        return f"unknown ({error})"


def disk(folder: Path) -> Check:
    """Free disk where runs go: `folder` if it exists, else the folder it would be made in."""
    where = folder if folder.is_dir() else folder.resolve().parent
    usage = shutil.disk_usage(where)
    free = usage.free / 2**30
    text = f"{free:,.1f} GiB free of {usage.total / 2**30:,.0f} GiB at {where.resolve()}"
    return Check("disk", text, "ok" if free >= MIN_FREE_GIB else "FAILED")


def precision(device_name: str = "auto") -> Check:
    """The precision a run with `--precision auto` trains in on the device, and why."""
    try:
        from nas.train.devices import resolve_device
        from nas.train.precision import precision_for

        device = resolve_device(device_name)
        chosen = precision_for("auto", device)
    except Exception as error:  # noqa: BLE001 - the training line fails for it, by name
        return Check("precision", f"unknown: {failed('', error).value}", "info")
    return Check("precision", f"{chosen.name} on {device} ({chosen.reason})")


def training(device_name: str = "auto", seconds: float = DOCTOR_SECONDS) -> Check:
    """Training steps of `DOCTOR_ARCH` for `seconds` on the device: images/s, or the error."""
    try:
        import torch

        from nas.train.devices import resolve_device

        device = resolve_device(device_name)
        machine = Machine(device=str(device))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            steps, elapsed, loss, chosen = _train_for(machine, device, seconds)
    except Exception as error:  # noqa: BLE001 - whatever breaks the step is the finding
        return failed("training", error)
    if not math.isfinite(loss):
        return Check("training", f"{device}: the loss became {loss}", "FAILED")
    rate = steps * DOCTOR_BATCH / elapsed
    return Check(
        "training",
        f"{device}, {chosen}: {rate:,.0f} images/s ({steps} steps of {DOCTOR_BATCH} in "
        f"{elapsed:.1f} s, {count_params(DOCTOR_ARCH):,}-parameter net, loss {loss:.3f})",
    )


def _train_for(machine, device, seconds: float) -> tuple[int, float, float, str]:
    """(steps, seconds, last loss, precision) of training on random images until `seconds`
    have passed."""
    import torch

    from nas.data.batches import memory_format
    from nas.train.model import build_model
    from nas.train.optimizer import make_optimizer
    from nas.train.precision import cudnn_autotuning, precision_for
    from nas.train.step import TrainingStep

    cuda = device.type == "cuda"
    layout = memory_format(machine, device)
    model = build_model(DOCTOR_ARCH).to(device=device, memory_format=layout)
    chosen = precision_for(machine.precision, device)
    step = TrainingStep(model, make_optimizer(model, Recipe(), device), chosen)
    images = torch.randn(DOCTOR_BATCH, 3, 32, 32, device=device).contiguous(memory_format=layout)
    labels = torch.randint(0, DOCTOR_ARCH.num_classes, (DOCTOR_BATCH,), device=device)
    with cudnn_autotuning(cuda):  # as a training run has it
        step(images, labels)  # warm-up: allocator, kernel selection
        if cuda:
            torch.cuda.synchronize(device)
        steps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or steps == 0:
            loss, _ = step(images, labels)
            steps += 1
            if cuda and steps % 10 == 0:
                torch.cuda.synchronize(device)  # keep the clock honest: the queue stays short
        last = float(loss.item())
    return steps, time.perf_counter() - started, last, chosen.name


def run_checks(
    device: str = "auto",
    seconds: float = DOCTOR_SECONDS,
    storage_url: str | None = None,
    data_dir: str = "data",
    runs_folder: str = RUNS_FOLDER,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Every check in report order; `on_check` sees each as it finishes (the training steps
    take `seconds`, so a caller can show the lines before them)."""
    from nas.store.opening import default_storage

    checks: list[Check] = []

    def add(*found: Check) -> None:
        for check in found:
            checks.append(check)
            if on_check is not None:
                on_check(check)

    add(*versions())
    if any(check.name == "torch" and check.failed for check in checks):
        return checks  # nothing below runs without torch
    for name, probe in (("GPU", gpus), ("dataset", lambda: [dataset(data_dir)])):
        try:
            add(*probe())
        except Exception as error:  # noqa: BLE001 - a check that breaks is itself a finding
            add(failed(name, error))
    add(precision(device))
    add(store(storage_url or default_storage()))
    add(disk(Path(runs_folder)))
    add(training(device, seconds))
    return checks
