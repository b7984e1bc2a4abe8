"""Owns `build_model(arch)`: the PyTorch module for an `Architecture` of the ResNet family.

Claims: every convolution keeps `ceil(size / stride)` pixels for any kernel size 1..7, odd or
even, and any input size, so the main path and the shortcut of a block always agree. It pads
`k - 1` pixels in total, split `(k - 1) // 2` before and the rest after (PyTorch's own
`padding="same"` rule for even kernels, which PyTorch refuses with stride 2). The parameter
count is exactly `nas.arch.counts.count_params(arch)`; the tests check it for every preset and
hundreds of sampled architectures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch.architecture import POOL_KERNEL, Architecture, LayerSpec


class PaddedConv2d(nn.Conv2d):
    """A bias-free convolution that keeps ceil(size / stride) pixels for any kernel size."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1):
        before = (kernel - 1) // 2
        after = kernel - 1 - before
        symmetric = before == after
        super().__init__(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=before if symmetric else 0,
            bias=False,
        )
        # even kernels need one more pixel after than before; F.pad takes (left, right, top, bottom)
        self.extra_padding = None if symmetric else (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_padding is not None:
            x = F.pad(x, self.extra_padding)
        return super().forward(x)


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        PaddedConv2d(in_channels, out_channels, kernel, stride), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """conv(k) -> BN -> ReLU -> conv(k) -> BN, plus the shortcut, then ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, skip: nn.Module | None
    ):
        super().__init__()
        self.conv1 = PaddedConv2d(in_channels, out_channels, kernel, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = PaddedConv2d(out_channels, out_channels, kernel)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = skip if skip is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def build_layer(spec: LayerSpec) -> nn.Sequential:
    blocks = []
    for block_index in range(spec.blocks):
        first = block_index == 0
        in_width = spec.in_channels if first else spec.out_channels
        stride = spec.stride if first else 1
        skip = None
        if spec.block_needs_projection(block_index):
            skip = conv_bn(in_width, spec.out_channels, spec.skip_kernel, stride)
        blocks.append(BasicBlock(in_width, spec.out_channels, spec.conv_kernel, stride, skip))
    return nn.Sequential(*blocks)


def build_stem(arch: Architecture) -> nn.Sequential:
    """Convolution, BN, ReLU, then (imagenet stem) a max-pool that keeps ceil(size / 2) pixels."""
    spec = arch.stem_spec
    parts = [
        PaddedConv2d(arch.in_channels, arch.stem, spec.kernel, spec.stride),
        nn.BatchNorm2d(arch.stem),
        nn.ReLU(inplace=True),
    ]
    if spec.pool:
        parts.append(nn.MaxPool2d(POOL_KERNEL, stride=2, padding=POOL_KERNEL // 2))
    return nn.Sequential(*parts)


class ResNet(nn.Module):
    """Stem, residual layers, global average pooling, linear head."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.stem = build_stem(arch)
        self.layers = nn.Sequential(*(build_layer(spec) for spec in arch.layer_specs()))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(arch.channels[-1], arch.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def build_model(arch: Architecture) -> ResNet:
    """A freshly initialised model for `arch` (PyTorch's default initialisation, as the study)."""
    return ResNet(arch)
