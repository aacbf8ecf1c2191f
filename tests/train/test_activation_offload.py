"""Activation offload (``activation_offload = true``): the checkpointed block inputs live on the host between
the forward and the backward, gradients unchanged; refused in one line where it cannot work."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw.fafm import masked_frame_mean
from pusa_fw.ptss import PTSS
from pusa_fw.training_data import InMemorySource
from pusa_fw_train.activation_offload import ActivationOffload
from pusa_fw_train.block_swap import BlockSwap
from pusa_fw_train.build import build_model
from pusa_fw_train.lora import trainable_tensors
from pusa_fw_train.step import collate, draw_for_batch, frame_loss_terms
from pusa_fw_wan.testing.train import tiny_config
from pusa_fw_wan.train.adapter import WanTrainAdapter

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch():
    source = InMemorySource.random(2, (16, 3, 4, 4), (4, 16), seed=7)
    batch = collate([source.load(0), source.load(1)], [0, 1], torch.device("cpu"))
    draws = draw_for_batch(
        PTSS(p_async=1.0), batch.latents.shape, batch.indices, seed=0, step=0, micro_step=0,
        device=torch.device("cpu"),
    )
    return batch, draws


def _model(tmp_path: Path, mode: str, layers: int = 3, weights_dtype: str = "auto"):
    overrides = {"model.architecture.num_layers": layers, "mode": mode}
    if mode == "lora":
        overrides["weights_dtype"] = weights_dtype
    config = tiny_config(tmp_path, gradient_checkpointing=True, **overrides)
    model, _ = build_model(config, WanTrainAdapter())
    if mode == "lora":
        with torch.no_grad():  # B = 0 at init would leave A without gradient: give both a value
            for tensor in trainable_tensors(model).values():
                generator = torch.Generator().manual_seed(tensor.numel())
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model


def _gradients(model, batch, draws, autocast: bool) -> dict[str, torch.Tensor]:
    terms, _ = frame_loss_terms(model, batch, draws, autocast_dtype=torch.bfloat16 if autocast else None)
    masked_frame_mean(terms, None, draws.loss_mask).backward()
    return {name: tensor.grad.clone() for name, tensor in trainable_tensors(model).items()}


@pytest.mark.parametrize(
    ("mode", "weights_dtype", "autocast"),
    [
        ("lora", "float32", False),
        ("lora", "float8_e4m3fn", True),
        ("full", "auto", False),
        ("full", "auto", True),
    ],
)
def test_gradients_equal_no_offload(tmp_path, mode, weights_dtype, autocast):
    batch, draws = _batch()
    plain = _gradients(_model(tmp_path, mode, weights_dtype=weights_dtype), batch, draws, autocast)
    model = _model(tmp_path, mode, weights_dtype=weights_dtype)
    offload = ActivationOffload(model, "cpu", min_bytes=0)
    offloaded = _gradients(model, batch, draws, autocast)
    assert offload.packed > 0 and offload.unpacked >= offload.packed
    assert offload.peak_host_bytes >= offload.offloaded_bytes > 0
    assert plain.keys() == offloaded.keys() and plain
    for name in plain:
        assert torch.equal(plain[name], offloaded[name]), name


def _block_inputs_alive_after_forward(model, batch, draws) -> list[bool]:
    inputs: list[weakref.ref] = []
    handles = [
        block.register_forward_pre_hook(lambda _module, args: inputs.append(weakref.ref(args[0])))
        for block in model.blocks
    ]
    terms, _ = frame_loss_terms(model, batch, draws)
    for handle in handles:
        handle.remove()
    alive = [ref() is not None for ref in inputs[: len(model.blocks)]]
    del terms
    return alive


def test_the_block_inputs_leave_the_device_after_the_forward(tmp_path):
    batch, draws = _batch()
    model = _model(tmp_path, "lora")
    assert _block_inputs_alive_after_forward(model, batch, draws) == [True, True, True]  # kept by checkpoint
    offload = ActivationOffload(model, "cpu", min_bytes=0)
    # host copies, but the last block's input: the backward needs it first, it stays
    assert _block_inputs_alive_after_forward(model, batch, draws) == [False, False, True]
    assert offload.host_bytes == 0  # the forward's graph is gone: so are its host copies
    offload.detach()
    assert _block_inputs_alive_after_forward(model, batch, draws) == [True, True, True]


def test_each_further_block_offloads_its_input_once_and_shared_inputs_once(tmp_path):
    batch, draws = _batch()
    counts, sizes = [], []
    for layers in (2, 3):
        model = _model(tmp_path, "lora", layers=layers)
        offload = ActivationOffload(model, "cpu", min_bytes=0)
        terms, _ = frame_loss_terms(model, batch, draws)
        counts.append(offload.packed)
        sizes.append(offload.offloaded_bytes)
        masked_frame_mean(terms, None, draws.loss_mask).backward()
    tokens, dim = 2 * 3 * 2 * 2, model.config.dim  # batch 2, 3 frames of 2 x 2 patches
    assert counts[1] - counts[0] == 1  # the second block's input (the last one's stays); shared ones stay
    assert sizes[1] - sizes[0] == tokens * dim * 4  # one float32 residual [B, L, D]


def test_small_tensors_and_passes_without_gradients_stay_on_the_device(tmp_path):
    batch, draws = _batch()
    model = _model(tmp_path, "lora")
    offload = ActivationOffload(model, "cpu")  # the default threshold is far above the tiny model's tensors
    terms, _ = frame_loss_terms(model, batch, draws)
    assert offload.packed == 0
    del terms
    offload.min_bytes = 0
    with torch.no_grad():
        frame_loss_terms(model, batch, draws)
    assert offload.packed == 0


@pytest.mark.parametrize("autocast", [False, True])
def test_offload_with_block_swap_gives_the_same_gradients(tmp_path, autocast):
    batch, draws = _batch()
    plain = _gradients(_model(tmp_path, "lora", weights_dtype="float8_e4m3fn"), batch, draws, autocast)
    model = _model(tmp_path, "lora", weights_dtype="float8_e4m3fn")
    swap = BlockSwap(model, 2, "cpu")
    offload = ActivationOffload(model, "cpu", min_bytes=0)
    both = _gradients(model, batch, draws, autocast)
    assert swap.copies == 2 * 2 and offload.unpacked >= offload.packed > 0
    for name in plain:
        assert torch.equal(plain[name], both[name]), name


def test_a_few_training_steps_with_offload_and_swap_match_plain_ones(tmp_path):
    batch, draws = _batch()
    finals = []
    for extras in (False, True):
        model = _model(tmp_path, "lora", weights_dtype="bfloat16")
        if extras:
            BlockSwap(model, 1, "cpu")
            ActivationOffload(model, "cpu", min_bytes=0)
        optimizer = torch.optim.AdamW(list(trainable_tensors(model).values()), lr=1e-2)
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            terms, _ = frame_loss_terms(model, batch, draws, autocast_dtype=torch.bfloat16)
            masked_frame_mean(terms, None, draws.loss_mask).backward()
            optimizer.step()
        finals.append({name: tensor.detach().clone() for name, tensor in trainable_tensors(model).items()})
    for name in finals[0]:
        assert torch.equal(finals[0][name], finals[1][name]), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"activation_offload": True, "gradient_checkpointing": False}, "gradient_checkpointing is false"),
        ({"activation_offload": True, "gradient_checkpointing": None, "mode": "full"}, "unset is off"),
        ({"activation_offload": True, "gradient_checkpointing": True, "distributed": "fsdp"}, "fsdp"),
    ],
)
def test_offload_without_checkpointing_or_with_fsdp_is_refused_in_one_line(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message) as error:
        tiny_config(tmp_path, **overrides)
    assert "\n" not in str(error.value) and "activation_offload" in str(error.value)


def test_offload_is_accepted_with_checkpointing_and_block_swap(tmp_path):
    config = tiny_config(tmp_path, activation_offload=True, gradient_checkpointing=None, block_swap=1)
    assert config.activation_offload and config.block_swap == 1
    full = tiny_config(tmp_path, activation_offload=True, gradient_checkpointing=True, mode="full")
    assert full.activation_offload


def test_each_block_input_is_prefetched_while_the_block_after_it_is_recomputed(tmp_path):
    batch, draws = _batch()
    model = _model(tmp_path, "lora", layers=4)
    block_input_bytes = 2 * 3 * 2 * 2 * model.config.dim * 4  # fp32 [B, L, D]
    offload = ActivationOffload(model, "cpu", min_bytes=block_input_bytes)
    terms, _ = frame_loss_terms(model, batch, draws)
    masked_frame_mean(terms, None, draws.loss_mask).backward()
    # the first three block inputs; the last block's input and the head's stay on the device, and so does
    # the tensor every block is given
    assert offload.packed == 3 and offload.unpacked == 3
    # every block input copied out was already back when its block's recomputation asked for it (block 3's
    # input brought block 2's, ...), and never more than one copy waited
    assert offload.prefetch_hits == 3 and offload.peak_prefetched == 1


def test_shared_and_last_saved_tensors_stay_on_the_device_and_the_host_buffer_is_reused(tmp_path):
    batch, draws = _batch()
    plain = []
    model = _model(tmp_path, "lora", layers=4)
    for _ in range(2):
        plain.append(_gradients(model, batch, draws, autocast=False))
        model.zero_grad(set_to_none=True)
    model = _model(tmp_path, "lora", layers=4)
    offload = ActivationOffload(model, "cpu", min_bytes=0, reuse_host_buffer=True)
    records = []
    pack = offload.pack
    offload.pack = lambda tensor: records.append(pack(tensor)) or records[-1]
    block_input_bytes = 2 * 3 * 2 * 2 * model.config.dim * 4  # fp32 [B, L, D]
    for step in range(2):
        records.clear()
        grads = _gradients(model, batch, draws, autocast=False)
        model.zero_grad(set_to_none=True)
        for name in plain[step]:
            assert torch.equal(plain[step][name], grads[name]), (step, name)
        copied = {id(r): r for r in records if getattr(r, "host", None) is not None}
        shared = {id(r): r for r in records if not isinstance(r, torch.Tensor) and r.shared}
        assert shared and all(record.kept is not None and record.host is None for record in shared.values())
        assert offload.offloaded_bytes == 3 * block_input_bytes, "the first three block inputs, nothing else"
        assert len(copied) == 3
        if step == 1:  # the second forward writes into the one buffer sized by the first
            assert offload.host_buffer_bytes >= 3 * block_input_bytes
            storage = offload._buffer.buffer.untyped_storage().data_ptr()
            assert {r.host.untyped_storage().data_ptr() for r in copied.values()} == {storage}
        del copied, shared  # host copies of this step still alive would make the next one not reuse it
    del records
    assert offload.host_bytes == 0
