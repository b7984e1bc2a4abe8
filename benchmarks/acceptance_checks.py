"""The checks of `gpu_acceptance.py`, one function each: what only a GPU can show, each also
runnable on the CPU at a small size (`--cpu`) so CI proves the code still runs.

Every check takes the run's `Context` and returns a `Result`: passed, failed or skipped, one
line of summary, and its figures (plain JSON values). Where a check compares two numbers, the
tolerance and why it is what it is are stated next to it, and recorded with the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.arch.architecture import Architecture
from nas.arch.presets import PRESETS
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.augment import (
    AugmentDraws,
    augment_batch,
    draw_augmentations,
    normalize_batch,
    rotate_flip_crop_batch,
)
from nas.data.autoaugment import apply_autoaugment_op, autoaugment_table
from nas.data.batches import memory_format
from nas.data.loading import Splits, TensorData
from nas.train.devices import synchronize
from nas.train.fit import set_seed
from nas.train.model import build_model
from nas.train.optimizer import make_optimizer
from nas.train.precision import (
    BF16_MIN_CAPABILITY,
    Precision,
    choose_precision,
    cudnn_autotuning,
    device_capability,
)
from nas.train.step import TrainingStep

# a net of a few thousand parameters for the CPU-sized runs of the training checks
CPU_ARCH = Architecture((8, 16), (1, 1), conv_kernel=3, skip_kernel=1, stem=8)

# Augmentation, CUDA against CPU for the same draws. CUDA contracts a*b+c into one fused
# multiply-add and reduces in other orders, so a float32 value that lands exactly on a rounding
# boundary (x.5 before rounding to uint8; a sampling point on a pixel edge for nearest
# interpolation) may go the other way: the image then differs by one grey level, or one pixel
# takes its neighbour's value. That is the same augmentation distribution. Allowed: at most
# this share of an op's values differ; colour ops by at most one grey level. Integer-only ops
# must match exactly.
AUGMENT_TOLERANCE_SHARE = 1e-3
INTEGER_OPS = ("Invert", "Posterize", "Solarize")  # comparisons and bit masks: exact anywhere
COLOUR_OPS = ("Brightness", "Color", "Contrast", "Sharpness", "AutoContrast", "Equalize")


@dataclass(frozen=True)
class Sizes:
    """How big each check runs: the GPU acceptance, or the CPU's quick proof that it runs."""

    augment_images: int  # images every augmentation op is compared on
    train_arch: str  # preset of the precision/fused-Adam checks ("cpu-tiny": CPU_ARCH)
    amp_steps: int  # training steps of the reduced-precision-vs-fp32 loss comparison
    amp_window: int  # steps per window whose mean losses are compared
    amp_tolerance: float  # largest allowed difference of a window's mean loss (nats)
    adam_steps: int  # steps of the fused-vs-foreach comparison
    timed_steps: int  # steps timed per precision (after as many warm-up steps)
    epoch_arch: str  # preset timed per epoch ("cpu-small": bench_epoch's CPU model)
    epoch_images: int | None  # train + val images for the epoch timing; None: all of CIFAR-10
    reference_epochs: int  # epochs of the reference loop (the first is warm-up)
    ours_epochs: int  # epochs of ours and of the floor (the first is warm-up)
    reference_workers: int  # the reference loop's DataLoader workers (the study used 2)
    compile_images: int  # train images of the torch.compile run
    profile_images: int  # train images of the profiled epoch
    timing_batch: int = 64  # images per step of the precision check's speed comparison
    timing_repeats: int = 3  # timed runs per precision; the median counts


GPU_SIZES = Sizes(
    augment_images=4096, train_arch="paper-model1", amp_steps=300, amp_window=25,
    amp_tolerance=0.15, adam_steps=20, timed_steps=30, epoch_arch="paper-model1", epoch_images=None,
    reference_epochs=2, ours_epochs=3, reference_workers=2, compile_images=10_000,
    profile_images=10_000, timing_batch=256, timing_repeats=5,
)  # fmt: skip
CPU_SIZES = Sizes(
    augment_images=48, train_arch="cpu-tiny", amp_steps=16, amp_window=8, amp_tolerance=0.15,
    adam_steps=6, timed_steps=3, epoch_arch="cpu-tiny", epoch_images=400, reference_epochs=2,
    ours_epochs=2, reference_workers=0, compile_images=256, profile_images=128,
)  # fmt: skip


