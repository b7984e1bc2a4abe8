"""Owns the model card, `MODEL.md`, that every finished run folder holds: what the model is,
how well it does, what it was trained on and how, and the commands that rebuild, export and
predict with it.

`model_card(arch, metrics, run_dir)` renders it from the architecture and the run's metrics
(`nas.run.folder.RunMetrics`, what metrics.json holds) alone, so it can be rewritten for any
finished run. MACs
are `nas.arch.counts.count_macs` at the trained image size (convolutions and the head); FLOPs are
shown as 2 x MACs. The export contract it states is `nas.run.export.input_contract`, the same line
the exported files carry in their metadata. Imports no optuna.
"""

from __future__ import annotations

import shlex
from dataclasses import fields
from pathlib import Path

from nas.arch.architecture import POOL_KERNEL, Architecture
from nas.arch.counts import count_macs, param_table
from nas.commands import join, option, retrain_command
from nas.config.data import DataConfig
from nas.config.recipe import Recipe
from nas.run import folder as run_folder
from nas.run.export import input_contract
from nas.run.folder import EXPORT_FILES, RunMetrics

# What `nas retrain --arch` sets from its flags; any other setting comes from the defaults.
DATA_FLAGS = {
    "dataset": "--dataset",
    "data_dir": "--data-dir",
    "subset": "--subset",
    "image_size": "--image-size",
}
RECIPE_FLAGS = {
    "epochs": "--epochs",
    "device": "--device",
    "precision": "--precision",
    "seed": "--seed",
}


def model_card(arch: Architecture, metrics: RunMetrics, run_dir: str | Path) -> str:
    """The Markdown text of a finished run's MODEL.md."""
    lines = [
        f"# Model card: {Path(run_dir).name}",
        "",
        *_results(arch, metrics),
        *_architecture(arch, metrics),
        *_data_and_split(metrics),
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in metrics.config.items()),
        "",
        "## Files",
        "",
        f"`{run_folder.WEIGHTS}` (best weights), `{run_folder.ARCHITECTURE}`, "
        f"`{run_folder.METRICS}`, `{run_folder.HISTORY}` (one row per epoch), "
        f"`{run_folder.CURVES}` (loss and accuracy per epoch, train vs validation), "
        f"`{run_folder.CHECKPOINT}` (resumable state), this card.",
        "",
        *_use_it(metrics, run_dir),
        "## Rebuild",
        "",
        "```",
        rebuild_command(metrics, run_dir),
        "```",
        *rebuild_notes(metrics),
    ]
    return "\n".join(lines) + "\n"


def _results(arch: Architecture, metrics: RunMetrics) -> list[str]:
    """What the model is and how well it does, as a table."""
    size = metrics.image_size
    macs = count_macs(arch, size)
    best = metrics.best_epoch or "none: the initial weights"
    return [
        f"A ResNet image classifier, `{arch.describe()}` (widths / blocks / conv kernel / skip "
        f"kernel), for {size}x{size} RGB images of {len(metrics.classes)} classes, trained by "
        "`nas`.",
        "",
        "| | |",
        "|---|---|",
        f"| test accuracy | {percent(metrics.test_accuracy)} |",
        f"| test loss | {metrics.test_loss:.4f} |",
        f"| parameters | {metrics.params:,} |",
        f"| MACs per image | {macs:,} ({2 * macs / 1e9:.3f} GFLOPs at 2 FLOPs per MAC) |",
        f"| epochs | {metrics.epochs_completed} of {metrics.epochs_planned or '?'} planned; "
        f"best (lowest validation loss, the weights kept) epoch {best} |",
        f"| validation accuracy at the best epoch | {percent(metrics.best_val_accuracy)} |",
        f"| training time | {metrics.seconds or 0:,.0f} s "
        f"({metrics.seconds_per_epoch or 0:.1f} s per epoch) on {metrics.device} |",
        f"| classes | {', '.join(map(str, metrics.classes))} |",
        "",
    ]


def _architecture(arch: Architecture, metrics: RunMetrics) -> list[str]:
    """The architecture's parts, with their output shapes and parameters for one image."""
    return [
        "## Architecture",
        "",
        f"`{arch.describe()}`, {stem_words(arch)} to {arch.stem} channels; the full description is "
        f"`{run_folder.ARCHITECTURE}`. Per part, for one image:",
        "",
        "| part | output | params |",
        "|---|---|---:|",
        *(
            f"| {name} | {'x'.join(map(str, shape))} | {params:,} |"
            for name, shape, params in param_table(arch, metrics.image_size)
        ),
        f"| **total** | | **{metrics.params:,}** |",
        "",
    ]


