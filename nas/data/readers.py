"""Owns reading each on-disk format into images, one reader per format in `READERS` (CIFAR's
pickled batches, image folders, the generated synthetic set), and `read_dataset`, which reads a
dataset by its row's reader (`nas.config.data.DATASET_TABLE`). A new dataset in a known format
is a row alone; a new format is a row and a reader here.

What this module claims:

- `read_dataset(config)` returns the train and test parts as CPU uint8 images (N, 3, S, S) at
  `config.image_size` with int64 labels (N,), and the class names; as many classes as the row
  says where it says (a DataError otherwise); splitting and normalising are `nas.data.loading`'s.
- `cifar-pickle` reads the torchvision archive its row names (`cifar-10-python.tar.gz`,
  `cifar-100-python.tar.gz`) in `data_dir`, downloaded on first use when allowed, or the folder
  it extracts to (`cifar-10-batches-py/`, `cifar-100-python/`). We use torchvision's URLs, file
  lists and MD5s, and read the batch pickles ourselves (the same format and keys torchvision
  reads), so that one reading path serves both modes: `verify=True` first checks every file's
  MD5 as torchvision does; `verify=False` reads whatever files are there (for trusted copies, or
  the tiny folders tests write). Like torchvision, this unpickles the files: only point it at
  data you trust.
- `image-folder` reads the files `nas.data.counting.list_image_folder` lists in
  `data_dir/train/<class>/` and `data_dir/test/<class>/` with `nas.data.images.read_rgb` (any
  mode to RGB, EXIF orientation, a plain resize to a square); a file it cannot read (a
  decompression bomb included) is skipped with one line on stderr naming it, and a split none
  of whose files can be read is a DataError.
- `synthetic` generates a small learnable dataset of the row's sizes, deterministic from
  `split_seed`.
- Every other missing, corrupt or unreadable file is a `nas.errors.DataError` whose message is
  one sentence saying how to fix it.
"""

from __future__ import annotations

import pickle
import sys
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.config.data import DATASET_TABLE, DataConfig, Dataset
from nas.config.machine import usable_cpus
from nas.data.counting import list_image_folder
from nas.data.images import read_rgb
from nas.errors import DataError

Part = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, 3, S, S) and int64 labels (N,), CPU
DatasetParts = tuple[Part, Part, tuple[str, ...]]  # train, test, class names


def read_dataset(config: DataConfig) -> DatasetParts:
    """The train and test parts of `config.dataset` and its class names, read by its row's
    reader; DataError if unusable, or if a row of fixed classes finds another number."""
    row = DATASET_TABLE[config.dataset]
    train, test, classes = READERS[row.reader](row, config)
    if row.classes is not None and len(classes) != row.classes:
        raise DataError(
            f"{row.title} in {config.data_dir} has {len(classes)} classes, not its "
            f"{row.classes}: put the dataset's own files there."
        )
    return train, test, classes


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = [
        F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in images.split(1024)
    ]
    return torch.cat(resized).contiguous()


def _read_cifar(row: Dataset, config: DataConfig) -> DatasetParts:
    import torchvision.datasets
    from torchvision.datasets.utils import (
        check_integrity,
        download_and_extract_archive,
        extract_archive,
    )

    spec = getattr(torchvision.datasets, row.download)
    name = row.title
    root = Path(config.data_dir)
    folder = root / spec.base_folder
    archive = root / spec.filename
    where = f"put an intact {spec.filename} in {root} (or extracted, as {spec.base_folder}/)"
    files = [*spec.train_list, *spec.test_list, [spec.meta["filename"], spec.meta["md5"]]]

    if not all((folder / file_name).is_file() for file_name, _ in files):
        if archive.is_file():
            if config.verify and not check_integrity(str(archive), spec.tgz_md5):
                raise DataError(f"{archive} fails torchvision's MD5 check: {where}.")
            try:
                extract_archive(str(archive), str(root))
            except (OSError, tarfile.TarError, EOFError) as error:
                raise DataError(f"{archive} could not be extracted ({error}): {where}.") from error
        elif config.download:
            try:
                download_and_extract_archive(
                    spec.url, str(root), filename=spec.filename, md5=spec.tgz_md5
                )
            except (OSError, RuntimeError, tarfile.TarError, EOFError) as error:
                raise DataError(
                    f"{name} could not be downloaded into {root} ({error}): {where}."
                ) from error
        else:
            raise DataError(f"{name} was not found in {root}: {where}, or allow the download.")
        missing = [file_name for file_name, _ in files if not (folder / file_name).is_file()]
        if missing:
            raise DataError(f"{folder} lacks {', '.join(missing)}: {where}.")

    if config.verify:
        failing = [n for n, md5 in files if not check_integrity(str(folder / n), md5)]
        if failing:
            raise DataError(
                f"{name} file(s) {', '.join(failing)} in {folder} fail torchvision's MD5 check: "
                f"{where}, or turn off verification to use the files as they are."
            )

    meta_path = folder / spec.meta["filename"]
    classes = tuple(str(c) for c in _read_pickle(meta_path, where).get(spec.meta["key"], ()))
    if not classes:
        raise DataError(f"{meta_path} has no {spec.meta['key']!r}: {where}.")
    train = _read_cifar_batches([folder / n for n, _ in spec.train_list], len(classes), where)
    test = _read_cifar_batches([folder / n for n, _ in spec.test_list], len(classes), where)
    resized = (
        (_resize_uint8(images, config.image_size), labels) for images, labels in (train, test)
    )
    return (*resized, classes)


