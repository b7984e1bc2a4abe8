"""Device memory decisions (nas.data.device_memory) for machines this CPU-only suite is not: a 16 GB
card (a T4) and an 80 GB one (an A100 or H100), given as free bytes. Expected values are
computed by hand in the comments from the module's documented rule: data and evaluation take
at most half the free bytes; a chunk image costs its uint8 bytes, an 8-byte label and twice its
augmentation temporaries."""

from __future__ import annotations

import pytest
import torch

from nas.arch.architecture import Architecture
from nas.data.device_memory import (
    PINNED_HOST,
    PinnedMemoryError,
    eval_batch_images,
    memory_failure,
    pin,
    plan_data,
    widest_activation_floats,
)

CIFAR = dict(count=45_000, image_bytes=3 * 32 * 32, augment_bytes=3 * 32 * 32 * 4 * 6)
LARGE = dict(count=100_000, image_bytes=3 * 224 * 224, augment_bytes=3 * 224 * 224 * 4 * 6)
T4_FREE = 15_000_000_000  # a 16 GB card with the model on it
H100_FREE = 80_000_000_000  # an 80 GB one


def test_cifar10_lives_on_a_16_gb_card_in_chunks_of_8192():
    # split 45,000 x 3,080 = 138,600,000 B; a chunk image 3,072 + 8 + 2 x 73,728 = 150,536 B;
    # allowance 7.5e9: room for 764 batches of 64, more than 8,192 // 64 = 128
    plan = plan_data(T4_FREE, batch_size=64, cap=8192, **CIFAR)
    assert (plan.resident, plan.chunk) == (True, 8192)
    assert plan.describe(45_000, 3072, "cuda:0", pinned=True) == (
        "data: 45,000 images (138 MB) on cuda:0, augmented in chunks of 8,192"
    )


def test_100k_images_at_224_px_stay_on_the_host_of_a_16_gb_card():
    # split 100,000 x 150,536 = 15,053,600,000 B > allowance 7.5e9: host memory; a chunk image
    # 150,528 + 8 + 2 x 3,612,672 = 7,375,880 B, a batch 472,056,320 B: 7.5e9 // that = 15
    plan = plan_data(T4_FREE, batch_size=64, cap=8192, **LARGE)
    assert (plan.resident, plan.chunk) == (False, 15 * 64)
    assert plan.describe(100_000, 150_528, "cuda:0", pinned=True) == (
        "data: 100,000 images (15.1 GB) too large for cuda:0 (15.0 GB free): kept in host "
        "memory, uploaded per chunk of 960 through pinned memory"
    )


def test_100k_images_at_224_px_live_on_an_80_gb_card():
    # allowance 4e10 holds the split (15,053,600,000 B) and leaves 24,946,400,000 B:
    # // 472,056,320 = 52 batches of 64
    plan = plan_data(H100_FREE, batch_size=64, cap=8192, **LARGE)
    assert (plan.resident, plan.chunk) == (True, 52 * 64)


def test_a_split_that_exactly_fits_lives_on_the_device_and_a_byte_short_does_not():
    # the split (138,600,000 B) and one batch of chunk images (64 x 150,536 = 9,634,304 B)
    needed = 138_600_000 + 9_634_304
    exactly = plan_data(2 * needed, batch_size=64, cap=8192, **CIFAR)
    assert (exactly.resident, exactly.chunk) == (True, 64)
    short = plan_data(2 * needed - 1, batch_size=64, cap=8192, **CIFAR)  # allowance needed - 1
    # on the host the whole allowance is the chunks': (needed - 1) // 9,634,304 = 15 batches
    assert (short.resident, short.chunk) == (False, 15 * 64)


def test_a_chunk_is_never_less_than_one_batch():
    assert plan_data(0, batch_size=64, cap=8192, **CIFAR).chunk == 64


@pytest.mark.parametrize(("batch", "chunk"), [(64, 8192), (100, 8100), (10_000, 10_000)])
def test_without_a_gpu_the_split_stays_where_it_is_in_the_most_batches_of_8192(batch, chunk):
    plan = plan_data(None, batch_size=batch, cap=8192, **CIFAR)
    assert (plan.resident, plan.chunk) == (True, chunk)


@pytest.mark.parametrize(
    ("free", "floats", "expected"),
    [
        (T4_FREE, 3 * 32 * 32, 1000),  # 7.5e9 // (3,072 x 4 x 96 = 1,179,648) = 6,357: the cap
        (T4_FREE, 3 * 224 * 224, 129),  # 7.5e9 // 57,802,752 = 129
        (H100_FREE, 3 * 224 * 224, 692),  # 4e10 // 57,802,752 = 692
        (2 * 1000 * 1_179_648, 3 * 32 * 32, 1000),  # exactly 1,000 images' worth
        (2 * 1000 * 1_179_648 - 2, 3 * 32 * 32, 999),  # two bytes short (one of the allowance)
        (0, 3 * 32 * 32, 1),  # at least one image
        (None, 3 * 224 * 224, 1000),  # the CPU: the configured batch
    ],
)
def test_the_evaluation_batch_is_sized_in_bytes(free, floats, expected):
    assert eval_batch_images(free, floats, cap=1000) == expected