def stem_words(arch: Architecture) -> str:
    """E.g. `the cifar stem (3x3, stride 1)`; the imagenet one adds `, then a 3x3 max-pool`."""
    spec = arch.stem_spec
    pool = f", then a {POOL_KERNEL}x{POOL_KERNEL} max-pool" if spec.pool else ""
    return f"the {arch.stem_type} stem ({spec.kernel}x{spec.kernel}, stride {spec.stride}{pool})"


def _data_and_split(metrics: RunMetrics) -> list[str]:
    data, size = metrics.dataset, metrics.image_size
    subset = f"; training on the first {data['subset']:,} images" if data.get("subset") else ""
    return [
        "## Data and split",
        "",
        f"Dataset `{data.get('dataset')}` from `{data.get('data_dir')}`, images held at "
        f"{size}x{size}. Validation: {data.get('val_fraction', DataConfig.val_fraction):.0%} of "
        f"the training split, held out with split seed {data.get('split_seed', 0)}{subset}. "
        "The test split is separate and was evaluated once, with the best weights.",
        "",
        f"Normalisation (of pixels scaled to [0, 1]): mean {metrics.normalization.get('mean')}, "
        f"std {metrics.normalization.get('std')}.",
        "",
    ]


def _use_it(metrics: RunMetrics, run_dir: str | Path) -> list[str]:
    """The commands and the Python that predict with and export the model, and its contract."""
    run, size = shlex.quote(str(run_dir)), metrics.image_size
    return [
        "## Use it",
        "",
        "```",
        f"nas predict {run} IMAGE_OR_FOLDER --top 3      # top classes with probabilities",
        f"nas export {run} --format onnx                # -> {EXPORT_FILES['onnx']}, verified",
        f"nas export {run} --format torchscript         # -> {EXPORT_FILES['torchscript']}",
        "```",
        "",
        "```python",
        "import nas",
        "",
        f'model = nas.load_model("{run_dir}")  # eval mode; expects normalised input',
        f'predictions = nas.predict("{run_dir}", ["image.png"])  # the preprocessing below',
        "```",
        "",
        f"Preprocessing: any image becomes RGB, is resized to {size}x{size} (bilinear, aspect "
        "ratio not kept), scaled to [0, 1] and normalised with the mean and std above; "
        "`nas predict` and `nas.predict` do all of it. Exports (`nas export`) include the "
        f"normalisation: input {input_contract(size)}; output `logits` "
        f"(N, {len(metrics.classes)}) in the class order above. The ONNX export needs "
        "`pip install -e '.[export]'`.",
        "",
    ]


def percent(value: float | None) -> str:
    return "n/a (no epoch trained)" if value is None else f"{value:.2%}"


def rebuild_command(metrics: RunMetrics, run_dir: str | Path) -> str:
    """The `nas retrain` command that trains this run again, into a new folder."""
    source, recipe = metrics.source, metrics.config
    flags = [
        word
        for key, flag in RECIPE_FLAGS.items()
        if key in recipe
        for word in (flag, str(recipe[key]))
    ]
    flags += option("--out", f"{run_dir}-rebuilt")
    if "study" in source:  # the study supplies the data and the recipe
        study, trial = str(source["study"]), source["trial"]
        return retrain_command(study, trial, str(source.get("storage") or ""), flags)
    return join(
        ["nas", "retrain", *option("--arch", str(Path(run_dir) / run_folder.ARCHITECTURE))]
        + _data_flags(metrics)
        + flags
    )


def _data_flags(metrics: RunMetrics) -> list[str]:
    """The data flags of `nas retrain --arch` that give the run's data."""
    data = metrics.dataset
    words = [
        word
        for key, flag in DATA_FLAGS.items()
        if data.get(key) is not None
        for word in (flag, str(data[key]))
    ]
    return words + (["--no-verify"] if data.get("verify") is False else [])


def rebuild_notes(metrics: RunMetrics) -> list[str]:
    """For a run of a named architecture: the settings the command line cannot give that
    differ from the defaults (set them through `nas.run.retrain.retrain` in Python)."""
    if "study" in metrics.source:
        return []
    differing = []
    for config_class, values, flags in (
        (DataConfig, metrics.dataset, DATA_FLAGS.keys() | {"verify", "download"}),
        (Recipe, metrics.config, RECIPE_FLAGS.keys()),
    ):
        for field in fields(config_class):
            if field.name in values and field.name not in flags:
                if values[field.name] != field.default:
                    differing.append(f"`{field.name}={values[field.name]!r}`")
    if not differing:
        return []
    return [
        "",
        f"This run also used {', '.join(differing)}, which `nas retrain` takes from its "
        "defaults: pass them to `nas.run.retrain.retrain(arch, DataConfig(...), Recipe(...), "
        "Machine(), out)` in Python to rebuild it exactly.",
    ]
