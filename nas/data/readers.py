"""Owns reading each dataset from disk in its real format, or generating it: CIFAR-10/100's
pickled batches, image folders, and the synthetic set.

What this module claims:

- `read_dataset(config)` returns the train and test parts as CPU uint8 images (N, 3, S, S) at
  `config.image_size` with int64 labels (N,), and the class names; splitting and normalising
  are `nas.data.loading`'s.
- CIFAR-10/100 come from torchvision's archive (`cifar-10-python.tar.gz`, `cifar-100-python.tar.gz`)
  in `data_dir`, downloaded on first use when allowed, or from the folder it extracts to
  (`cifar-10-batches-py/`, `cifar-100-python/`). We use torchvision's URLs, file lists and MD5s,
  and read the batch pickles ourselves (the same format and keys torchvision reads), so that one
  reading path serves both modes: `verify=True` first checks every file's MD5 as torchvision does;
  `verify=False` reads whatever files are there (for trusted copies, or the tiny folders tests
  write). Like torchvision, this unpickles the files: only point it at data you trust.
- `imagefolder` reads `data_dir/train/<class>/*` and `data_dir/test/<class>/*` with PIL; any
  mode becomes RGB and any size is plainly resized (bilinear, aspect ratio not kept) to a square.
- `folder_image_sizes(root)` reads only the headers of a folder's training images (an evenly
  spread sample of `SIZE_SAMPLE` files in a large folder) for the size the data is trained at
  when none is given (`nas.data.loading.choose_image_size`).
- `synthetic` generates a small learnable dataset, deterministic from `split_seed`.
- Every missing, corrupt or unreadable file is a `nas.errors.DataError` whose message is one
  sentence saying how to fix it.
"""

from __future__ import annotations

import pickle
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from nas.config.data import DataConfig
from nas.config.machine import usable_cpus
from nas.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

Part = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, 3, S, S) and int64 labels (N,), CPU
DatasetParts = tuple[Part, Part, tuple[str, ...]]  # train, test, class names


def read_dataset(config: DataConfig) -> DatasetParts:
    """The train and test parts of `config.dataset` and its class names; DataError if unusable."""
    if config.dataset in ("cifar10", "cifar100"):
        return _load_cifar(config)
    if config.dataset == "imagefolder":
        return _load_image_folder(config)
    return _make_synthetic(config)


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


def _load_cifar(config: DataConfig) -> DatasetParts:
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import (
        check_integrity,
        download_and_extract_archive,
        extract_archive,
    )

    spec = CIFAR10 if config.dataset == "cifar10" else CIFAR100
    name = "CIFAR-10" if config.dataset == "cifar10" else "CIFAR-100"
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


def _load_image_folder(config: DataConfig) -> DatasetParts:
    root = Path(config.data_dir)
    layout = "train/<class>/<image> and test/<class>/<image>"
    folders = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"Image folder {folder} does not exist: {root} must hold {layout}.")
        folders[split] = {
            path.name: path
            for path in sorted(folder.iterdir())
            if path.is_dir() and not path.name.startswith(".")
        }
    classes = tuple(folders["train"])
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders: {root} must hold {layout}.")
    if set(folders["test"]) != set(classes):
        only_train = sorted(set(classes) - set(folders["test"]))
        only_test = sorted(set(folders["test"]) - set(classes))
        raise DataError(
            f"The class folders of {root / 'test'} differ from those of {root / 'train'} "
            f"(only in train: {only_train}, only in test: {only_test}): give both the same classes."
        )
    train = _read_image_split(folders["train"], classes, config.image_size)
    test = _read_image_split(folders["test"], classes, config.image_size)
    return train, test, classes


def _read_image_split(class_folders: dict[str, Path], classes: tuple[str, ...], size: int) -> Part:
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = [
            path
            for path in sorted(class_folders[name].iterdir())
            if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
        ]
        if not files:
            raise DataError(
                f"Class folder {class_folders[name]} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}): add some or remove the folder."
            )
        paths += files
        labels += [label] * len(files)
    # Decoding releases the GIL, so a few threads speed it up without worker processes.
    with ThreadPoolExecutor(max_workers=min(8, usable_cpus())) as pool:
        arrays = list(pool.map(lambda path: _read_image(path, size), paths))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64)


SIZE_SAMPLE = 2000  # image headers read to find a folder's typical size (evenly spread)


def folder_image_sizes(root: str | Path) -> tuple[list[tuple[int, int]], int]:
    """(width, height) of up to `SIZE_SAMPLE` of `root/train`'s images, evenly spread over its
    sorted files, and how many image files it holds; headers only, nothing decoded.
    DataError where the folder or an image cannot be read."""
    train = Path(root) / "train"
    if not train.is_dir():
        raise DataError(
            f"Image folder {train} does not exist: {root} must hold train/<class>/<image> "
            "and test/<class>/<image>."
        )
    files = sorted(
        path
        for folder in train.iterdir()
        if folder.is_dir() and not folder.name.startswith(".")
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    )
    if not files:
        raise DataError(f"{train} holds no images in class folders: add some.")
    step = max(1, len(files) / SIZE_SAMPLE)
    chosen = [files[int(index * step)] for index in range(min(len(files), SIZE_SAMPLE))]
    with ThreadPoolExecutor(max_workers=min(8, usable_cpus())) as pool:
        return list(pool.map(_image_header_size, chosen)), len(files)


def _image_header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:  # lazy: reads the header, decodes no pixel
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(
            f"{path} could not be read as an image ({error}): fix or remove it."
        ) from error


def _read_image(path: Path, size: int) -> np.ndarray:
    """One image as an RGB uint8 (size, size, 3) array: plain bilinear resize to a square."""
    try:
        with Image.open(path) as image:
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # PIL asks for this route for palette transparency
            rgb = image.convert("RGB")  # drops alpha, like torchvision's ImageFolder loader
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(
            f"{path} could not be read as an image ({error}): fix or remove it."
        ) from error


def _make_synthetic(config: DataConfig) -> DatasetParts:
    """Each class is a fixed random low-frequency colour pattern; each image is its class's
    pattern, circularly shifted by a few pixels, with a random brightness offset and pixel noise.
    Mean colour and layout both carry the class, so a tiny CNN learns it in a few epochs."""
    generator = torch.Generator().manual_seed(config.split_seed)
    size, num_classes = config.image_size, config.synthetic_classes
    coarse = torch.randn(num_classes, 3, 4, 4, generator=generator)
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    train = _synthetic_images(patterns, config.synthetic_size, generator)
    test = _synthetic_images(patterns, max(1, config.synthetic_size // 5), generator)
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