@dataclass
class Context:
    """What every check may use: the device, the data, the sizes, a scratch folder."""

    device: torch.device
    sizes: Sizes
    splits: Splits
    data_note: str  # which data the figures come from
    scratch: Path  # a temporary folder for stores
    peak_flops: float | None  # the device's dense peak in the precision it trains in
    force_profile: bool = False
    requested: tuple[str, ...] = ()  # checks named with --only: run even where --cpu skips them
    shared: dict[str, Any] = field(default_factory=dict)  # figures later checks read

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class Result:
    name: str
    status: str  # passed | failed | skipped
    summary: str  # one line
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def arch_named(name: str) -> Architecture:
    from bench_epoch import CPU_ARCH as BENCH_CPU_ARCH

    return {"cpu-tiny": CPU_ARCH, "cpu-small": BENCH_CPU_ARCH}.get(name) or PRESETS[name]


def take(data: TensorData, count: int) -> TensorData:
    return TensorData(data.images[:count], data.labels[:count])


# ---- augmentation --------------------------------------------------------------------------


def _each_tensor(draws: AugmentDraws, change) -> AugmentDraws:
    values = [getattr(draws, f.name) for f in dataclasses.fields(draws)]
    return AugmentDraws(*(change(v) if isinstance(v, torch.Tensor) else v for v in values))


def _to(draws: AugmentDraws, device) -> AugmentDraws:
    return _each_tensor(draws, lambda tensor: tensor.to(device))


def _one(draws: AugmentDraws, index: int) -> AugmentDraws:
    return _each_tensor(draws, lambda tensor: tensor[index : index + 1])


def _geometry(images, draws: AugmentDraws):
    return rotate_flip_crop_batch(
        images, draws.angles, draws.flips, draws.crop_tops, draws.crop_lefts
    )


def _compare(name: str, magnitude: float | None, expected, found, kind: str) -> dict[str, Any]:
    diff = (expected.int() - found.int()).abs()
    values = int((diff > 0).sum())
    share = values / diff.numel()
    largest = int(diff.max()) if diff.numel() else 0
    if kind == "integer":
        within = values == 0
    else:
        within = share <= AUGMENT_TOLERANCE_SHARE and (kind != "colour" or largest <= 1)
    return {
        "op": name, "magnitude": magnitude, "kind": kind,
        "images_differing": int((diff.flatten(1).amax(1) > 0).sum()),
        "values_differing": values, "max_difference": largest, "within_tolerance": within,
    }  # fmt: skip


def check_augment(ctx: Context) -> Result:
    """Batched augmentation where the model trains equals the CPU result for the same draws,
    per AutoAugment op, for the rotate/flip/crop step and for the whole recipe. With --cpu the
    batched CPU result is compared with each image augmented on its own instead."""
    count = ctx.sizes.augment_images
    images = ctx.splits.train.images[:count]
    height, width = images.shape[-2:]
    draws = draw_augmentations(count, "cifar10", "cpu", torch.Generator().manual_seed(0))
    table = autoaugment_table(height, width)
    if ctx.cuda:
        device_table = autoaugment_table(height, width, ctx.device)
        on_device = images.to(ctx.device)
        moved = _to(draws, ctx.device)
        other = {
            "op": lambda op, m: apply_autoaugment_op(on_device, op, m).cpu(),
            "geometry": lambda: _geometry(on_device, moved).cpu(),
            "recipe": lambda: augment_batch(on_device, moved, device_table).cpu(),
        }
        against = f"{ctx.device} against the CPU"
    else:
        singles = [images[i : i + 1] for i in range(count)]
        other = {
            "op": lambda op, m: torch.cat([apply_autoaugment_op(x, op, m) for x in singles]),
            "geometry": lambda: torch.cat(
                [_geometry(x, _one(draws, i)) for i, x in enumerate(singles)]
            ),
            "recipe": lambda: torch.cat(
                [augment_batch(x, _one(draws, i), table) for i, x in enumerate(singles)]
            ),
        }
        against = "the batch against each image on its own (CPU)"
    rows = []
    for op, magnitude in table.actions:
        kind = "integer" if op in INTEGER_OPS else "colour" if op in COLOUR_OPS else "geometry"
        expected = apply_autoaugment_op(images, op, magnitude)
        rows.append(_compare(op, magnitude, expected, other["op"](op, magnitude), kind))
    geometry = _geometry(images, draws)
    rows.append(_compare("rotate+flip+crop", None, geometry, other["geometry"](), "geometry"))
    recipe = augment_batch(images, draws, table)
    rows.append(_compare("whole recipe", None, recipe, other["recipe"](), "pipeline"))
    exact = sum(row["values_differing"] == 0 for row in rows)
    beyond = [
        row["op"] if row["magnitude"] is None else f"{row['op']} {row['magnitude']:+.3g}"
        for row in rows
        if not row["within_tolerance"]
    ]
    summary = (
        f"{len(rows)} comparisons of {count} images, {against}: {exact} exact, "
        f"{len(rows) - exact - len(beyond)} within tolerance, {len(beyond)} beyond"
        + (f" ({', '.join(beyond)})" if beyond else "")
    )
    figures = {
        "images": count, "compared": against, "exact": exact, "beyond_tolerance": beyond,
        "tolerance": {"share_of_values": AUGMENT_TOLERANCE_SHARE, "colour_levels": 1,
                      "integer_ops_exact": list(INTEGER_OPS)},
        "per_op": rows,
    }  # fmt: skip
    return Result("augment", "failed" if beyond else "passed", summary, figures)


