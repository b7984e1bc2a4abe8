"""Owns device memory use: whether the training split lives on the device or stays in host
memory and is uploaded per chunk, how many images are augmented at once and evaluated at once,
and which errors mean that the device ran out of memory. Every decision is a plain function of
plain numbers (free bytes, image counts and sizes), so the CPU suite tests each at its edges;
`free_bytes` is the only reading of the device (`torch.cuda.mem_get_info`).

Headroom rule: data and evaluation may take at most half of the free device memory
(`free // DATA_SHARE_DIVISOR`). The other half is the model's: its weights, gradients,
optimizer state and activations, which these decisions are taken without knowing (the budgets'
memory figure is per candidate, the data path is decided once per run), and the caching
allocator's fragmentation.

Claims:
- `plan_data`: the split (uint8 images and int64 labels) lives on the device when it and two
  chunks of one batch fit in the allowance (half the free bytes); else it stays in host memory
  and is uploaded per chunk. Exactly fitting counts as fitting; a byte short does not.
- The chunk is the largest whole number of batches, at most `cap` images (the recipe's
  `chunk_size`), whose two chunks (the one trained on and the one augmented ahead, each at its
  augmentation's peak: `chunk_image_bytes`) fit in what the allowance leaves; never less than
  one batch.
- Without a free-bytes figure (the CPU: host memory is not the device's to size) the split stays
  where it is and chunks are the most batches within `cap` images.
- `eval_batch_images`: the most images, at most the configured batch, whose evaluation bytes
  (`EVAL_INPUT_COPIES` float copies of an image) fit in the allowance; at least one.
- `memory_failure` recognises `torch.OutOfMemoryError` (= `torch.cuda.OutOfMemoryError`) and a
  RuntimeError saying "out of memory", "CUDNN_STATUS_NOT_SUPPORTED" or "Unable to find a valid
  cuDNN algorithm", and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_SHARE_DIVISOR = 2  # data and evaluation take at most free bytes / 2: the rest is the model's
LABEL_BYTES = 8  # an int64 label
FLOAT_BYTES = 4  # float32
# A no-grad forward holds per image its float input, the normalised copy and two or three
# activations of the widest full-resolution layer: the reference space's first stage is up to
# 96 channels, 32 times the input's 3, so about 96 float copies of the image (float32; reduced
# precision halves the activations, which leaves room)
EVAL_INPUT_COPIES = 96
MB = 1e6
GB = 1e9


@dataclass(frozen=True)
class DataPlan:
    """Where the training split lives and how many images are augmented at once."""

    resident: bool  # the split lives on the device; else in host memory, uploaded per chunk
    chunk: int  # images augmented at once: a whole number of batches
    free_bytes: int | None  # the device's free bytes it was decided from (None: not a GPU)

    def describe(self, count: int, image_bytes: int, device: str, pinned: bool) -> str:
        """The one line telling the user which path the data took."""
        size = _size(count * image_bytes)
        if self.resident:
            where = f"on {device}, augmented in chunks of {self.chunk:,}"
            return f"data: {count:,} images ({size}) {where}"
        # only each chunk is pinned on its way up: pinning the whole split would need a second
        # host copy of it
        through = " through pinned memory" if pinned else ""
        free = f" ({_size(self.free_bytes)} free)" if self.free_bytes is not None else ""
        return (
            f"data: {count:,} images ({size}) too large for {device}{free}: kept in host "
            f"memory, uploaded per chunk of {self.chunk:,}{through}"
        )


def chunk_image_bytes(image_bytes: int, augment_bytes: int) -> int:
    """Device bytes one image of a chunk takes: its uint8 copy and label gathered from the split
    (uploaded, on the host path) and two augmentations' float temporaries (`augment_bytes` each:
    the chunk being trained on and the one augmented ahead)."""
    return image_bytes + LABEL_BYTES + 2 * augment_bytes


def plan_data(
    free_bytes: int | None,
    count: int,
    image_bytes: int,
    augment_bytes: int,
    batch_size: int,
    cap: int,
) -> DataPlan:
    """Where a split of `count` images of `image_bytes` (uint8) lives and its chunk size (at most
    `cap` images), given the device's free bytes (None: the CPU) and each image's augmentation
    temporaries in bytes."""
    most = max(1, cap // batch_size)  # batches per chunk at most
    if free_bytes is None:
        return DataPlan(resident=True, chunk=batch_size * most, free_bytes=None)
    allowance = free_bytes // DATA_SHARE_DIVISOR
    batch_bytes = batch_size * chunk_image_bytes(image_bytes, augment_bytes)
    split_bytes = count * (image_bytes + LABEL_BYTES)
    resident = split_bytes + batch_bytes <= allowance
    room = allowance - split_bytes if resident else allowance
    batches = max(1, min(most, room // batch_bytes))
    return DataPlan(resident=resident, chunk=batch_size * batches, free_bytes=free_bytes)


def eval_batch_images(free_bytes: int | None, image_floats: int, cap: int) -> int:
    """Images per evaluation batch: at most `cap`, and within the allowance at
    `EVAL_INPUT_COPIES` float copies of an image of `image_floats` values each."""
    if free_bytes is None:
        return cap
    per_image = image_floats * FLOAT_BYTES * EVAL_INPUT_COPIES
    return max(1, min(cap, (free_bytes // DATA_SHARE_DIVISOR) // per_image))


def free_bytes(device) -> int | None:
    """Bytes this process can still use on a CUDA `device`: the driver's free memory plus what
    torch's caching allocator holds unused; None for any other device."""
    import torch

    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free + cached


_CUDNN_MARKS = ("CUDNN_STATUS_NOT_SUPPORTED", "Unable to find a valid cuDNN algorithm")


def memory_failure(error: BaseException) -> str | None:
    """What ran out if `error` says the device's memory did ("out of memory", or "no cuDNN
    algorithm fits", which near-full memory raises), None for any other error."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return "out of memory"
    if isinstance(error, RuntimeError):
        text = str(error)
        if "out of memory" in text:
            return "out of memory"
        if any(mark in text for mark in _CUDNN_MARKS):
            return "no cuDNN algorithm fits"
    return None


def _size(count: int) -> str:
    """`147 kB`, `138 MB`, `15.1 GB`."""
    if count >= GB:
        return f"{count / GB:.1f} GB"
    return f"{count / MB:.0f} MB" if count >= MB else f"{count / 1e3:.0f} kB"


def release_memory() -> None:
    """Give back what a failed step left: collect its tensors, then empty torch's CUDA cache
    so the next candidate (or another process on the GPU) starts from free memory."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
