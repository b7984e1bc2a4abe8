"""Owns `SearchSpace`: a validated search space (read through `nas.arch.space_format`, the only YAML
reader), the built-in spaces, and sampling from it.

A search space file (see nas/spaces/resnet.yaml and the README) names, for the ResNet family
of `nas.arch.architecture`: the stem width and stem type (`cifar`, `imagenet`: one, or a list to
search), the range of residual layer counts, width choices and block-count ranges (one for every
layer, or one
per layer), conv and skip kernel choices, whether the kernels are shared by all layers or chosen
per layer, and a one-line `description` of what the space is for (`nas space --list` shows it).

Built-in spaces ship inside the package (`nas/spaces/*.yaml`, mirrored in the repository's
`search_spaces/` for reading and copying) and are named by their file stem: `SearchSpace.resolve`
takes a built-in name (`resnet`, `tiny`, `large-images`) or a path, from any working directory.

Claims: `SearchSpace.load` refuses any malformed file with a `SpaceError` naming the file, the key
and the problem (`nas.arch.space_format`'s); `suggest(trial)` samples through Optuna's
`suggest_int`/`suggest_categorical` with stable parameter names (`layers`, `stem`, `stem_type`,
`channels_1`, `blocks_1`, `conv_kernel` or `conv_kernel_1`, ...; `stem` and `stem_type` only where
the space offers more than one); `smallest()`/`largest()` are exact, because for a fixed layer
count and stem type the parameter count never decreases when a width, block count or kernel grows.
No torch, no optuna import: a trial is anything with Optuna's `suggest_int`/`suggest_categorical`
methods.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nas.arch.architecture import DEFAULT_STEM_TYPE, Architecture
from nas.arch.counts import count_params
from nas.arch.space_format import SpaceError, parse_space

BUILTIN_SUFFIX = ".yaml"


def builtin_spaces() -> dict[str, str]:
    """The spaces shipped with the package: name -> YAML text."""
    folder = resources.files("nas") / "spaces"
    return {
        entry.name.removesuffix(BUILTIN_SUFFIX): entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(BUILTIN_SUFFIX)
    }


# A decision function: (parameter name, choices or inclusive int range) -> chosen value
PickInt = Callable[[str, int, int], int]
PickChoice = Callable[[str, Sequence[Any]], Any]  # int choices, and the stem type's names


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Per-layer entries are expanded to `max_layers` entries."""

    name: str
    stem_choices: tuple[int, ...]  # stem widths to choose from (one entry: fixed)
    min_layers: int  # fewest residual layers
    max_layers: int  # most residual layers
    channel_choices: tuple[tuple[int, ...], ...]  # width choices of each layer
    block_ranges: tuple[tuple[int, int], ...]  # inclusive block-count range of each layer
    conv_kernels: tuple[int, ...]  # main-convolution kernel choices
    skip_kernels: tuple[int, ...]  # projection-shortcut kernel choices
    kernels_per_layer: bool  # True: each layer draws its own kernels; False: one pair for all
    stem_types: tuple[str, ...] = (DEFAULT_STEM_TYPE,)  # stem types to choose from (keys of STEMS)
    description: str = ""  # what the space is for, one line (nas space --list)
    text: str = ""  # the file's text, recorded with a study so it can be rebuilt exactly
    source: str = "<text>"  # where the text came from, for error messages

    # ---- reading -------------------------------------------------------------------------

    @classmethod
    def resolve(cls, name_or_path: str | Path) -> SearchSpace:
        """A built-in space by name (`resnet`, `tiny`, ...), else the YAML file at that path."""
        text = str(name_or_path)
        builtin = builtin_spaces()
        if text in builtin:
            return cls.from_text(builtin[text], source=f"the built-in space {text!r}")
        if not Path(text).exists() and "/" not in text and not text.endswith((".yaml", ".yml")):
            raise SpaceError(
                f"there is no built-in search space named {text!r}; choose one of "
                f"{', '.join(builtin)} (nas space --list) or pass a YAML file's path"
            )
        return cls.load(text)

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise SpaceError(
                f"search space file {path} does not exist; pass --space with a YAML file's "
                f"path or a built-in space's name ({', '.join(builtin_spaces())})"
            ) from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
            raise SpaceError(f"search space file {path} cannot be read: {error}") from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> SearchSpace:
        """The space a file's text describes; `SpaceError` naming `source`, key and problem."""
        return cls(**parse_space(text, source), text=text, source=source)

    # ---- sampling ------------------------------------------------------------------------

    def decide(self, pick_int: PickInt, pick_choice: PickChoice, num_classes: int) -> Architecture:
        """The one place that walks the space; `suggest` and `sample` differ only in who picks."""
        layers = pick_int("layers", self.min_layers, self.max_layers)
        stem = pick_choice("stem", self.stem_choices) if len(self.stem_choices) > 1 else None
        stem_type = self.stem_types[0]
        if len(self.stem_types) > 1:
            stem_type = pick_choice("stem_type", self.stem_types)
        channels, blocks = [], []
        for index in range(layers):
            channels.append(pick_choice(f"channels_{index + 1}", self.channel_choices[index]))
            blocks.append(pick_int(f"blocks_{index + 1}", *self.block_ranges[index]))
        if self.kernels_per_layer:
            conv = tuple(
                pick_choice(f"conv_kernel_{i + 1}", self.conv_kernels) for i in range(layers)
            )
            skip = tuple(
                pick_choice(f"skip_kernel_{i + 1}", self.skip_kernels) for i in range(layers)
            )
        else:
            conv = pick_choice("conv_kernel", self.conv_kernels)
            skip = pick_choice("skip_kernel", self.skip_kernels)
        return Architecture(
            channels=tuple(channels),
            blocks=tuple(blocks),
            conv_kernel=conv,
            skip_kernel=skip,
            stem=stem if stem is not None else self.stem_choices[0],
            num_classes=num_classes,
            stem_type=stem_type,
        )

    def suggest(self, trial: Any, num_classes: int) -> Architecture:
        """Sample an architecture through an Optuna trial (records the params on the trial)."""
        return self.decide(
            trial.suggest_int,
            lambda name, choices: trial.suggest_categorical(name, list(choices)),
            num_classes,
        )

    def sample(self, rng: random.Random, num_classes: int) -> Architecture:
        """Sample uniformly like Optuna's random sampler, without a study (for estimates)."""
        return self.decide(
            lambda _name, low, high: rng.randint(low, high),
            lambda _name, choices: rng.choice(list(choices)),
            num_classes,
        )

    def from_params(self, params: dict[str, Any], num_classes: int) -> Architecture:
        """The architecture a trial's recorded `params` describe."""

        def look_up(name: str, *_: Any) -> Any:
            if name not in params:
                raise SpaceError(f"{self.source}: parameter {name} is missing from the trial")
            return params[name] if name == "stem_type" else int(params[name])

        return self.decide(look_up, look_up, num_classes)

    def params_for(self, arch: Architecture) -> dict[str, Any] | None:
        """The trial parameters under which this space builds exactly `arch` (for enqueuing
        it), or None when the space cannot express it."""
        wanted: dict[str, Any] = {
            "layers": arch.num_layers,
            "stem": arch.stem,
            "stem_type": arch.stem_type,
        }
        for index, (width, blocks) in enumerate(zip(arch.channels, arch.blocks), start=1):
            wanted[f"channels_{index}"], wanted[f"blocks_{index}"] = width, blocks
        for name in ("conv_kernel", "skip_kernel"):
            kernels = getattr(arch, name)
            if self.kernels_per_layer:
                wanted.update({f"{name}_{i}": k for i, k in enumerate(kernels, start=1)})
            elif len(set(kernels)) == 1:
                wanted[name] = kernels[0]
        chosen: dict[str, Any] = {}

        class Outside(Exception):
            pass

        def pick(name: str, allowed: Callable[[Any], bool]) -> Any:
            if name not in wanted or not allowed(wanted[name]):
                raise Outside
            chosen[name] = wanted[name]
            return wanted[name]

        try:
            built = self.decide(
                lambda name, low, high: pick(name, lambda value: low <= value <= high),
                lambda name, choices: pick(name, lambda value: value in choices),
                arch.num_classes,
            )
        except Outside:
            return None
        return chosen if built == arch else None

    # ---- extremes and size ---------------------------------------------------------------

    def _extremes(self, pick: Callable[[Sequence[int]], int], num_classes: int):
        """For every layer count and stem type, every other choice at `pick` (min or max)."""
        return [
            self.decide(
                lambda name, low, high, n=layers: n if name == "layers" else pick((low, high)),
                lambda name, choices, t=stem_type: t if name == "stem_type" else pick(choices),
                num_classes,
            )
            for layers in range(self.min_layers, self.max_layers + 1)
            for stem_type in self.stem_types
        ]

    def smallest(
        self, num_classes: int, by: Callable[[Architecture], int] = count_params
    ) -> Architecture:
        """The architecture with the fewest parameters the space allows (or the least of another
        cost `by` that grows with every width, block count and kernel size, such as MACs)."""
        return min(self._extremes(min, num_classes), key=by)

    def at_fraction(self, fraction: float, num_classes: int) -> Architecture:
        """Every choice (layer count, widths, blocks, kernels, stem) at `fraction` of its range:
        0 the least of each, 1 the most; a rung on a ladder of sizes through the space."""

        def position(low: int, high: int) -> int:
            return low + round(fraction * (high - low))

        return self.decide(
            lambda _name, low, high: position(low, high),
            lambda _name, choices: sorted(choices)[position(0, len(choices) - 1)],
            num_classes,
        )

    def largest(
        self, num_classes: int, by: Callable[[Architecture], int] = count_params
    ) -> Architecture:
        """The architecture with the most parameters the space allows (or the most of another
        cost `by` that grows with every width, block count and kernel size)."""
        return max(self._extremes(max, num_classes), key=by)

    def size(self) -> int:
        """Number of distinct parameter combinations (architectures) the space holds."""
        kernel_pairs = len(self.conv_kernels) * len(self.skip_kernels)
        total = 0
        for layers in range(self.min_layers, self.max_layers + 1):
            combos = len(self.stem_choices) * len(self.stem_types)
            for index in range(layers):
                low, high = self.block_ranges[index]
                combos *= len(self.channel_choices[index]) * (high - low + 1)
            combos *= kernel_pairs**layers if self.kernels_per_layer else kernel_pairs
            total += combos
        return total

    def fraction_under(
        self, budget: int, num_classes: int, samples: int = 20000, seed: int = 0
    ) -> float:
        """Estimated share of uniformly sampled candidates with at most `budget` parameters."""
        rng = random.Random(seed)
        under = sum(count_params(self.sample(rng, num_classes)) <= budget for _ in range(samples))
        return under / samples