# ---- training numerics ---------------------------------------------------------------------


@contextlib.contextmanager
def full_fp32(device: torch.device):
    """Plain float32 on CUDA: no TF32 in convolutions or matrix products, for a reference."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def fixed_batches(ctx: Context, steps: int, batch: int = 64):
    """`steps` batches of normalised, unaugmented training images, on the device, the same
    for every run (cycling through the split if it is short)."""
    train = ctx.splits.train
    order = torch.arange(steps * batch) % len(train)
    images = normalize_batch(train.images[order], ctx.splits.mean, ctx.splits.std)
    return list(
        zip(images.to(ctx.device).split(batch), train.labels[order].to(ctx.device).split(batch))
    )


def train_losses(arch, ctx: Context, batches, precision: Precision, optimizer_kind="recipe"):
    """Per-step training losses of `arch` from seed 0 on `batches` under `precision`: the
    recipe's optimizer (`make_optimizer`: fused Adam on CUDA), or torch's Adam with `fused` or
    `foreach`."""
    config = Recipe()
    layout = memory_format(Machine(device=str(ctx.device)), ctx.device)
    set_seed(0)
    model = build_model(arch).to(device=ctx.device, memory_format=layout)
    if optimizer_kind == "recipe":
        optimizer = make_optimizer(model, config, ctx.device)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, **{optimizer_kind: True})
    step = TrainingStep(model, optimizer, precision)
    losses = [
        step(images.contiguous(memory_format=layout), labels)[0] for images, labels in batches
    ]
    return torch.stack(losses).float().cpu(), model, optimizer


def step_seconds(arch, ctx: Context, batches, precision: Precision, repeats: int = 1) -> float:
    """Seconds of one training step of `arch` under `precision` (cuDNN autotuning on, as `fit`
    trains): the median over `repeats` timed passes over `batches`, after a warm-up pass,
    synchronised at both ends. fp32 is timed with TF32 off (`full_fp32`): plain float32, the
    speed reduced precision is meant to beat."""
    config = Recipe()
    layout = memory_format(Machine(device=str(ctx.device)), ctx.device)
    set_seed(0)
    model = build_model(arch).to(device=ctx.device, memory_format=layout)
    step = TrainingStep(model, make_optimizer(model, config, ctx.device), precision)
    inputs = [(images.contiguous(memory_format=layout), labels) for images, labels in batches]
    plain = full_fp32(ctx.device) if precision.name == "fp32" else contextlib.nullcontext()
    timings = []
    with cudnn_autotuning(ctx.cuda), plain:
        for images, labels in inputs:  # warm-up: autotuning, allocator
            step(images, labels)
        for _ in range(repeats):
            synchronize(ctx.device)
            started = time.perf_counter()
            for images, labels in inputs:
                step(images, labels)
            synchronize(ctx.device)
            timings.append((time.perf_counter() - started) / len(inputs))
    return statistics.median(timings)


# Reduced precision against plain fp32 (TF32 off), median of several runs of a batch large
# enough to be compute-bound: it may be this much slower before the check fails. A launch-bound
# net times the same in both, give or take autocast's casts; the emulated bf16 path below
# compute 8.0 takes several times fp32's time. The ratio itself is reported, not judged finer:
# how much bf16 gains over fp32 depends on the GPU and the net (no target is claimed).
MAX_STEP_RATIO = 1.5


def precision_verdict(
    chosen: str, capability: tuple[int, int] | None, seconds: float, fp32_seconds: float
) -> tuple[bool, str]:
    """Whether the precision a run trains in is the right one for the GPU and is not a slow
    path: bf16 only at compute >= 8.0 (fp16 below), and its step at most `MAX_STEP_RATIO` x
    plain fp32's (TF32 off). On the CPU (no capability) fp32 is right and nothing is compared."""
    if capability is None:
        ok = chosen == "fp32"
        return ok, f"{chosen} on the CPU" + ("" if ok else ": the CPU trains in fp32")
    compute = f"{capability[0]}.{capability[1]}"
    expected = "bf16" if tuple(capability) >= BF16_MIN_CAPABILITY else "fp16"
    if chosen != expected:
        return False, f"{chosen} at compute {compute}: expected {expected}"
    ratio = seconds / fp32_seconds
    ok = ratio <= MAX_STEP_RATIO
    return ok, (
        f"{chosen} at compute {compute}, step {seconds * 1000:.1f} ms vs fp32 (TF32 off) "
        f"{fp32_seconds * 1000:.1f} ms ({ratio:.2f}x, at most {MAX_STEP_RATIO:.2f}x allowed)"
    )


