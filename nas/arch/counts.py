"""Owns the exact size of an `Architecture`: its parameters, its multiply-accumulates, and the
per-layer table (`nas params`, the model card) of output shapes and parameters.

Claims: `count_params(arch)` equals `sum(p.numel() for p in build_model(arch).parameters())` for
every valid architecture and both stems, computed from the numbers alone (nothing is built),
so the search can reject an over-budget candidate before anything is built; `count_macs(arch,
size)` equals the multiply-accumulates of the built model's convolutions and head counted from
their shapes during a forward pass, at any image size. This module imports no torch and no optuna.
"""

from __future__ import annotations

from nas.arch.architecture import Architecture, LayerSpec


def _conv_bn(in_channels: int, out_channels: int, kernel: int) -> int:
    """Parameters of a bias-free convolution followed by BatchNorm (weight and bias)."""
    return in_channels * out_channels * kernel * kernel + 2 * out_channels


def layer_params(spec: LayerSpec) -> int:
    """Exact parameter count of one residual layer."""
    total = 0
    for block_index in range(spec.blocks):
        in_width = spec.in_channels if block_index == 0 else spec.out_channels
        total += _conv_bn(in_width, spec.out_channels, spec.conv_kernel)
        total += _conv_bn(spec.out_channels, spec.out_channels, spec.conv_kernel)
        if spec.block_needs_projection(block_index):
            total += _conv_bn(in_width, spec.out_channels, spec.skip_kernel)
    return total


def stem_params(arch: Architecture) -> int:
    return _conv_bn(arch.in_channels, arch.stem, arch.stem_spec.kernel)  # the pool has none


def head_params(arch: Architecture) -> int:
    return arch.channels[-1] * arch.num_classes + arch.num_classes


def count_params(arch: Architecture) -> int:
    """Exact number of trainable parameters of `build_model(arch)`, without building it."""
    return (
        stem_params(arch)
        + sum(layer_params(spec) for spec in arch.layer_specs())
        + head_params(arch)
    )


def param_table(arch: Architecture, image_size: int) -> list[tuple[str, tuple[int, ...], int]]:
    """Rows of (part, output shape for one square image, parameters): stem, each layer, head."""
    size = arch.stem_spec.output_size(image_size)
    rows = [("stem", (arch.stem, size, size), stem_params(arch))]
    for index, spec in enumerate(arch.layer_specs()):
        size = -(-size // spec.stride)  # convolutions keep ceil(size / stride) pixels
        rows.append((f"layer{index + 1}", (spec.out_channels, size, size), layer_params(spec)))
    rows.append(("head", (arch.num_classes,), head_params(arch)))
    return rows


def deepest_side(arch: Architecture, image_size: int) -> int:
    """Pixels per side of the last layer's output on a square `image_size` image: the smallest
    map any BatchNorm of the network normalises."""
    size = arch.stem_spec.output_size(image_size)
    for spec in arch.layer_specs():
        size = -(-size // spec.stride)  # convolutions keep ceil(size / stride) pixels
    return size


def count_macs(arch: Architecture, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on a square image (convolutions and head).

    BatchNorm, ReLU and pooling are left out: they are a rounding error next to the convolutions.
    """
    stem = arch.stem_spec
    size = -(-image_size // stem.stride)  # the stem convolution's output side
    macs = arch.in_channels * arch.stem * stem.kernel**2 * size * size
    size = stem.output_size(image_size)
    for spec in arch.layer_specs():
        for block_index in range(spec.blocks):
            stride = spec.stride if block_index == 0 else 1
            in_width = spec.in_channels if block_index == 0 else spec.out_channels
            size = -(-size // stride)  # every convolution keeps ceil(size / stride)
            per_pixel = spec.out_channels * spec.conv_kernel**2
            macs += (in_width + spec.out_channels) * per_pixel * size * size
            if spec.block_needs_projection(block_index):
                macs += in_width * spec.out_channels * spec.skip_kernel**2 * size * size
    return macs + arch.channels[-1] * arch.num_classes
