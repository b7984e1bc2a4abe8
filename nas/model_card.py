"""Owns the model card, `MODEL.md`, that every finished run folder holds: what the model is,
how well it does, what it was trained on and how, and the commands that rebuild, export and
predict with it.

`model_card(arch, metrics, run_dir)` renders it from the architecture and the run's metrics
dictionary (what metrics.json holds) alone, so it can be rewritten for any finished run. MACs
are `nas.arch.count_macs` at the trained image size (convolutions and the head); FLOPs are
shown as 2 x MACs. The export contract it states is `nas.export.input_contract`, the same line
the exported files carry in their metadata. Imports no optuna.
"""

from __future__ import annotations

import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

from nas.arch import Architecture, count_macs, param_table
from nas.data import DataConfig
from nas.export import DEFAULT_FILES, input_contract
from nas.train import TrainConfig

MODEL_CARD = "MODEL.md"  # the model card's name in a run folder
# What `nas retrain --arch` sets from its flags; any other setting comes from the defaults.
DATA_FLAGS = {"dataset": "--dataset", "data_dir": "--data-dir", "subset": "--subset"}
RECIPE_FLAGS = {"epochs": "--epochs", "device": "--device", "seed": "--seed"}


def model_card(arch: Architecture, metrics: dict[str, Any], run_dir: str | Path) -> str:
    """The Markdown text of a finished run's MODEL.md."""
    run = shlex.quote(str(run_dir))
    data = metrics.get("dataset", {})
    recipe = metrics.get("config", {})
    size = int(data.get("image_size", DataConfig.image_size))
    macs = count_macs(arch, size)
    classes = metrics.get("classes", [])
    normalization = metrics.get("normalization", {})
    lines = [
        f"# Model card: {Path(run_dir).name}",
        "",
        f"A ResNet image classifier, `{arch.describe()}` (widths / blocks / conv kernel / skip "
        f"kernel), for {size}x{size} RGB images of {len(classes)} classes, trained by `nas`.",
        "",
        "| | |",
        "|---|---|",
        f"| test accuracy | {percent(metrics['test_accuracy'])} |",
        f"| test loss | {metrics['test_loss']:.4f} |",
        f"| parameters | {metrics['params']:,} |",
        f"| MACs per image | {macs:,} ({2 * macs / 1e9:.3f} GFLOPs at 2 FLOPs per MAC) |",
        f"| epochs | {metrics['epochs_completed']} of {metrics.get('epochs_planned', '?')} "
        f"planned; best (lowest validation loss, the weights kept) epoch "
        f"{metrics['best_epoch'] or 'none: the initial weights'} |",
        f"| validation accuracy at the best epoch | {percent(metrics.get('best_val_accuracy'))} |",
        f"| training time | {metrics.get('seconds') or 0:,.0f} s "
        f"({metrics.get('seconds_per_epoch') or 0:.1f} s per epoch) on {metrics.get('device')} |",
        f"| classes | {', '.join(map(str, classes))} |",
        "",
        "## Architecture",
        "",
        f"`{arch.describe()}`, stem {arch.stem} channels; the full description is "
        "`architecture.json`. Per part, for one image:",
        "",
        "| part | output | params |",
        "|---|---|---:|",
        *(
            f"| {name} | {'x'.join(map(str, shape))} | {params:,} |"
            for name, shape, params in param_table(arch, size)
        ),  # fmt: skip
        f"| **total** | | **{metrics['params']:,}** |",
        "",
        "## Data and split",
        "",
        f"Dataset `{data.get('dataset')}` from `{data.get('data_dir')}`, images held at "
        f"{size}x{size}. Validation: {data.get('val_fraction', DataConfig.val_fraction):.0%} of "
        f"the training split, held out with split seed {data.get('split_seed', 0)}"
        + (f"; training on the first {data['subset']:,} images" if data.get("subset") else "")
        + ". The test split is separate and was evaluated once, with the best weights.",
        "",
        f"Normalisation (of pixels scaled to [0, 1]): mean {normalization.get('mean')}, "
        f"std {normalization.get('std')}.",
        "",
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in recipe.items()),
        "",
        "## Files",
        "",
        "`model.safetensors` (best weights), `architecture.json`, `metrics.json`, `history.csv` "
        "(one row per epoch), `curves.html` (loss and accuracy per epoch, train vs validation), "
        "`checkpoint.ckpt` (resumable state), this card.",
        "",
        "## Use it",
        "",
        "```",
        f"nas predict {run} IMAGE_OR_FOLDER --top 3      # top classes with probabilities",
        f"nas export {run} --format onnx                # -> {DEFAULT_FILES['onnx']}, verified",
        f"nas export {run} --format torchscript         # -> {DEFAULT_FILES['torchscript']}",
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
        f"normalisation: input {input_contract(size)}; output `logits` (N, {len(classes)}) in "
        "the class order above. The ONNX export needs `pip install -e '.[export]'`.",
        "",
        "## Rebuild",
        "",
        "```",
        rebuild_command(metrics, run_dir),
        "```",
        *rebuild_notes(metrics),
    ]
    return "\n".join(lines) + "\n"


def percent(value: float | None) -> str:
    return "n/a (no epoch trained)" if value is None else f"{value:.2%}"


def rebuild_command(metrics: dict[str, Any], run_dir: str | Path) -> str:
    """The `nas retrain` command that trains this run again, into a new folder."""
    source = metrics.get("source", {})
    recipe = metrics.get("config", {})
    out = shlex.quote(f"{run_dir}-rebuilt")
    parts = ["nas retrain"]
    if "study" in source:  # the study supplies the data and the recipe
        parts += [f"--study {shlex.quote(str(source['study']))}"]
        if source.get("storage"):
            parts += [f"--storage {shlex.quote(str(source['storage']))}"]
        parts += [f"--trial {source['trial']}"]
    else:
        parts += [f"--arch {shlex.quote(str(Path(run_dir) / 'architecture.json'))}"]
        data = metrics.get("dataset", {})
        parts += [
            f"{flag} {shlex.quote(str(data[key]))}"
            for key, flag in DATA_FLAGS.items()
            if data.get(key) is not None
        ]
        if data.get("verify") is False:
            parts += ["--no-verify"]
    parts += [
        f"{flag} {shlex.quote(str(recipe[key]))}"
        for key, flag in RECIPE_FLAGS.items()
        if key in recipe
    ]
    return " ".join(parts + [f"--out {out}"])


def rebuild_notes(metrics: dict[str, Any]) -> list[str]:
    """For a run of a named architecture: the settings the command line cannot give that
    differ from the defaults (set them through `nas.retrain.retrain` in Python)."""
    if "study" in metrics.get("source", {}):
        return []
    differing = []
    for config_class, values, flags in (
        (DataConfig, metrics.get("dataset", {}), DATA_FLAGS.keys() | {"verify", "download"}),
        (TrainConfig, metrics.get("config", {}), RECIPE_FLAGS.keys()),
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
        "defaults: pass them to `nas.retrain.retrain(arch, DataConfig(...), TrainConfig(...), "
        "out)` in Python to rebuild it exactly.",
    ]