def check_precision(ctx: Context) -> Result:
    """The precision a run trains in here (`nas.train.precision`, `--precision auto`) is right for
    the GPU's compute capability, pays off in step time against fp32 on the same model (so a
    slow emulated path fails), and its training follows plain fp32 (TF32 off): the mean loss
    of every window of steps differs by at most the tolerance, and both runs learn."""
    sizes = ctx.sizes
    arch = arch_named(sizes.train_arch)
    capability = device_capability(ctx.device)
    chosen = choose_precision("auto", ctx.device.type, capability)
    fp32 = choose_precision("fp32", ctx.device.type, capability)
    batches = fixed_batches(ctx, sizes.amp_steps)
    with full_fp32(ctx.device):
        reference, _, _ = train_losses(arch, ctx, batches, fp32)
    reduced, _, _ = train_losses(arch, ctx, batches, chosen)
    windows = sizes.amp_steps // sizes.amp_window
    means = [
        t[: windows * sizes.amp_window].view(windows, -1).mean(1) for t in (reference, reduced)
    ]
    gap = float((means[0] - means[1]).abs().max())
    finite = bool(torch.isfinite(reference).all() and torch.isfinite(reduced).all())
    learning = all(float(m[-1]) < float(m[0]) for m in means)
    timing = fixed_batches(ctx, sizes.timed_steps, sizes.timing_batch)
    repeats = sizes.timing_repeats
    seconds = {
        name: step_seconds(arch, ctx, timing, p, repeats)
        for name, p in (("fp32", fp32), (chosen.name, chosen))
    }
    if ctx.cuda and chosen.name != "bf16":  # what bf16 would cost here: the slow path, shown
        bf16 = choose_precision("bf16", "cuda", capability)
        seconds["bf16 (not used)"] = step_seconds(arch, ctx, timing, bf16, repeats)
    right, verdict = precision_verdict(
        chosen.name, capability, seconds[chosen.name], seconds["fp32"]
    )
    ok = right and finite and learning and gap <= sizes.amp_tolerance
    summary = (
        f"{chosen.describe()}; {verdict}; {sizes.train_arch}, {sizes.amp_steps} steps of 64 "
        f"against fp32 (TF32 off): largest gap between {sizes.amp_window}-step mean losses "
        f"{gap:.3f} (tolerance {sizes.amp_tolerance}); loss {float(means[0][0]):.3f} -> "
        f"{float(means[0][-1]):.3f} (fp32), {float(means[1][0]):.3f} -> {float(means[1][-1]):.3f} "
        f"({chosen.name})"
    )
    figures = {
        "precision": chosen.name, "reason": chosen.reason, "capability": capability,
        "step_seconds": seconds, "max_step_ratio": MAX_STEP_RATIO, "verdict": verdict,
        "timing": {"batch": sizes.timing_batch, "steps": sizes.timed_steps, "repeats": repeats,
                   "fp32": "TF32 off", "statistic": "median"},
        "arch": sizes.train_arch, "steps": sizes.amp_steps, "window": sizes.amp_window,
        "tolerance_nats": sizes.amp_tolerance, "max_gap": gap,
        "fp32_window_means": means[0].tolist(), "reduced_window_means": means[1].tolist(),
        "finite": finite, "both_learn": learning,
    }  # fmt: skip
    return Result("precision", "passed" if ok else "failed", summary, figures)


