"""Architecture validation, JSON round trip and the exact analytic parameter count."""

import json
from pathlib import Path

import pytest

from nas.arch.architecture import Architecture
from nas.arch.counts import count_macs, count_params, param_table
from nas.arch.presets import PRESETS

from helpers import fresh_python

ROOT = Path(__file__).resolve().parents[1]


def test_paper_model1_has_the_reference_count():
    assert count_params(PRESETS["paper-model1"]) == 4_951_338


def test_presets_fit_the_reference_budget_except_resnet18():
    for name, arch in PRESETS.items():
        assert (count_params(arch) <= 5_000_000) == (name != "resnet18"), name


def test_kernels_normalise_to_per_layer_tuples():
    arch = Architecture(channels=[16, 32], blocks=[1, 2], conv_kernel=3, skip_kernel=[1, 2])
    assert arch.channels == (16, 32)
    assert arch.conv_kernel == (3, 3)
    assert arch.skip_kernel == (1, 2)
    assert arch == Architecture((16, 32), (1, 2), (3, 3), (1, 2))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"channels": (16, 32), "blocks": (1,)}, "blocks"),
        ({"channels": (), "blocks": ()}, "channels"),
        ({"channels": (16, 0), "blocks": (1, 1)}, "channels"),
        ({"channels": (16,), "blocks": (-1,)}, "blocks"),
        ({"channels": (16,), "blocks": (1,), "conv_kernel": 8}, "conv_kernel"),
        ({"channels": (16,), "blocks": (1,), "conv_kernel": 0}, "conv_kernel"),
        ({"channels": (16, 8), "blocks": (1, 1), "skip_kernel": (1, 2, 3)}, "skip_kernel"),
        ({"channels": (16,), "blocks": (1,), "stem": 0}, "stem"),
        ({"channels": (16,), "blocks": (1,), "num_classes": -3}, "num_classes"),
        ({"channels": (16.5,), "blocks": (1,)}, "channels"),
        ({"channels": (16,), "blocks": (1,), "stem_type": "resnet"}, "stem_type"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Architecture(**kwargs)


def test_the_stem_type_round_trips_and_old_json_without_it_is_the_cifar_stem():
    pooled = Architecture((32, 64), (2, 1), stem=24, stem_type="imagenet")
    text = pooled.to_json()
    assert '"stem_type": "imagenet"' in text
    assert Architecture.from_json(text) == pooled
    # an architecture.json written before stems were a choice (the CIFAR stem's JSON is still
    # exactly this: the search finds duplicate candidates by their JSON text)
    old = (
        '{"channels": [32, 64], "blocks": [2, 1], "conv_kernel": [3, 3], "skip_kernel": [1, 1], '
        '"stem": 24, "num_classes": 10, "in_channels": 3}'
    )
    assert Architecture.from_json(old).stem_type == "cifar"
    assert json.loads(Architecture.from_json(old).to_json()) == json.loads(old)


def test_json_round_trip_is_stable_and_readable():
    arch = Architecture((32, 64, 96), (3, 2, 1), conv_kernel=(3, 4, 5), skip_kernel=2, stem=24)
    text = arch.to_json()
    assert Architecture.from_json(text) == arch
    assert Architecture.from_json(text).to_json() == text
    assert '"channels": [32, 64, 96]' in text
    assert Architecture.from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "malformed"),
        ('{"channels": [1], "blocks": [1], "colour": 3}', "unknown"),
        ('{"channels": [1]}', "missing"),
        ("[1, 2]", "object"),
    ],
)
def test_bad_json_is_refused(text, problem):
    with pytest.raises(ValueError, match=problem):
        Architecture.from_json(text)


def test_param_table_sums_to_the_count_and_tracks_shapes():
    arch = PRESETS["paper-model5"]
    rows = param_table(arch, image_size=32)
    assert sum(params for _, _, params in rows) == count_params(arch)
    assert [shape for _, shape, _ in rows] == [
        (32, 32, 32),
        (32, 32, 32),
        (64, 16, 16),
        (128, 8, 8),
        (128, 4, 4),
        (256, 2, 2),
        (10,),
    ]


def test_macs_of_a_tiny_net_match_the_hand_count():
    arch = Architecture((8, 16), (1, 1), stem=8, conv_kernel=3, skip_kernel=1)  # 10 classes
    stem = 3 * 8 * 3 * 3 * 8 * 8  # 3 -> 8 channels, 3x3, on 8x8 pixels
    layer_1 = 2 * (8 * 8 * 3 * 3 * 8 * 8)  # two 3x3 convs 8 -> 8 at 8x8, identity shortcut
    layer_2 = (8 * 16 + 16 * 16) * 3 * 3 * 4 * 4  # 8 -> 16 then 16 -> 16, 3x3, stride 2: 4x4
    shortcut = 8 * 16 * 1 * 1 * 4 * 4  # the 1x1 projection where width and stride change
    head = 16 * 10
    assert count_macs(arch, 8) == stem + layer_1 + layer_2 + shortcut + head == 145_056


def test_macs_of_paper_model1_match_the_reference_estimate():
    # RECIPE/issue 7: one training step of paper-model1 is about 4.70 GFLOP per image, i.e.
    # 3 x forward multiply-accumulates x 2 FLOP per MAC.
    gflop_per_training_image = count_macs(PRESETS["paper-model1"], 32) * 2 * 3 / 1e9
    assert gflop_per_training_image == pytest.approx(4.70, abs=0.01)


def test_arch_presets_space_and_files_import_neither_torch_nor_optuna():
    # a fresh interpreter: this one has imported torch and optuna long ago
    code = (
        "import sys\n"
        "import nas.arch.architecture, nas.arch.counts, nas.arch.presets, nas.arch.space\n"
        "import nas.arch.space_format, nas.files\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'optuna')))"
    )
    assert fresh_python(code) == "[]"