def _read_pickle(path: Path, where: str) -> dict:
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError) as error:
        raise DataError(f"{path} could not be read ({error}): {where}.") from error
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR pickle (not a dict): {where}.")
    return entry


def _read_cifar_batches(paths: list[Path], num_classes: int, where: str) -> Part:
    images, labels = [], []
    for path in paths:
        entry = _read_pickle(path, where)
        data = np.asarray(entry.get("data"))
        batch_labels = entry.get("labels", entry.get("fine_labels"))
        shape_ok = data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
        if not shape_ok or batch_labels is None or len(batch_labels) != data.shape[0]:
            raise DataError(f"{path} does not hold CIFAR images and labels: {where}.")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        labels.append(torch.as_tensor(batch_labels, dtype=torch.int64))
    all_labels = torch.cat(labels)
    if all_labels.numel() and not 0 <= int(all_labels.min()) <= int(all_labels.max()) < num_classes:
        raise DataError(f"Labels in {paths[0].parent} exceed the {num_classes} classes: {where}.")
    return torch.cat(images).contiguous(), all_labels


def _read_image_folder(row: Dataset, config: DataConfig) -> DatasetParts:
    folder = list_image_folder(config.data_dir)
    train = _read_image_split(folder.train, config.image_size)
    test = _read_image_split(folder.test, config.image_size)
    return train, test, folder.classes


def _read_image_split(files: tuple[tuple[Path, ...], ...], size: int) -> Part:
    paths = [path for class_files in files for path in class_files]
    labels = [label for label, class_files in enumerate(files) for _ in class_files]
    # Decoding releases the GIL, so a few threads speed it up without worker processes.
    with ThreadPoolExecutor(max_workers=min(8, usable_cpus())) as pool:
        arrays = list(pool.map(lambda path: _read_or_refusal(path, size), paths))
    # said here, in the files' order, one whole line each: threads printing at once would
    # interleave their lines
    for refusal in (array for array in arrays if isinstance(array, DataError)):
        print(f"skipped: {refusal}", file=sys.stderr, flush=True)
    kept = [index for index, array in enumerate(arrays) if isinstance(array, np.ndarray)]
    if not kept:
        raise DataError(
            f"All {len(paths)} image files under {paths[0].parent.parent} could not be read as "
            "an image (the lines above say why): fix or remove them."
        )
    images = torch.from_numpy(np.stack([arrays[i] for i in kept])).permute(0, 3, 1, 2)
    return images.contiguous(), torch.tensor([labels[i] for i in kept], dtype=torch.int64)


def _read_or_refusal(path: Path, size: int) -> np.ndarray | DataError:
    """One image (`nas.data.images.read_rgb`), or the DataError saying why it cannot be read."""
    try:
        return read_rgb(path, size)
    except DataError as error:
        return error


def _make_synthetic(row: Dataset, config: DataConfig) -> DatasetParts:
    """Each class is a fixed random low-frequency colour pattern; each image is its class's
    pattern, circularly shifted by a few pixels, with a random brightness offset and pixel noise.
    Mean colour and layout both carry the class, so a tiny CNN learns it in a few epochs."""
    generator = torch.Generator().manual_seed(config.split_seed)
    size, sizes = config.image_size, row.known_sizes(config)
    num_classes = sizes.classes
    coarse = torch.randn(num_classes, 3, 4, 4, generator=generator)
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    train = _synthetic_images(patterns, sizes.train, generator)
    test = _synthetic_images(patterns, sizes.test, generator)
    return train, test, tuple(f"class_{index}" for index in range(num_classes))


def _synthetic_images(patterns: torch.Tensor, count: int, generator: torch.Generator) -> Part:
    num_classes, _, size, _ = patterns.shape
    # Balanced labels: every class count // classes or one more times, in random order.
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
    max_shift = max(1, size // 8)
    shift_y = torch.randint(-max_shift, max_shift + 1, (count,), generator=generator)
    shift_x = torch.randint(-max_shift, max_shift + 1, (count,), generator=generator)
    positions = torch.arange(size)
    rows = (positions[None, :] - shift_y[:, None]) % size  # (count, size)
    cols = (positions[None, :] - shift_x[:, None]) % size
    chunks = []
    for start in range(0, count, 4096):  # bounds the float memory for large synthetic_size
        end = min(count, start + 4096)
        images = patterns[labels[start:end]]
        index_rows = rows[start:end, None, :, None].expand(-1, 3, size, size)
        images = images.gather(2, index_rows)
        index_cols = cols[start:end, None, None, :].expand(-1, 3, size, size)
        images = images.gather(3, index_cols)
        brightness = 0.3 * torch.randn(end - start, 1, 1, 1, generator=generator)
        noise = 0.5 * torch.randn(images.shape, generator=generator)
        pixels = 128 + 45 * (images + brightness + noise)
        chunks.append(pixels.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks).contiguous(), labels


Reader = Callable[[Dataset, DataConfig], DatasetParts]
READERS: dict[str, Reader] = {  # by a row's `reader`: the on-disk format it reads
    "cifar-pickle": _read_cifar,  # CIFAR-10/100's python batches, torchvision's archive
    "image-folder": _read_image_folder,  # data_dir/train/<class>/*, data_dir/test/<class>/*
    "synthetic": _make_synthetic,  # generated from the settings, nothing on disk
}
