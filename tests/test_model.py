"""The model builder against the analytic counters, for presets and sampled architectures of
both stems: parameters against `numel`, MACs against a count taken from the built model's
convolutions and linear layers as a forward pass runs them (forward hooks, module shapes only)."""

import random

import pytest
import torch

from nas.arch.architecture import STEMS, Architecture
from nas.arch.counts import count_macs, count_params, param_table
from nas.arch.presets import PRESETS
from nas.train.model import build_model

from helpers import hook_counted_macs

# conftest.py: one torch thread; with two, another busy process on a 2-core machine made each
# forward/backward case take 1-4 s instead of 0.1 s
pytestmark = pytest.mark.usefixtures("one_thread")


def random_architecture(rng: random.Random, stem_type: str | None = None) -> Architecture:
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
        stem_type=stem_type or rng.choice(sorted(STEMS)),
    )


SAMPLED = [random_architecture(random.Random(seed)) for seed in range(300)]


def parameter_total(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_count_matches_the_built_model(name):
    arch = PRESETS[name]
    assert parameter_total(build_model(arch)) == count_params(arch)


def test_hundreds_of_sampled_architectures_count_exactly():
    kernels_seen, stems_seen = set(), set()
    for arch in SAMPLED:
        kernels_seen.update(arch.conv_kernel + arch.skip_kernel)
        stems_seen.add(arch.stem_type)
        assert parameter_total(build_model(arch)) == count_params(arch), arch
    assert kernels_seen == set(range(1, 8))  # odd and even kernels were all exercised
    assert stems_seen == set(STEMS)


# tiny sampled nets (3-12 channels), fewer at 224 px where a forward pass costs more
MAC_CASES = [
    (stem_type, size, seed)
    for stem_type in sorted(STEMS)
    for size, samples in ((32, 8), (64, 5), (224, 3))
    for seed in range(samples)
]


@pytest.mark.parametrize("stem_type, image_size, seed", MAC_CASES)
def test_counted_params_and_macs_match_the_built_model(stem_type, image_size, seed):
    arch = random_architecture(random.Random(1000 + seed), stem_type)
    model = build_model(arch)
    assert parameter_total(model) == count_params(arch)
    assert hook_counted_macs(model, image_size) == count_macs(arch, image_size), arch.describe()


@pytest.mark.parametrize("stem_type", sorted(STEMS))
@pytest.mark.parametrize("image_size", [32, 64, 224, 97])
def test_the_param_table_shapes_are_the_built_model_s(stem_type, image_size):
    arch = Architecture((4, 6, 8), (1, 1, 1), conv_kernel=2, stem=4, stem_type=stem_type)
    model = build_model(arch).eval()
    x = torch.randn(1, 3, image_size, image_size)
    with torch.no_grad():
        shapes = [tuple(model.stem(x).shape[1:])]
        x = model.stem(x)
        for layer in model.layers:
            x = layer(x)
            shapes.append(tuple(x.shape[1:]))
    assert [shape for _, shape, _ in param_table(arch, image_size)][:-1] == shapes


@pytest.mark.parametrize("image_size", [224, 64])
def test_the_imagenet_stem_resnet18_layout_counts_as_torchvision_s_resnet18(image_size):
    # an implementation we did not write: torchvision's ResNet-18 has the imagenet stem, 1x1
    # projection shortcuts and basic blocks; its numel and hook-counted MACs are the reference
    import torchvision  # a dependency of nas (its CIFAR readers)

    reference = torchvision.models.resnet18(weights=None)
    arch = Architecture(
        (64, 128, 256, 512), (2, 2, 2, 2), skip_kernel=1, stem=64, num_classes=1000,
        stem_type="imagenet",
    )  # fmt: skip
    assert count_params(arch) == parameter_total(reference) == 11_689_512
    assert count_macs(arch, image_size) == hook_counted_macs(reference, image_size)


def test_the_imagenet_stem_is_a_strided_7x7_convolution_and_a_max_pool():
    arch = Architecture((8,), (1,), stem=16, stem_type="imagenet")
    stem = build_model(arch).stem
    assert [type(part).__name__ for part in stem] == [
        "PaddedConv2d",
        "BatchNorm2d",
        "ReLU",
        "MaxPool2d",
    ]
    assert stem[0].kernel_size == (7, 7) and stem[0].stride == (2, 2)
    # 7x7 conv: 3 x 16 x 49 weights, BN 2 x 16; the pool has none
    assert count_params(arch) - count_params(Architecture((8,), (1,), stem=16)) == 3 * 16 * 40
    # a quarter of the side into layer 1: 224 -> 112 -> 56, and odd sizes round up
    assert build_model(arch).features(torch.randn(1, 3, 224, 224)).shape[-1] == 56
    assert build_model(arch).features(torch.randn(1, 3, 33, 33)).shape[-1] == 9


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
