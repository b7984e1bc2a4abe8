"""Owns the one copy of the data that a search's worker processes share.

The parent of `--workers N` loads the data once (it checks it before any worker starts); it
writes each split's tensors as raw bytes into a folder in shared memory (`/dev/shm` where the
platform has it, else the temporary folder) and each worker maps those files copy-on-write
(`torch.from_file`), so the pages are the same for every worker and no worker reads or decodes
the dataset again. Without room there (a container's small `/dev/shm`), one line says so and
each worker loads its own copy, as before.

Claims:
- `shared_splits(share_splits(splits, folder))` holds the same images, labels, classes and
  statistics as `splits`, its tensors mapped from the files (not read into private memory).
- `shared_copy` yields the folder, or None after one line when it cannot be written; the folder
  is removed when the block ends, however it ends.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from nas.data.loading import Splits, TensorData

SHARED_DATA_ENV = "NAS_SHARED_DATA"  # the folder a worker maps its data from
SHARED_MEMORY = Path("/dev/shm")  # Linux's shared-memory filesystem
INDEX = "splits.json"  # shapes, dtypes, classes and statistics beside the raw tensors
DTYPES = {"uint8": torch.uint8, "int64": torch.int64}


def share_splits(splits: Splits, folder: Path) -> Path:
    """Write `splits` into `folder` (raw bytes per tensor, and the index); returns `folder`."""
    tensors = {}
    for part in ("train", "val", "test"):
        data: TensorData = getattr(splits, part)
        for field, tensor in (("images", data.images), ("labels", data.labels)):
            name = f"{part}.{field}"
            tensor.contiguous().numpy().tofile(folder / f"{name}.bin")
            tensors[name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype)[6:]}
    index = {
        "tensors": tensors,
        "classes": list(splits.classes),
        "mean": list(splits.mean),
        "std": list(splits.std),
    }
    (folder / INDEX).write_text(json.dumps(index))
    return folder


def shared_splits(folder: Path) -> Splits:
    """The splits `share_splits` wrote into `folder`, each tensor mapped from its file."""
    index = json.loads((folder / INDEX).read_text())

    def mapped(name: str) -> torch.Tensor:
        entry = index["tensors"][name]
        shape = entry["shape"]
        count = 1
        for side in shape:
            count *= side
        if count == 0:  # nothing to map: an empty file cannot be
            return torch.empty(shape, dtype=DTYPES[entry["dtype"]])
        flat = torch.from_file(
            str(folder / f"{name}.bin"), shared=False, size=count, dtype=DTYPES[entry["dtype"]]
        )  # shared=False: copy-on-write, so no worker can change another's data
        return flat.view(shape)

    parts = {
        part: TensorData(images=mapped(f"{part}.images"), labels=mapped(f"{part}.labels"))
        for part in ("train", "val", "test")
    }
    return Splits(
        **parts,
        classes=tuple(index["classes"]),
        mean=tuple(index["mean"]),
        std=tuple(index["std"]),
    )


@contextmanager
def shared_copy(
    splits: Splits, say: Callable[[str], None], where: Path | None = None
) -> Iterator[Path | None]:
    """A folder in `where` (shared memory, else the temporary folder) holding `splits` for the
    workers while the block runs, or None (said in one line) where it cannot be written;
    removed when the block ends."""
    if where is None:
        where = SHARED_MEMORY if SHARED_MEMORY.is_dir() else Path(tempfile.gettempdir())
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="nas-data-", dir=where))
        share_splits(splits, folder)
        del splits  # the caller's copy can go while the workers run: this frame lives as long
    except OSError as error:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        folder = None
        say(
            f"data: no room to share one copy between the workers ({error.strerror or error}); "
            "each loads its own"
        )
    try:
        yield folder
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