def check_fused_adam(ctx: Context) -> Result:
    """The recipe's optimizer is torch's fused Adam on CUDA, and fused Adam trains like the
    foreach implementation: over the same steps in fp32 the losses differ by at most 1e-2
    (convolution backward on CUDA is not bit-deterministic, so exact equality is not expected;
    a wrong update would differ by far more)."""
    arch = arch_named(ctx.sizes.train_arch)
    batches = fixed_batches(ctx, ctx.sizes.adam_steps)
    fp32 = choose_precision("fp32", ctx.device.type, None)
    with full_fp32(ctx.device):
        recipe, _, optimizer = train_losses(arch, ctx, batches, fp32)
        fused, _, _ = train_losses(arch, ctx, batches, fp32, optimizer_kind="fused")
        foreach, _, _ = train_losses(arch, ctx, batches, fp32, optimizer_kind="foreach")
    uses_fused = bool(optimizer.defaults.get("fused"))
    gap = float((fused - foreach).abs().max())
    ok = gap <= 1e-2 and bool(torch.isfinite(fused).all()) and (uses_fused or not ctx.cuda)
    summary = (
        f"recipe optimizer fused={uses_fused}; fused vs foreach Adam over "
        f"{ctx.sizes.adam_steps} fp32 steps: largest loss gap {gap:.2e} (tolerance 1e-2)"
    )
    figures = {
        "recipe_uses_fused": uses_fused, "steps": ctx.sizes.adam_steps, "max_loss_gap": gap,
        "fused_losses": fused.tolist(), "foreach_losses": foreach.tolist(),
        "recipe_losses": recipe.tolist(),
    }  # fmt: skip
    return Result("fused_adam", "passed" if ok else "failed", summary, figures)


def check_compile(ctx: Context) -> Result:
    """`fit` with torch.compile trains, and reports the compile time apart from its epochs."""
    from nas.train.fit import fit

    if not ctx.cuda:
        return Result(
            "compile", "skipped",
            "skipped on --cpu: compiling takes about 50 s on a 2-core CPU (benchmarks/RESULTS.md)",
        )  # fmt: skip
    arch = arch_named(ctx.sizes.epoch_arch)
    splits = dataclasses.replace(ctx.splits, train=take(ctx.splits.train, ctx.sizes.compile_images))
    runs = {}
    for compiled in (False, True):
        set_seed(0)
        machine = Machine(device=str(ctx.device), compile=compiled)
        runs[compiled] = fit(build_model(arch), splits, Recipe(epochs=2), machine, progress=False)
    eager, compiled = runs[False], runs[True]
    ok = compiled.compile_seconds > 0 and all(
        math.isfinite(row.train_loss) for row in compiled.history
    )
    seconds = [row.seconds for row in compiled.history]
    eager_seconds = [row.seconds for row in eager.history]
    summary = (
        f"{ctx.sizes.epoch_arch} on {len(splits.train):,} images: compile "
        f"{compiled.compile_seconds:.1f} s (apart); epoch 2 {seconds[-1]:.2f} s compiled "
        f"vs {eager_seconds[-1]:.2f} s eager"
    )
    figures = {
        "compile_seconds": compiled.compile_seconds, "compiled_epoch_seconds": seconds,
        "eager_epoch_seconds": eager_seconds, "train_images": len(splits.train),
    }  # fmt: skip
    return Result("compile", "passed" if ok else "failed", summary, figures)


RESUME_IMAGES = 512  # train and validation images of the CPU-to-GPU resume (its CPU epoch)


def check_resume(ctx: Context) -> Result:
    """A checkpoint written on the CPU resumes on the GPU (docs/gpu.md): one epoch trained on
    the CPU with a checkpoint, then `fit` for two epochs on CUDA from that checkpoint, where the
    parameters are channels_last and the recipe's Adam is fused, so the loaded optimizer state
    must follow them (`nas.train.step.match_optimizer_state`); the resumed epoch trains and its
    loss is finite."""
    from nas.train.fit import fit

    if not ctx.cuda:
        return Result("resume", "skipped", "skipped on --cpu: needs CUDA to resume on")
    arch = arch_named(ctx.sizes.train_arch)
    splits = dataclasses.replace(
        ctx.splits, train=take(ctx.splits.train, RESUME_IMAGES), val=take(ctx.splits.val, 256)
    )
    checkpoint = ctx.scratch / "cpu-written.ckpt"
    set_seed(0)
    model = build_model(arch)
    fit(model, splits, Recipe(epochs=1), Machine(device="cpu"), checkpoint_path=checkpoint,
        progress=False)  # fmt: skip
    resumed = fit(
        model, splits, Recipe(epochs=2), Machine(device=str(ctx.device)),
        checkpoint_path=checkpoint, progress=False,
    )  # fmt: skip
    losses = [row.train_loss for row in resumed.history]
    ok = len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    summary = (
        f"{ctx.sizes.train_arch}: epoch 1 on the CPU, epoch 2 resumed from its checkpoint on "
        f"{ctx.device} (channels_last, fused Adam): train losses {losses}"
    )
    return Result("resume", "passed" if ok else "failed", summary, {"train_losses": losses})


def scratch_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="gpu-acceptance-")
