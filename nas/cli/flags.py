"""Owns the flag groups the commands that train share, and what they build: the recipe's flags
(`Recipe`), the data and device flags (`DataConfig`, `--image-size`, `--device`,
`--precision`, `--seed`) with the lines said before training about the image size and the
precision, and the store's flags (`--study`, `--storage`). Their defaults and choices come from
`nas.config.recipe` and `nas.config.search`, so building a parser loads neither torch nor optuna.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from nas.cli.common import non_negative_float, non_negative_int, positive_float, positive_int
from nas.config.data import DATASETS, DataConfig
from nas.config.machine import PRECISION_HELP, PRECISIONS, Machine
from nas.config.recipe import AUGMENTATIONS, OPTIMIZERS, POLICY_NAMES, Recipe
from nas.config.search import DEFAULT_STORAGE, DEFAULT_STUDY, STORAGE_ENV
from nas.errors import UserError


def add_recipe_flags(parser: argparse.ArgumentParser, inherited: bool = False) -> None:
    """The recipe's knobs; unset flags keep the reference recipe (or, `inherited`, the study's
    or the preset's). Defaults come from `Recipe`."""

    def default(value: object) -> str:
        return f"the study's or preset's, else {value}" if inherited else str(value)

    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help=f"optimizer (default: {default(Recipe.optimizer)})",
    )
    parser.add_argument(
        "--lr", type=positive_float, help=f"learning rate (default: {default(Recipe.lr)})"
    )
    parser.add_argument(
        "--momentum",
        type=non_negative_float,
        help=f"SGD momentum (default: {default(Recipe.momentum)})",
    )
    parser.add_argument(
        "--weight-decay",
        type=non_negative_float,
        help=f"weight decay (default: {default(Recipe.weight_decay)})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"images per step (default: {default(Recipe.batch_size)})",
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        help="training augmentation: recipe (rotation, flip, crop, AutoAugment), basic (no "
        f"AutoAugment) or none (default: {default(Recipe.augment)})",
    )
    parser.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        help="AutoAugment policy: torchvision's CIFAR-10, SVHN (digits) or ImageNet one "
        f"(default: {default('cifar10')})",
    )
    parser.add_argument(
        "--no-flip",
        dest="flip",
        action="store_const",
        const=False,
        help="no random horizontal flips (digits, text)",
    )


RECIPE_FLAGS = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "batch_size",
    "augment",
    "policy",
    "flip",
)


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe settings the command line sets explicitly (Recipe field -> value)."""
    return {name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) is not None}


def add_storage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--study", default=DEFAULT_STUDY, help=f"study name (default: {DEFAULT_STUDY})"
    )
    parser.add_argument(
        "--storage",
        help=f"any Optuna storage URL, or journal:///PATH for a journal file on a shared "
        f"filesystem (default: ${STORAGE_ENV} when set, else {DEFAULT_STORAGE}); put a URL "
        f"with a password in ${STORAGE_ENV} to keep it off the command line",
    )


def storage_from(args: argparse.Namespace) -> str:
    from nas.store.opening import default_storage

    if args.storage is not None and not args.storage.strip():
        raise UserError("--storage must be a storage URL, e.g. sqlite:///studies/nas.db")
    return args.storage or default_storage()


def add_data_flags(parser: argparse.ArgumentParser, inherited: bool = False) -> None:
    """Dataset and device flags. `inherited`: unset flags take the study's values."""

    def default(value: object) -> str:
        return "the study's" if inherited else str(value)

    parser.add_argument(
        "--dataset", choices=DATASETS, help=f"dataset (default: {default(DataConfig.dataset)})"
    )
    parser.add_argument(
        "--data-dir", help=f"dataset folder (default: {default(DataConfig.data_dir)})"
    )
    parser.add_argument(
        "--subset",
        type=positive_int,
        help=f"train on only N images, for quick runs (default: {default('all')})",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        metavar="N",
        help="train on images resized to N pixels square; every cost (MACs, memory, latency) "
        "and the exported model's input follow it (default: "
        + ("the study's" if inherited else "the dataset's own: 32 for CIFAR, an image folder's "
           "median side up to 224")
        + ")",
    )  # fmt: skip
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept CIFAR files already in --data-dir without checking their checksums",
    )
    parser.add_argument("--device", help=f"auto, cpu, cuda or cuda:N (default: {Machine.device})")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help=f"what training computes in; {PRECISION_HELP} (default: {Machine.precision})",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, help=f"training seed (default: {Recipe.seed})"
    )


def machine_from(args: argparse.Namespace, device: str | None = None) -> Machine:
    """The machine the device flags ask for (`device`: the command's own default, e.g.
    --smoke's cpu); every other machine setting keeps its default."""
    return Machine(
        device=args.device or device or Machine.device,
        precision=args.precision or Machine.precision,
    )


def data_config_from(args: argparse.Namespace, base: dict | None = None) -> DataConfig:
    settings = dict(base or {})
    for key in ("dataset", "data_dir", "subset", "image_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.no_verify:
        settings["verify"] = False
    return DataConfig.from_dict(settings)


def warn_about_precision(requested: str, device_names: Sequence[str]) -> None:
    """Print on stderr, once before training, each way the asked precision does not run as
    asked on these devices (one line each; a search's trials would repeat it otherwise)."""
    from nas.train.devices import resolve_device
    from nas.train.precision import precision_warnings

    try:
        devices = [resolve_device(name) for name in dict.fromkeys(device_names)]
    except UserError:
        return  # the run refuses the device itself, in its own words
    for line in precision_warnings(requested, devices):
        print(f"warning: {line}", file=sys.stderr, flush=True)


def announce_image_size(data: DataConfig) -> DataConfig:
    """`data` at the image size it trains at (`nas.data.loading.choose_image_size`), printing the
    one line that says the size and why wherever images are resized; a size whose images the
    memory cannot hold is refused here, before any cost is estimated at it."""
    from nas.config.machine import available_memory
    from nas.data.loading import check_memory, choose_image_size

    data, line = choose_image_size(data)
    if line is not None:
        print(line, flush=True)
    check_memory(data, available_memory())
    return data
