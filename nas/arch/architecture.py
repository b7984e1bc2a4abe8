"""Owns `Architecture`, the description of one ResNet of the searched family: its fields and
their validation, its residual layers (`layer_specs`), its JSON and its printed form. Its exact
size (parameters, MACs, the per-layer table) is `nas.arch.counts`.

The family (docs/reference-study.md): a stem convolution to `stem` channels with BatchNorm and ReLU;
then residual layers, layer i holding `blocks[i]` basic blocks of `channels[i]` output channels, the
first block of every layer after the first with stride 2; a basic block is conv(k) -> BN -> ReLU ->
conv(k) -> BN plus a shortcut (identity, or a skip-kernel convolution + BN where the block changes
stride or width) then ReLU; global average pooling and a linear head. Convolutions have no bias.

Two stems (`stem_type`, `STEMS`): `cifar` (the default, the reference study's) is a 3x3 stride-1
convolution, so layer 1 sees the image at full resolution, right for 32-px images; `imagenet` is
torchvision's ResNet stem, a 7x7 stride-2 convolution then a 3x3 stride-2 max-pool, so layer 1 sees
a quarter of the side: 16 px from 64-px images, 24 from 96, 56 from 224, where the CIFAR stem would
run every block of layer 1 at 16 to 49 times the pixels.

Claims: `Architecture.parse(arch.describe())` gives back `arch`, and `from_json(to_json())`
likewise; invalid fields raise ValueError saying which. This module imports no torch and no
optuna.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

KERNEL_RANGE = (1, 7)  # inclusive range of conv and skip kernel sizes the model builder supports


@dataclass(frozen=True)
class StemSpec:
    """The stem's shape: its convolution, and whether a max-pool follows the ReLU."""

    kernel: int  # the stem convolution's kernel size
    stride: int  # the stem convolution's stride
    pool: bool  # a POOL_KERNEL x POOL_KERNEL stride-2 max-pool (padding 1) after the ReLU

    def output_size(self, image_size: int) -> int:
        """Pixels per side into layer 1: each stride-2 step keeps ceil(size / 2)."""
        size = -(-image_size // self.stride)
        return -(-size // 2) if self.pool else size


POOL_KERNEL = 3  # the imagenet stem's max-pool: 3x3, stride 2, padding 1 (torchvision's)
DEFAULT_STEM_TYPE = "cifar"
STEMS = {
    "cifar": StemSpec(kernel=3, stride=1, pool=False),  # full resolution into layer 1 (32 px)
    "imagenet": StemSpec(kernel=7, stride=2, pool=True),  # a quarter of the side (64-224 px)
}


def _positive_ints(name: str, values: Any) -> tuple[int, ...]:
    try:
        items = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be a list of positive integers, got {values!r}") from None
    if not items:
        raise ValueError(f"{name} must name at least one residual layer")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            raise ValueError(f"{name} must hold positive integers, got {item!r}")
    return items


def _per_layer_kernels(name: str, value: Any, layers: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        kernels = (value,) * layers
    else:
        kernels = _positive_ints(name, value)
        if len(kernels) != layers:
            raise ValueError(
                f"{name} has {len(kernels)} entries but the architecture has {layers} layers"
            )
    low, high = KERNEL_RANGE
    for kernel in kernels:
        if isinstance(kernel, bool) or not isinstance(kernel, int) or not low <= kernel <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {kernel!r}")
    return kernels


@dataclass(frozen=True)
class Architecture:
    """One ResNet of the family; kernels are normalised to one entry per residual layer."""

    channels: tuple[int, ...]  # output channels of each residual layer
    blocks: tuple[int, ...]  # basic blocks in each residual layer
    conv_kernel: int | tuple[int, ...] = (
        3  # main convolution kernel: one for all layers or per layer
    )
    skip_kernel: int | tuple[int, ...] = 1  # projection shortcut kernel: one for all or per layer
    stem: int = 32  # output channels of the 3x3 stem convolution
    num_classes: int = 10  # outputs of the linear head
    in_channels: int = 3  # channels of the input images (3 for RGB)
    stem_type: str = DEFAULT_STEM_TYPE  # a key of STEMS: cifar (3x3, stride 1) or imagenet (/4)

    def __post_init__(self) -> None:
        channels = _positive_ints("channels", self.channels)
        blocks = _positive_ints("blocks", self.blocks)
        if len(blocks) != len(channels):
            raise ValueError(
                f"blocks has {len(blocks)} entries but channels has {len(channels)}; "
                "give one of each per residual layer"
            )
        layers = len(channels)
        # frozen dataclass: normalised values are written once, here
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(
            self, "conv_kernel", _per_layer_kernels("conv_kernel", self.conv_kernel, layers)
        )
        object.__setattr__(
            self, "skip_kernel", _per_layer_kernels("skip_kernel", self.skip_kernel, layers)
        )
        for name in ("stem", "num_classes", "in_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.stem_type not in STEMS:
            raise ValueError(f"stem_type must be one of {', '.join(STEMS)}, got {self.stem_type!r}")

    @property
    def stem_spec(self) -> StemSpec:
        return STEMS[self.stem_type]

    @property
    def num_layers(self) -> int:
        return len(self.channels)

    def layer_specs(self) -> list[LayerSpec]:
        """The residual layers with their input width and stride, in order."""
        specs = []
        in_width = self.stem
        for index, (width, count) in enumerate(zip(self.channels, self.blocks)):
            specs.append(
                LayerSpec(
                    in_channels=in_width,
                    out_channels=width,
                    blocks=count,
                    stride=1 if index == 0 else 2,
                    conv_kernel=self.conv_kernel[index],
                    skip_kernel=self.skip_kernel[index],
                )
            )
            in_width = width
        return specs

    def to_dict(self) -> dict[str, Any]:
        """Every field; `stem_type` only where it is not the default, so an architecture from
        before stems were a choice keeps its exact JSON (the search finds duplicates by it)."""
        data = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        if self.stem_type == DEFAULT_STEM_TYPE:
            del data["stem_type"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        if not isinstance(data, dict):
            raise ValueError(f"an architecture must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown architecture field(s): {', '.join(unknown)}")
        missing = [name for name in ("channels", "blocks") if name not in data]
        if missing:
            raise ValueError(f"architecture is missing field(s): {', '.join(missing)}")
        return cls(**data)

    def to_json(self) -> str:
        """Stable, human-readable JSON: fixed key order, lists on one line each."""
        items = [f'  "{key}": {json.dumps(value)}' for key, value in self.to_dict().items()]
        return "{\n" + ",\n".join(items) + "\n}"

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"architecture JSON is malformed: {error}") from None
        return cls.from_dict(data)

    def describe(self) -> str:
        """The printed form, e.g. `64,128,128,256 / 5,4,3,2 / k3 / s3`: channels, blocks, conv
        and skip kernels (one value when every layer shares it), then whatever differs from the
        defaults (`stem16`, `classes100`, `in1`, `imagenet-stem`). `Architecture.parse` reads it
        back exactly."""

        def compact(values: tuple[int, ...]) -> str:
            return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))

        parts = [
            ",".join(map(str, self.channels)),
            ",".join(map(str, self.blocks)),
            f"k{compact(self.conv_kernel)}",
            f"s{compact(self.skip_kernel)}",
        ]
        for tag, name in _OPTIONAL_TAGS.items():
            if getattr(self, name) != _DEFAULTS[name]:
                parts.append(f"{tag}{getattr(self, name)}")
        if self.stem_type != DEFAULT_STEM_TYPE:
            parts.append(f"{self.stem_type}{STEM_SUFFIX}")
        return " / ".join(parts)

    @classmethod
    def parse(cls, text: str) -> Architecture:
        """The architecture of a printed form (`describe()`), spaces allowed:
        `64,128,128,256/5,4,3,2/k3/s3`, per-layer kernels `k3,3,5,5`, and `stem16`,
        `classes100`, `in1`, `imagenet-stem` where they differ from the defaults. ValueError says
        what is wrong."""
        parts = [part.strip() for part in str(text).split("/")]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(
                f"{text!r} is not an architecture; write it like 64,128,128,256/5,4,3,2/k3/s3"
            )
        settings: dict[str, Any] = {
            "channels": _int_list(parts[0], "channels", text),
            "blocks": _int_list(parts[1], "blocks", text),
        }
        tags = {"k": "conv_kernel", "s": "skip_kernel", **_OPTIONAL_TAGS}
        for part in parts[2:]:
            if part.removesuffix(STEM_SUFFIX) in STEMS and part.endswith(STEM_SUFFIX):
                if "stem_type" in settings:
                    raise ValueError(f"{text!r} names the stem type twice")
                settings["stem_type"] = part.removesuffix(STEM_SUFFIX)
                continue
            match = re.fullmatch(r"([a-z]+)\s*([\d,\s]+)", part)
            if match is None or match.group(1) not in tags:
                known = ", ".join([*(f"{tag}N" for tag in tags), *(t + STEM_SUFFIX for t in STEMS)])
                raise ValueError(f"{part!r} in {text!r} is not one of {known}")
            name = tags[match.group(1)]
            if name in settings:
                raise ValueError(f"{text!r} gives {match.group(1)} twice")
            values = _int_list(match.group(2), name, text)
            if name in ("conv_kernel", "skip_kernel"):
                settings[name] = values[0] if len(values) == 1 else values
            elif len(values) == 1:
                settings[name] = values[0]
            else:
                raise ValueError(f"{name} takes one number in {text!r}")
        return cls(**settings)


def _int_list(text: str, name: str, whole: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"{name} in {whole!r} must be comma-separated numbers") from None


# the printed form's tags for fields shown only where they differ from their defaults
_OPTIONAL_TAGS = {"stem": "stem", "classes": "num_classes", "in": "in_channels"}
STEM_SUFFIX = "-stem"  # the printed form names a stem type other than cifar, e.g. imagenet-stem
_DEFAULTS = {f.name: f.default for f in fields(Architecture)}


@dataclass(frozen=True)
class LayerSpec:
    """One residual layer as the builder and the counter see it."""

    in_channels: int
    out_channels: int
    blocks: int
    stride: int  # stride of the first block; the others have stride 1
    conv_kernel: int
    skip_kernel: int

    def block_needs_projection(self, block_index: int) -> bool:
        """Whether block `block_index` needs a convolution shortcut instead of the identity."""
        if block_index > 0:
            return False
        return self.stride != 1 or self.in_channels != self.out_channels


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