def test_the_evaluation_batch_follows_the_architecture_s_widest_activation():
    """Issue 31 item 8: a first stage of 256 channels at full resolution holds far more per
    image than one of 16. Bytes per image: (2 x 3,072 image floats + 3 x widest) x 4."""
    narrow = Architecture((16, 32), (1, 1), stem=16)  # widest: 16 x 32 x 32 = 16,384
    wide = Architecture((256, 32), (1, 1), stem=16)  # widest: 256 x 32 x 32 = 262,144
    assert widest_activation_floats(narrow, 32) == 16_384
    assert widest_activation_floats(wide, 32) == 262_144
    pooled = Architecture((64, 128), (1, 1), stem=32, stem_type="imagenet")
    assert widest_activation_floats(pooled, 224) == 32 * 112 * 112  # the stem's, before pooling
    free = 10**8  # allowance 5e7 bytes
    assert eval_batch_images(free, 3072, 1000, 16_384) == 226  # 5e7 // 221,184
    assert eval_batch_images(free, 3072, 1000, 262_144) == 15  # 5e7 // 3,170,304


# The texts torch 2.3 onwards raises, copied from its sources: c10/cuda/CUDACachingAllocator.cpp
# (the caching allocator), c10/cuda/CUDAException.h (C10_CUDA_CHECK, also what a failed
# cudaHostAlloc for pinned memory says), aten/src/ATen/cuda/Exceptions.h (TORCH_CUDABLAS_CHECK,
# AT_CUDNN_CHECK), aten/src/ATen/native/cudnn/Conv_v7.cpp and Conv_v8.cpp (no algorithm or engine
# whose workspace could be allocated), torch/_utils.py ExceptionWrapper (DataLoader's pin-memory
# thread); and cuDNN 8 and 9's cudnnGetErrorString names (cudnn_graph.h in 9)
CACHING_ALLOCATOR = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB of "
    "which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.08 GiB memory in "
    "use. Of the allocated memory 76.50 GiB is allocated by PyTorch, and 1.07 GiB is reserved by "
    "PyTorch but unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
)
CUDA_CHECK = (
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some "
    "other API call, so the stacktrace below might be incorrect.\nFor debugging consider "
    "passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side "
    "assertions.\n"
)
PIN_THREAD = (
    "Caught RuntimeError in pin memory thread for device 0.\nOriginal Traceback (most recent "
    'call last):\n  File ".../torch/utils/data/_utils/pin_memory.py", line 37, in do_one_step'
    "\n    data = pin_memory(data, device)\nRuntimeError: " + CUDA_CHECK
)
NOT_SUPPORTED_8 = (
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a "
    "non-contiguous input."
)
DEVICE = "out of memory", True
NO_ALGORITHM = "no cuDNN algorithm fits", True
UNSUPPORTED = "cuDNN does not support one of its layers on {device}", False
PINNED = "pinned host memory ran out (page-locked host memory for uploads to {device})", False


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.cuda.OutOfMemoryError(CACHING_ALLOCATOR), DEVICE),
        (torch.cuda.OutOfMemoryError("CUDA out of memory."), DEVICE),
        (RuntimeError(CUDA_CHECK), DEVICE),
        (
            RuntimeError(
                "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
            ),
            DEVICE,
        ),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), DEVICE),  # cuDNN 8
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"), DEVICE),
        # cuDNN 9 through torch's v8 API: autotuning on (FIND) and off (GET)
        (
            RuntimeError("FIND was unable to find an engine to execute this computation"),
            NO_ALGORITHM,
        ),
        (
            RuntimeError("GET was unable to find an engine to execute this computation"),
            NO_ALGORITHM,
        ),
        (RuntimeError("Unable to find a valid cuDNN algorithm to run convolution"), NO_ALGORITHM),
        # not memory: cuDNN cannot run the layer (8's name, and 9's finer ones)
        (RuntimeError(NOT_SUPPORTED_8), UNSUPPORTED),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED_SHAPE"), UNSUPPORTED),
        # the host's pinned memory, not the device's
        (RuntimeError(PIN_THREAD), PINNED),
        (PinnedMemoryError("pinning (8192, 3, 32, 32) host memory: " + CUDA_CHECK), PINNED),
        # the host's memory inside cuDNN 9: not a verdict on the candidate
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED"), None),
        (RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"), None),
        (RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input"), None),
        (ValueError("out of memory"), None),  # not torch's: a bug, not the device
        (MemoryError(), None),  # the host's memory: not a verdict on the candidate
    ],
)
def test_memory_failures_are_recognised_by_their_class_and_message(error, expected):
    failure = memory_failure(error)
    assert (None if failure is None else (failure.what, failure.device_memory)) == expected


@pytest.mark.skipif(not hasattr(torch, "AcceleratorError"), reason="torch before 2.8")
def test_the_accelerator_error_of_newer_torch_is_recognised_by_its_message():
    failure = memory_failure(torch.AcceleratorError(CUDA_CHECK))
    assert failure is not None and failure.device_memory


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            RuntimeError("GET was unable to find an engine to execute this computation"),
            "no cuDNN algorithm fits on cuda:1",
        ),
        (RuntimeError(NOT_SUPPORTED_8), "cuDNN does not support one of its layers on cuda:1"),
        (
            RuntimeError(PIN_THREAD),
            "pinned host memory ran out (page-locked host memory for uploads to cuda:1)",
        ),
    ],
)
def test_each_failure_tells_its_own_truth(error, reason):
    assert memory_failure(error).reason("cuda:1") == reason


class _Pinning:
    """A tensor whose pinning fails the way cudaHostAlloc does (C10_CUDA_CHECK's text)."""

    shape = (8192, 3, 32, 32)

    def __init__(self, message):
        self.message = message

    def pin_memory(self):
        raise RuntimeError(self.message)


def test_pinning_that_runs_out_is_the_hosts_failure_not_the_devices():
    with pytest.raises(PinnedMemoryError) as raised:
        pin(_Pinning(CUDA_CHECK))
    assert memory_failure(raised.value) is PINNED_HOST
    with pytest.raises(RuntimeError, match="no accelerator") as other:  # any other error: itself
        pin(_Pinning("no accelerator is available"))
    assert not isinstance(other.value, PinnedMemoryError)
