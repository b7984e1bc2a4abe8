"""The one training step (nas.train.step): in fp32 on the CPU it is exactly torch's own step, it
reads nothing back to the host, fp16's gradient scaler skips an overflowing update, and the
optimizer's update implementation follows the device, also after loading a saved state."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F

from nas.arch.architecture import Architecture
from nas.config.recipe import Recipe
from nas.train.checkpoint import load_checkpoint, save_checkpoint
from nas.train.fit import set_seed
from nas.train.model import build_model
from nas.train.optimizer import (
    accepts_fused,
    make_optimizer,
    match_optimizer_state,
    reapply_speed_options,
    speed_options,
    step_home,
)
from nas.train.precision import Precision
from nas.train.step import TrainingStep, float_logits, restore_scaler

pytestmark = pytest.mark.usefixtures("one_thread")
ARCH = Architecture((8, 16), (1, 1), stem=8, num_classes=4)
FP32 = Precision("fp32", "cpu", "test")
FP16 = Precision("fp16", "cpu", "test")  # CPU autocast runs fp16: the scaler path, testable here
CPU = torch.device("cpu")


def batch(seed: int = 0, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 16, 16, generator=generator)
    return images, torch.randint(0, 4, (size,), generator=generator)


def model_pair(seed: int = 0):
    set_seed(seed)
    model = build_model(ARCH)
    return model, copy.deepcopy(model)


@pytest.mark.parametrize(
    ("optimizer", "reference"),
    [
        ("adam", lambda params: torch.optim.Adam(params, lr=1e-3)),
        ("adamw", lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)),
        ("sgd", lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9)),
    ],
)
def test_an_fp32_cpu_step_is_exactly_torch_s_own(optimizer, reference):
    model, twin = model_pair()
    config = Recipe(optimizer=optimizer, lr=1e-3, momentum=0.9, weight_decay=0.0)
    step = TrainingStep(model, make_optimizer(model, config, CPU), FP32)
    by_hand = reference(twin.parameters())
    for seed in range(3):
        images, labels = batch(seed)
        loss, logits = step(images, labels)
        # the reference, written out: forward, loss, zero_grad, backward, step
        expected_logits = twin(images)
        expected_loss = F.cross_entropy(expected_logits, labels)
        by_hand.zero_grad(set_to_none=True)
        expected_loss.backward()
        by_hand.step()
        assert torch.equal(loss, expected_loss.detach())
        assert torch.equal(logits, expected_logits.detach())
    for (name, mine), theirs in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_the_step_returns_detached_float_tensors_and_reads_nothing_back():
    model, _ = model_pair()
    step = TrainingStep(model, make_optimizer(model, Recipe(), CPU), FP16)
    loss, logits = step(*batch())
    assert not loss.requires_grad and not logits.requires_grad
    assert loss.dtype == logits.dtype == torch.float32  # fp16 forward, float32 logits and loss
    assert loss.shape == () and logits.shape == (8, 4)


def test_fp16_scales_the_loss_and_skips_an_update_whose_gradients_overflow():
    model, _ = model_pair()
    step = TrainingStep(model, make_optimizer(model, Recipe(), CPU), FP16)
    assert step.scaler.get_scale() == 2.0**16  # torch's initial loss scale
    step(*batch(0))  # finite gradients: the update happens, the scale stays
    assert step.scaler.get_scale() == 2.0**16
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    images, labels = batch(1)
    loss, _ = step(images * 1e6, labels)  # fp16 tops out at 65504: the forward overflows
    assert not torch.isfinite(loss)
    assert step.scaler.get_scale() == 2.0**15  # backed off by half
    for name, tensor in model.named_parameters():
        assert torch.equal(tensor, before[name]), name  # the update was skipped


def test_the_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    model, _ = model_pair()
    step = TrainingStep(model, make_optimizer(model, Recipe(), CPU), FP16)
    images, labels = batch(1)
    step(images * 1e6, labels)  # scale 2**15 now: not the initial value
    save_checkpoint({"scaler": step.scaler.state_dict()}, tmp_path / "c.ckpt")
    saved = load_checkpoint(tmp_path / "c.ckpt")["scaler"]
    resumed = FP16.grad_scaler()
    assert restore_scaler(resumed, saved) is True
    assert resumed.get_scale() == 2.0**15
    # a resume in bf16 or fp32 starts without a scaler; an fp16 resume of a bf16 run, anew
    assert restore_scaler(FP32.grad_scaler(), saved) is False
    fresh = FP16.grad_scaler()
    assert restore_scaler(fresh, {}) is False and fresh.get_scale() == 2.0**16


@pytest.mark.parametrize(
    ("device_type", "fused_available", "expected"),
    [
        ("cuda", True, {"fused": True, "foreach": None}),
        ("cuda", False, {"fused": None, "foreach": True}),  # an older torch's optimizer
        ("cpu", True, {"fused": None, "foreach": True}),
        ("cpu", False, {"fused": None, "foreach": True}),
    ],
)
def test_the_update_implementation_follows_the_device(device_type, fused_available, expected):
    assert speed_options(device_type, fused_available) == expected


def test_whether_an_optimizer_takes_fused_is_read_from_its_constructor():
    class Plain(torch.optim.Optimizer):
        def __init__(self, params, lr: float = 0.1):
            super().__init__(params, {"lr": lr})

    assert accepts_fused(Plain) is False
    for optimizer in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD):
        assert accepts_fused(optimizer) is ("fused" in inspect.signature(optimizer).parameters)


def test_a_state_saved_with_fused_on_takes_this_device_s_choice_back():
    model, _ = model_pair()
    optimizer = make_optimizer(model, Recipe(), CPU)
    TrainingStep(model, optimizer, FP32)(*batch())
    state = optimizer.state_dict()
    for group in state["param_groups"]:  # as make_optimizer saves it on CUDA
        group.update(fused=True, foreach=None)
    optimizer.load_state_dict(state)
    assert optimizer.param_groups[0]["fused"] is True  # load_state_dict copies the saved flags
    reapply_speed_options(optimizer)
    assert [(g["fused"], g["foreach"]) for g in optimizer.param_groups] == [(None, True)]


def test_a_contiguous_checkpoint_s_optimizer_state_takes_channels_last_parameters_layout():
    """A checkpoint written on the CPU (NCHW parameters, so NCHW moment buffers) resumed where
    the parameters are channels_last (CUDA): `load_state_dict` keeps the saved layout, which the
    fused update refuses; after `match_optimizer_state` every buffer is laid out, typed and
    placed as its parameter, and the next step is the one the saved run would have taken."""
    saved_model, _ = model_pair()
    optimizer = make_optimizer(saved_model, Recipe(), CPU)
    TrainingStep(saved_model, optimizer, FP32)(*batch())
    state = copy.deepcopy(optimizer.state_dict())
    for group in state["param_groups"]:
        group.update(fused=None, foreach=True)  # as make_optimizer saves it on the CPU

    model = copy.deepcopy(saved_model).to(memory_format=torch.channels_last)
    resumed = make_optimizer(model, Recipe(), CPU)
    resumed.load_state_dict(state)
    reapply_speed_options(resumed)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    # the defect: loaded as saved, NCHW beside channels_last parameters
    assert any(resumed.state[p]["exp_avg"].stride() != p.stride() for p in convs)

    match_optimizer_state(resumed)
    for param in model.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            buffer = resumed.state[param][key]
            assert buffer.stride() == param.stride(), key
            assert (buffer.dtype, buffer.device) == (param.dtype, param.device), key
        assert resumed.state[param]["step"].device == CPU  # foreach reads it on the host

    TrainingStep(saved_model, optimizer, FP32)(*batch(1))
    TrainingStep(model, resumed, FP32)(*batch(1))
    for before, after in zip(saved_model.parameters(), model.parameters()):
        torch.testing.assert_close(after, before)  # the values came over untouched


def test_adam_s_step_counter_lives_on_the_parameter_s_device_only_for_the_fused_update():
    """torch's fused and capturable Adam read `step` on the parameter's device; the foreach and
    single-tensor ones on the host (torch/optim/adam.py)."""
    cuda = torch.device("cuda", 1)
    assert step_home({"fused": True, "foreach": None}, cuda) == cuda
    assert step_home({"fused": None, "foreach": True, "capturable": True}, cuda) == cuda
    assert step_home({"fused": None, "foreach": True, "capturable": False}, cuda) == CPU
    assert step_home({"fused": False, "foreach": None}, cuda) == CPU


def test_logits_come_back_in_float32_whatever_the_precision():
    model, _ = model_pair()
    images, _ = batch()
    with torch.no_grad():
        expected = model(images)
        for precision in (FP32, FP16, Precision("bf16", "cpu", "test")):
            logits = float_logits(model, images, precision)
            assert logits.dtype == torch.float32, precision.name
    assert torch.equal(float_logits(model, images, FP32), expected)  # fp32: the model's own
