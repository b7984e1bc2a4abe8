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
  (two float copies of an image and three of the architecture's widest activation,
  `widest_activation_floats`) fit in the allowance; at least one. A wider first stage gets
  fewer images.
- `memory_failure` recognises `torch.cuda.OutOfMemoryError` (every torch since 2.3) and a
  RuntimeError whose text torch 2.3 onwards, cuDNN 8 or 9 or cuBLAS gives when device memory
  ran out ("out of memory", `CUBLAS_STATUS_ALLOC_FAILED`, `CUDNN_STATUS_ALLOC_FAILED`, cuDNN
  9's `..._DEVICE_ALLOCATION_FAILED`, "FIND/GET was unable to find an engine to execute this
  computation", "Unable to find a valid cuDNN algorithm"), as device memory; and, as failures
  of their own that are not the device's memory, `CUDNN_STATUS_NOT_SUPPORTED*` (cuDNN cannot
  run a layer) and a failed pinned-host allocation (`PinnedMemoryError` from `pin`, or
  DataLoader's pin-memory thread). Nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.arch.architecture import Architecture

DATA_SHARE_DIVISOR = 2  # data and evaluation take at most free bytes / 2: the rest is the model's
LABEL_BYTES = 8  # an int64 label
FLOAT_BYTES = 4  # float32
# A no-grad forward holds per image its float input and the normalised copy, and up to three
# activations of the model's widest layer at once (a block's input, its output and its
# shortcut's), in float32 (reduced precision halves them, which leaves room)
EVAL_INPUT_COPIES = 2
EVAL_LIVE_ACTIVATIONS = 3
# without the architecture: about 96 float copies of the image, which is a first stage of 32x
# the input's channels (96 for RGB) at full resolution
EVAL_UNKNOWN_COPIES = 96
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


def eval_batch_images(
    free_bytes: int | None, image_floats: int, cap: int, widest_floats: int | None = None
) -> int:
    """Images per evaluation batch: at most `cap`, and within the allowance at
    `EVAL_INPUT_COPIES` float copies of an image of `image_floats` values and
    `EVAL_LIVE_ACTIVATIONS` of the model's widest activation (`widest_floats` per image:
    `widest_activation_floats`; None: `EVAL_UNKNOWN_COPIES` copies of the image)."""
    if free_bytes is None:
        return cap
    if widest_floats is None:
        floats = image_floats * EVAL_UNKNOWN_COPIES
    else:
        floats = image_floats * EVAL_INPUT_COPIES + widest_floats * EVAL_LIVE_ACTIVATIONS
    return max(1, min(cap, (free_bytes // DATA_SHARE_DIVISOR) // (floats * FLOAT_BYTES)))


def widest_activation_floats(arch: Architecture, image_size: int) -> int:
    """Floats per image of the widest activation of `arch`'s forward pass at `image_size`: the
    stem's output or a layer's (each stride-2 step keeps ceil(size / 2))."""
    stem = arch.stem_spec
    size = -(-image_size // stem.stride)
    widest = arch.stem * size * size
    size = stem.output_size(image_size)
    for spec in arch.layer_specs():
        size = -(-size // spec.stride)
        widest = max(widest, spec.out_channels * size * size)
    return widest


def free_bytes(device) -> int | None:
    """Bytes this process can still use on a CUDA `device`: the driver's free memory plus what
    torch's caching allocator holds unused; None for any other device."""
    import torch

    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free + cached


@dataclass(frozen=True)
class MemoryFailure:
    """What `memory_failure` recognised: `what` ran out or refused, and whether it was the
    device's own memory (then the candidate does not fit there)."""

    what: str  # `out of memory`, `no cuDNN algorithm fits`, ... (may name `{device}`)
    device_memory: bool  # the device's memory ran out: the candidate does not fit on it

    def reason(self, device: str) -> str:
        """`out of memory on cuda:0`; `cuDNN does not support ... on cuda:0`; the pinned-host
        failure names the host's page-locked memory, not the device."""
        if "{device}" in self.what:
            return self.what.format(device=device)
        return f"{self.what} on {device}"


OUT_OF_MEMORY = MemoryFailure("out of memory", device_memory=True)
NO_CUDNN_ALGORITHM = MemoryFailure("no cuDNN algorithm fits", device_memory=True)
CUDNN_UNSUPPORTED = MemoryFailure("cuDNN does not support one of its layers on {device}", False)
PINNED_HOST = MemoryFailure(
    "pinned host memory ran out (page-locked host memory for uploads to {device})", False
)

# Messages of torch 2.3 onwards (c10/cuda, aten/src/ATen/native/cudnn, ATen/cuda/Exceptions.h)
# and of cuDNN 8 and 9's status strings, checked in this order; each maps a substring of the
# error's text to what it means
_FAILURE_MARKS: tuple[tuple[str, MemoryFailure], ...] = (
    # DataLoader's pin-memory thread re-raises with "Caught RuntimeError in pin memory thread
    # for device 0." ahead of the original traceback (which says "out of memory")
    ("in pin memory thread", PINNED_HOST),
    # cuDNN 9 splits NOT_SUPPORTED into CUDNN_STATUS_NOT_SUPPORTED_SHAPE, _LAYOUT, ...: a layer
    # cuDNN cannot run, not memory
    ("CUDNN_STATUS_NOT_SUPPORTED", CUDNN_UNSUPPORTED),
    ("out of memory", OUT_OF_MEMORY),  # CUDA's caching allocator and cudaErrorMemoryAllocation
    ("CUBLAS_STATUS_ALLOC_FAILED", OUT_OF_MEMORY),  # cuBLAS's handle or workspace
    ("CUDNN_STATUS_ALLOC_FAILED", OUT_OF_MEMORY),  # cuDNN 8 (and 9's deprecated alias)
    ("CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED", OUT_OF_MEMORY),  # cuDNN 9
    # cuDNN 9 through torch's v8 API: every engine's workspace failed to allocate, with
    # autotuning on (FIND) or off (GET)
    ("FIND was unable to find an engine to execute this computation", NO_CUDNN_ALGORITHM),
    ("GET was unable to find an engine to execute this computation", NO_CUDNN_ALGORITHM),
    # torch's v7 API (cuDNN 8): no algorithm's workspace fits
    ("Unable to find a valid cuDNN algorithm", NO_CUDNN_ALGORITHM),
)


class PinnedMemoryError(RuntimeError):
    """Pinning (page-locking) host memory for an upload failed: the host's pinned memory ran
    out, not the device's."""


def pin(tensor):
    """`tensor.pin_memory()`; its running out becomes `PinnedMemoryError`, so it is not
    mistaken for the device's memory running out."""
    try:
        return tensor.pin_memory()
    except RuntimeError as error:
        if "out of memory" not in str(error) and "cudaErrorMemoryAllocation" not in str(error):
            raise
        raise PinnedMemoryError(f"pinning {tuple(tensor.shape)} host memory: {error}") from error


def memory_failure(error: BaseException) -> MemoryFailure | None:
    """What ran out if `error` says the device's memory did (`OUT_OF_MEMORY`, or
    `NO_CUDNN_ALGORITHM`: no cuDNN engine's workspace fits, which near-full memory raises), that
    cuDNN cannot run a layer (`CUDNN_UNSUPPORTED`) or that pinned host memory ran out
    (`PINNED_HOST`); None for any other error."""
    import torch

    if isinstance(error, PinnedMemoryError):
        return PINNED_HOST
    # torch.cuda.OutOfMemoryError: every torch since 2.3 has it (torch.OutOfMemoryError is 2.4's)
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return OUT_OF_MEMORY
    if isinstance(error, RuntimeError):
        text = str(error)
        for mark, failure in _FAILURE_MARKS:
            if mark in text:
                return failure
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
