"""Owns how a command line names an architecture: the architecture flags (`--preset`, `--arch`,
`--channels`, `--blocks`, kernels, stem, classes) and the `--arch` forms (a preset, an
architecture JSON file, or the printed form), each read into an `Architecture` or one sentence
saying what is wrong. No torch, no optuna.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from nas.arch.architecture import Architecture
from nas.arch.presets import PRESETS
from nas.cli.common import parse_int_list, positive_int, whole_number
from nas.errors import UserError


def add_arch_flags(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=sorted(PRESETS), help="a reference architecture")
    source.add_argument(
        "--arch",
        metavar="ARCH",
        help="a preset, an architecture JSON file, or a printed architecture like "
        "64,128,128,256/5,4,3,2/k3/s3",
    )
    parser.add_argument("--channels", type=parse_int_list, help="widths per layer: 64,128,128,256")
    parser.add_argument("--blocks", type=parse_int_list, help="blocks per layer: 5,4,3,2")
    parser.add_argument(
        "--conv-kernel", type=parse_int_list, default=(3,), help="main kernel(s) (default: 3)"
    )
    parser.add_argument(
        "--skip-kernel", type=parse_int_list, default=(1,), help="shortcut kernel(s) (default: 1)"
    )
    parser.add_argument(
        "--stem",
        type=positive_int,
        default=Architecture.stem,
        help="stem width (default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        type=whole_number(2),
        default=Architecture.num_classes,
        help="classes (default: %(default)s)",
    )


def arch_from_text(text: str) -> tuple[Architecture, str, dict[str, Any]]:
    """`--arch`: a preset's name, an architecture JSON file, or the printed form
    (`64,128,128,256/5,4,3,2/k3/s3`). Returns the architecture, a name for its run folder, and
    the preset's recipe (empty for the other two)."""
    from nas.arch.presets import PRESET_RECIPES

    if text in PRESETS:
        return PRESETS[text], text, dict(PRESET_RECIPES.get(text, {}))
    if text.endswith(".json") or Path(text).is_file():
        return load_arch_file(text), Path(text).stem, {}
    if "/" in text:
        try:
            arch = Architecture.parse(text)
        except (ValueError, TypeError) as error:
            raise UserError(f"invalid architecture: {error}") from None
        return arch, re.sub(r"[^0-9A-Za-z,._-]+", "_", arch.describe()).strip("_"), {}
    raise UserError(
        f"unknown preset or architecture {text!r}: give a preset ({', '.join(sorted(PRESETS))}), "
        "an architecture JSON file, or a printed architecture like 64,128,128,256/5,4,3,2/k3/s3"
    )


def load_arch_file(path: str) -> Architecture:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(f"cannot read architecture file {path}: {error.strerror}") from None
    try:
        return Architecture.from_json(text)
    except (ValueError, TypeError) as error:
        raise UserError(f"{path} is not a valid architecture: {error}") from None


def resolve_preset(name: str) -> Architecture:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def arch_from_flags(args: argparse.Namespace) -> Architecture:
    if args.preset:
        return resolve_preset(args.preset)
    if args.arch:
        return arch_from_text(args.arch)[0]
    if not args.channels or not args.blocks:
        raise UserError("give --preset NAME, --arch FILE.json, or both --channels and --blocks")

    def one_or_many(values: tuple[int, ...]) -> int | tuple[int, ...]:
        return values[0] if len(values) == 1 else values

    try:
        return Architecture(
            channels=args.channels,
            blocks=args.blocks,
            conv_kernel=one_or_many(args.conv_kernel),
            skip_kernel=one_or_many(args.skip_kernel),
            stem=args.stem,
            num_classes=args.classes,
        )
    except ValueError as error:
        raise UserError(f"invalid architecture: {error}") from None
