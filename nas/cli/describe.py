"""Owns the commands that inspect without training or a store: `nas params` (an architecture's
parameters per layer, its MACs, and with `--costs` its training memory and latency) and
`nas space` (a search space's size and extremes, or the built-in spaces). Neither loads torch or
optuna unless `--costs` measures.
"""

from __future__ import annotations

import argparse

from nas.arch.counts import count_macs, count_params, param_table
from nas.cli.arch import add_arch_flags, arch_from_flags
from nas.cli.budgets import add_latency_flags
from nas.cli.common import format_table, parse_count, positive_int
from nas.config.costs import COSTS
from nas.config.recipe import Recipe


def add_params_parser(commands) -> None:
    params = commands.add_parser(
        "params",
        help="count an architecture's parameters per layer",
        description="Count an architecture's parameters exactly, per layer, without building it.",
    )
    add_arch_flags(params)
    params.add_argument(
        "--image-size", type=positive_int, default=32, help="input size (default: %(default)s)"
    )
    params.add_argument(
        "--costs",
        action="store_true",
        help="also the training-step memory (estimated) and the latency measured on this "
        "machine, as a search's --max-memory-mb and --max-latency-ms see them",
    )
    params.add_argument(
        "--batch-size",
        type=positive_int,
        default=Recipe.batch_size,
        help="training batch for the memory estimate (default: %(default)s)",
    )
    add_latency_flags(params)
    params.set_defaults(handler=params_command)


def add_space_parser(commands) -> None:
    space = commands.add_parser(
        "space",
        help="summarise a search space, or list the built-in ones",
        description="Summarise a search space: its size, smallest and largest architectures, "
        "and the share of candidates under a budget.",
    )
    space.add_argument(
        "space",
        nargs="?",
        default="resnet",
        help="a built-in space's name or a YAML file (default: %(default)s)",
    )
    space.add_argument("--list", action="store_true", help="list the built-in spaces")
    space.add_argument(
        "--image-size",
        type=positive_int,
        default=32,
        metavar="N",
        help="count MACs on N-pixel square images (default: %(default)s)",
    )
    space.add_argument("--budget", type=parse_count, help="estimate the share under this budget")
    space.add_argument(
        "--samples",
        type=positive_int,
        default=20000,
        help="samples for the estimate (default: %(default)s)",
    )
    space.set_defaults(handler=space_command)


def params_command(args: argparse.Namespace) -> int:
    arch = arch_from_flags(args)
    rows = [
        (name, "x".join(map(str, shape)), f"{params:,}")
        for name, shape, params in param_table(arch, args.image_size)
    ]
    print(arch.describe())
    print(format_table(("part", "output", "params"), rows))
    print(f"total: {count_params(arch):,} parameters")
    print(f"MACs per image: {COSTS['macs'].number(count_macs(arch, args.image_size))}")
    if args.costs:
        from nas.costs.latency import LatencySetup, measure_latency
        from nas.costs.memory import estimate_training_memory

        memory = estimate_training_memory(arch, args.image_size, args.batch_size, "adam")
        print(f"training memory, batch {args.batch_size}, Adam: {memory.describe()}")
        setup = LatencySetup(args.latency_device, args.latency_batch, args.latency_threads)
        latency = measure_latency(arch, args.image_size, setup)
        print(f"latency ({setup.describe()}): {latency.describe()}")
    return 0


SPACE_CLASSES = 10  # `nas space` counts parameters with CIFAR-10's head, the default dataset's


def space_command(args: argparse.Namespace) -> int:
    from nas.arch.space import SearchSpace, builtin_spaces

    classes = SPACE_CLASSES
    if args.list:
        rows = []
        for name, text in builtin_spaces().items():
            space = SearchSpace.from_text(text, source=name)
            smallest = count_params(space.smallest(classes))
            largest = count_params(space.largest(classes))
            size = f"{space.size():,}"
            rows.append((name, size, f"{smallest:,}", f"{largest:,}", space.description))
        header = ("space", "architectures", "fewest params", "most params", "for")
        print(format_table(header, rows))
        print(f"(parameters with a {classes}-class head)")
        return 0
    space = SearchSpace.resolve(args.space)
    smallest, largest = space.smallest(classes), space.largest(classes)
    print(f"search space {space.name} ({space.source})")
    print(f"distinct architectures: {space.size():,} (parameters with a {classes}-class head)")
    print(f"smallest: {count_params(smallest):,} parameters  ({smallest.describe()})")
    print(f"largest:  {count_params(largest):,} parameters  ({largest.describe()})")
    size = args.image_size

    def macs(arch) -> int:
        return count_macs(arch, size)

    for word, arch in (
        ("fewest", space.smallest(classes, macs)),
        ("most", space.largest(classes, macs)),
    ):
        print(f"{word} MACs per {size}x{size} image: {macs(arch) / 1e6:,.1f}M  ({arch.describe()})")
    if args.budget is not None:
        share = space.fraction_under(args.budget, classes, samples=args.samples)
        print(
            f"under a budget of {args.budget:,}: about {share:.1%} of uniformly sampled "
            f"candidates ({args.samples:,} samples)"
        )
    return 0
