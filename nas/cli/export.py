"""Owns `nas export` and `nas predict`: their flags, and what they print.

`nas export RUN --format onnx|torchscript` writes a verified export (see `nas.run.export`) and
prints where, how it was checked and the largest logit difference it showed. `nas predict RUN
IMAGE_OR_FOLDER...` prints the top classes of every image as a table, JSON or CSV on stdout; an
unreadable image is named on stderr and skipped; a progress bar shows only on a terminal.
Neither imports optuna.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from nas.cli.common import Parser, format_table, interactive, positive_int
from nas.config.outputs import (
    DEFAULT_OPSET,
    DEFAULT_TOP,
    EXPORT_FORMATS,
    EXPORT_TOLERANCE,
    OPSETS,
    PREDICT_BATCH,
)
from nas.errors import UserError
from nas.run.folder import EXPORT_FILES

PREDICT_FORMATS = ("table", "json", "csv")


def parse_batch(text: str) -> int | None:
    """`dynamic` -> None (any batch size); a whole number -> that fixed batch size."""
    if text == "dynamic":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither 'dynamic' nor a positive whole number"
        ) from None


def add_export_parser(commands) -> None:
    parser: Parser = commands.add_parser(
        "export",
        help="export a finished run to ONNX or TorchScript, verified against the original",
        description="Export a finished run's best weights to ONNX or TorchScript with the "
        "normalisation inside the model (input: RGB scaled to [0, 1]), then check the export "
        f"against the original on the run's test images (max abs logit difference <= "
        f"{EXPORT_TOLERANCE:g}) before reporting success. ONNX needs pip install -e '.[export]'.",
    )
    parser.add_argument("run", metavar="RUN", help="a finished run folder (nas retrain --out)")
    parser.add_argument(
        "--format", required=True, choices=EXPORT_FORMATS, help="the export's format"
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help=f"where to write it (default: RUN/{EXPORT_FILES['onnx']} or "
        f"RUN/{EXPORT_FILES['torchscript']})",
    )
    parser.add_argument(
        "--batch",
        type=parse_batch,
        default=None,
        metavar="dynamic|N",
        help="ONNX batch dimension: dynamic (the default) or a fixed size N",
    )
    parser.add_argument(
        "--opset",
        type=positive_int,
        help=f"ONNX opset version, {OPSETS[0]} to {OPSETS[1]} (default: {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--data-dir",
        help="where the run's dataset is now, if it moved (the export is checked on its test "
        "images; default: the folder the run was trained from)",
    )
    parser.set_defaults(handler=export_command)


def add_predict_parser(commands) -> None:
    parser: Parser = commands.add_parser(
        "predict",
        help="classify images with a finished run",
        description="Classify image files and folders (searched recursively) with a finished "
        "run, preprocessed as its test images were (RGB, resized to the trained size, its "
        "normalisation). Unreadable images are named on stderr and skipped.",
    )
    parser.add_argument("run", metavar="RUN", help="a finished run folder (nas retrain --out)")
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders"
    )
    parser.add_argument(
        "--top",
        type=positive_int,
        default=DEFAULT_TOP,
        metavar="K",
        help="classes shown per image (default: %(default)s)",
    )
    parser.add_argument(
        "--format",
        choices=PREDICT_FORMATS,
        default="table",
        help="output on stdout (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=PREDICT_BATCH,
        help="images per forward pass (default: %(default)s)",
    )
    parser.set_defaults(handler=predict_command)


def export_command(args: argparse.Namespace) -> int:
    from nas.run.export import export_run

    if args.format == "torchscript" and (args.batch is not None or args.opset is not None):
        raise UserError(
            "--batch and --opset apply to ONNX only (a TorchScript export takes any batch size); "
            "drop them or pass --format onnx"
        )
    result = export_run(
        args.run,
        args.format,
        out=args.out,
        batch=args.batch,
        opset=args.opset or DEFAULT_OPSET,
        data_dir=args.data_dir,
    )
    size = result.path.stat().st_size
    kind = (
        f"ONNX opset {result.metadata['nas.opset']}" if result.format == "onnx" else "TorchScript"
    )
    batch = "dynamic" if result.batch is None else str(result.batch)
    print(f"exported {result.path} ({kind}, batch {batch}, {size / 1024:,.0f} KiB)")
    print(f"input  {result.metadata['nas.input']}")
    classes = ", ".join(json.loads(result.metadata["nas.classes"]))
    print(f"output {result.metadata['nas.output']}: {classes}")
    print(
        f"verified with {result.runtime} on {result.images} of the run's test images: "
        f"max abs difference {result.max_abs_diff:.2e} (tolerance {EXPORT_TOLERANCE:g})"
    )
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from nas.run.inference import image_files, load_run, predict_files

    run = load_run(args.run)
    files = image_files(args.images)
    predictions, skipped = [], []
    show_bar = interactive()

    def report_skip(path: Path, reason: str) -> None:
        skipped.append(path)
        if show_bar:
            tqdm.write(f"skipped: {reason}", file=sys.stderr)  # above the bar
        else:
            print(f"skipped: {reason}", file=sys.stderr, flush=True)

    with tqdm(total=len(files), unit="image", disable=not show_bar, file=sys.stderr) as bar:
        for done, batch in predict_files(run, files, args.top, report_skip, args.batch_size):
            predictions += batch
            bar.update(done - bar.n)
    if not predictions:
        raise UserError(f"none of the {len(files)} image(s) could be read; see the lines above")
    print(render(predictions, args.format), end="")
    if skipped:
        print(
            f"{len(skipped)} of {len(files)} image(s) could not be read and were skipped",
            file=sys.stderr,
        )
    return 0


def render(predictions, output_format: str) -> str:
    """The predictions as a table, a JSON list, or CSV rows (image, rank, class, probability)."""
    if output_format == "json":
        return json.dumps([p.to_dict() for p in predictions], indent=2) + "\n"
    if output_format == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(("image", "rank", "class", "probability"))
        for prediction in predictions:
            for rank, (name, probability) in enumerate(prediction.top, start=1):
                writer.writerow((prediction.image, rank, name, f"{probability:.6f}"))
        return text.getvalue()
    shown = max(len(p.top) for p in predictions)
    header = ("image", *(f"top {rank}" for rank in range(1, shown + 1)))
    rows = [
        (p.image, *(f"{name} {probability:.1%}" for name, probability in p.top))
        for p in predictions
    ]
    return format_table(header, rows) + "\n"
