"""Search-space files: the shipped spaces, validation messages, sampling, extremes and size."""

import contextlib
import io
import itertools
from pathlib import Path

import optuna
import pytest

from nas.arch.counts import count_macs, count_params
from nas.arch.presets import PRESETS
from nas.arch.space import SearchSpace
from nas.arch.space_format import SpaceError
from nas.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
RESNET = ROOT / "search_spaces" / "resnet.yaml"
TINY = ROOT / "search_spaces" / "tiny.yaml"

VALID = """\
layers: [2, 3]
channels: [8, 16]
blocks: [1, 2]
conv_kernel: [3]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_reference_space_matches_the_issue_and_a_5m_budget_rejects_part_of_it():
    space = SearchSpace.load(RESNET)
    assert (space.min_layers, space.max_layers) == (4, 5)
    widths = {w for choices in space.channel_choices for w in choices}
    assert min(widths) == 32 and max(widths) == 512
    assert {r for pair in space.block_ranges for r in pair} >= {1, 10}
    assert space.conv_kernels == (3, 4, 5) and space.skip_kernels == (1, 2, 3)
    assert count_params(space.smallest(10)) < 5_000_000 < count_params(space.largest(10))
    assert 0.1 < space.fraction_under(5_000_000, 10, samples=3000) < 0.9


LARGE_IMAGES = ROOT / "search_spaces" / "large-images.yaml"


@pytest.mark.parametrize("image_size, classes", [(64, 200), (96, 10)])  # Tiny-ImageNet, STL-10
def test_the_large_images_space_fits_5m_at_64_and_96_px(image_size, classes):
    from nas.arch.counts import count_macs
    from nas.costs.budgets import check_feasible

    space = SearchSpace.load(LARGE_IMAGES)
    assert space.stem_types == ("cifar", "imagenet")
    smallest = space.smallest(classes)
    assert count_params(smallest) <= 5_000_000 < count_params(space.largest(classes))
    assert 0.1 < space.fraction_under(5_000_000, classes, samples=3000) < 0.9
    # the search's own check passes with 5M parameters and a MAC budget that only the imagenet
    # stem's quarter-side layer 1 meets at this size
    cheapest = space.smallest(classes, by=lambda a: count_macs(a, image_size))
    assert cheapest.stem_type == "imagenet"
    macs = count_macs(cheapest, image_size)
    assert macs < count_macs(smallest, image_size) / 4
    check_feasible(space, 5_000_000, classes, macs, image_size)


def test_a_searched_stem_type_is_a_parameter_and_extremes_cover_both_stems(tmp_path):
    text = VALID + "stem_type: [cifar, imagenet]\nstem: [4, 6]\n"
    space = SearchSpace.load(write(tmp_path, text))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    arch = space.suggest(trial, 10)
    assert trial.params["stem_type"] == arch.stem_type
    assert space.from_params(trial.params, 10) == arch
    assert space.params_for(arch) == trial.params
    values = {
        "layers": [2, 3],
        "stem": [4, 6],
        "stem_type": ["cifar", "imagenet"],
        **{f"channels_{i}": [8, 16] for i in (1, 2, 3)},
        **{f"blocks_{i}": [1, 2] for i in (1, 2, 3)},
        "conv_kernel": [3],
        "skip_kernel": [1],
    }
    counts, macs = set(), set()
    for combo in itertools.product(*values.values()):
        arch = space.from_params(dict(zip(values, combo)), 10)
        counts.add(count_params(arch))
        macs.add(count_macs(arch, 64))
    # by MACs too (64 px): the fewest are the imagenet stem's, the most the cifar stem's
    by_macs = lambda a: count_macs(a, 64)  # noqa: E731
    assert count_macs(space.smallest(10, by_macs), 64) == min(macs)
    assert count_macs(space.largest(10, by_macs), 64) == max(macs)
    assert space.largest(10, by_macs).stem_type == "cifar"
    # the imagenet stem's 7x7 convolution has more parameters: the largest is imagenet's
    assert count_params(space.smallest(10)) == min(counts)
    assert space.largest(10).stem_type == "imagenet"
    assert count_params(space.largest(10)) == max(counts)
    assert space.size() == 2 * 2 * (4 * 4 + 4 * 4 * 4)
    # a space of one stem type cannot express the other
    cifar_only = SearchSpace.load(write(tmp_path, VALID))
    assert cifar_only.params_for(arch.__class__((8, 8), (1, 1), stem_type="imagenet")) is None
    assert "stem_type" not in cifar_only.params_for(arch.__class__((8, 8), (1, 1), stem=32))


def test_tiny_space_holds_only_small_nets():
    space = SearchSpace.load(TINY)
    assert count_params(space.largest(10)) < 50_000


def test_smallest_and_largest_are_exact_on_an_enumerable_space(tmp_path):
    text = """\
