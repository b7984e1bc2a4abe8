"""The model builder against the analytic counter, for presets and sampled architectures."""

import random

import pytest
import torch

from nas.arch import PRESETS, Architecture, count_params
from nas.model import build_model

# conftest.py: one torch thread; with two, another busy process on a 2-core machine made each
# forward/backward case take 1-4 s instead of 0.1 s
pytestmark = pytest.mark.usefixtures("one_thread")


def random_architecture(rng: random.Random) -> Architecture:
    layers = rng.randint(1, 6)
    per_layer = rng.random() < 0.5
    kernels = [rng.randint(1, 7) for _ in range(layers)]
    skips = [rng.randint(1, 7) for _ in range(layers)]
    return Architecture(
        channels=[rng.choice([3, 4, 6, 8, 12]) for _ in range(layers)],
        blocks=[rng.randint(1, 3) for _ in range(layers)],
        conv_kernel=kernels if per_layer else kernels[0],
        skip_kernel=skips if per_layer else skips[0],
        stem=rng.choice([4, 6, 8]),
        num_classes=rng.choice([2, 10, 100]),
    )


SAMPLED = [random_architecture(random.Random(seed)) for seed in range(300)]


def parameter_total(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_count_matches_the_built_model(name):
    arch = PRESETS[name]
    assert parameter_total(build_model(arch)) == count_params(arch)


def test_hundreds_of_sampled_architectures_count_exactly():
    kernels_seen = set()
    for arch in SAMPLED:
        kernels_seen.update(arch.conv_kernel + arch.skip_kernel)
        assert parameter_total(build_model(arch)) == count_params(arch), arch
    assert kernels_seen == set(range(1, 8))  # odd and even kernels were all exercised


@pytest.mark.parametrize("index", range(0, 300, 6))
def test_forward_and_backward_reach_every_parameter(index):
    torch.manual_seed(index)
    arch = SAMPLED[index]
    model = build_model(arch)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, arch.num_classes)
    out.square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kernel", range(1, 8))
@pytest.mark.parametrize("size", [32, 31, 7, 5, 1])
def test_every_kernel_keeps_ceil_size_over_stride(kernel, size):
    arch = Architecture((4, 6, 8), (1, 2, 1), conv_kernel=kernel, skip_kernel=kernel, stem=4)
    model = build_model(arch)
    features = model.features(torch.randn(2, 3, size, size))
    after_one = -(-size // 2)  # ceil(size / 2)
    expected = -(-after_one // 2)  # two stride-2 layers
    assert features.shape == (2, 8, expected, expected)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_identity_shortcut_only_where_stride_and_width_are_kept():
    model = build_model(Architecture((32, 32, 64), (2, 1, 1), skip_kernel=3, stem=32))
    shortcuts = [type(block.shortcut).__name__ for layer in model.layers for block in layer]
    # layer1 keeps 32 channels at stride 1: identity; later layers change stride: projection
    assert shortcuts == ["Identity", "Identity", "Sequential", "Sequential"]
    assert model.layers[1][0].shortcut[0].kernel_size == (3, 3)
    assert model.layers[1][0].shortcut[0].stride == (2, 2)