layers: [1, 2]
channels: [[4, 8], [2, 16]]
blocks: [[1, 2], [1, 3]]
conv_kernel: [2, 3]
skip_kernel: [1, 4]
stem: [4, 6]
"""
    space = SearchSpace.load(write(tmp_path, text))
    values = {
        "layers": [1, 2],
        "stem": [4, 6],
        "channels_1": [4, 8],
        "channels_2": [2, 16],
        "blocks_1": [1, 2],
        "blocks_2": [1, 2, 3],
        "conv_kernel": [2, 3],
        "skip_kernel": [1, 4],
    }
    counts = set()
    for combo in itertools.product(*values.values()):
        params = dict(zip(values, combo))
        counts.add(count_params(space.from_params(params, 10)))
    assert count_params(space.smallest(10)) == min(counts)
    assert count_params(space.largest(10)) == max(counts)
    # 1 layer: 2 stems x 2 widths x 2 blocks x 4 kernel pairs; 2 layers: 2x2x2x2x3x4
    assert space.size() == 2 * 2 * 2 * 4 + 2 * 2 * 2 * 2 * 3 * 4


def test_suggest_uses_stable_names_and_stays_in_the_space():
    space = SearchSpace.load(RESNET)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        arch = space.suggest(trial, num_classes=100)
        layers = trial.params["layers"]
        expected = {"layers", "conv_kernel", "skip_kernel"}
        expected |= {f"channels_{i}" for i in range(1, layers + 1)}
        expected |= {f"blocks_{i}" for i in range(1, layers + 1)}
        assert set(trial.params) == expected
        assert arch.num_layers == layers and arch.num_classes == 100
        assert space.from_params(trial.params, num_classes=100) == arch
        study.tell(trial, 0.0)


def test_per_layer_kernels_get_one_parameter_per_layer(tmp_path):
    space = SearchSpace.load(write(tmp_path, VALID + "skip_kernel: [1, 2]\nkernels: per_layer\n"))
    trial = optuna.create_study().ask()
    arch = space.suggest(trial, 10)
    names = {f"conv_kernel_{i}" for i in range(1, arch.num_layers + 1)}
    assert names <= set(trial.params)
    assert "conv_kernel" not in trial.params


def test_the_reference_presets_lie_in_the_reference_space():
    space = SearchSpace.load(RESNET)
    for name in ("paper-model1", "paper-model2", "paper-model3", "paper-model5"):
        arch = PRESETS[name]
        assert space.min_layers <= arch.num_layers <= space.max_layers
        for index, (width, blocks) in enumerate(zip(arch.channels, arch.blocks)):
            assert width in space.channel_choices[index], name
            low, high = space.block_ranges[index]
            assert low <= blocks <= high, name


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("layers: [2, 3\nchannels: [8]\n", "not valid YAML"),
        (VALID + "colour: red\n", "colour: unknown key"),
        (
            VALID.replace("channels: [8, 16]", "channels: []"),
            "channels: the list of choices is empty",
        ),
        (VALID.replace("layers: [2, 3]", "layers: [3, 2]"), "layers: the range is inverted"),
        (VALID.replace("blocks: [1, 2]", "blocks: [4, 1]"), "blocks: the range is inverted"),
        (VALID.replace("conv_kernel: [3]", "conv_kernel: [9]"), "conv_kernel: kernel sizes"),
        (VALID.replace("channels: [8, 16]", "channels: [[8], [16]]"), "channels: has 2 per-layer"),
        (VALID.replace("channels: [8, 16]", "channels: [8, -1]"), "positive integers"),
        (VALID + "kernels: sometimes\n", "kernels: must be one of"),
        (VALID.replace("blocks: [1, 2]\n", ""), "blocks: is required"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        (VALID.replace("layers: [2, 3]", "layers: [0, 3]"), "at least 1"),
        (VALID + "stem_type: resnet\n", "stem_type: must be one of cifar, imagenet"),
        (VALID + "stem_type: [cifar, cifar]\n", "stem_type: choices repeat"),
        (VALID + "stem_type: []\n", "stem_type: must be one of"),
        (VALID + "description: [a, b]\n", "description: must be one line"),
    ],
)
def test_malformed_files_give_one_sentence_naming_file_and_key(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as caught:
        SearchSpace.load(path)
    message = str(caught.value)
    assert fragment in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_file_names_it(tmp_path):
    with pytest.raises(SpaceError, match="does not exist"):
        SearchSpace.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text",
    ["layers: [2, 3]\nchannels: [8]\nblocks: [1, 2]\nconv_kernel: [3]\nwidth: 3\n", "layers: ["],
)
def test_cli_reports_bad_space_files_with_exit_2_and_no_traceback(tmp_path, text):
    """`nas space` in this process: an error that escapes as an exception (a traceback), exits
    otherwise than 2 or says more than one line fails. The same through a real `python -m nas
    space` process is test_faults.py's test_real_processes_give_one_sentence_exit_2_...."""
    path = write(tmp_path, text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["space", str(path)])
    assert status == 2
    assert "Traceback" not in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1
    assert str(path) in err.getvalue()
