"""Checkpointed token chunks (``WanDiT.enable_gradient_checkpointing(token_chunks=n)``): the backward of a
block holds one group of frames' cross-attention and FFN activations at a time; outputs equal one pass,
gradients within float32 rounding, inference unchanged."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.dit.init import init_from_seed

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = WanConfig(dim=64, ffn_dim=128, num_heads=2, text_dim=32, text_len=8, num_layers=2)


def _model(seed: int = 0) -> WanDiT:
    model = WanDiT(CONFIG)
    init_from_seed(model, torch.Generator().manual_seed(seed))
    return model


def _inputs():
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(2, 16, 5, 4, 6, generator=generator)  # 5 frames: groups of 2, 2, 1 with 3 chunks
    sigmas = torch.rand(2, 5, generator=generator)
    context = torch.randn(2, 6, 32, generator=generator)
    return latents, sigmas, context


def _gradients(model: WanDiT, chunks: int, full: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train().requires_grad_(full)
    if not full:  # a LoRA-like subset: the FFN and attention output weights
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.endswith(("ffn.0.weight", "ffn.2.weight", "o.weight")))
    model.enable_gradient_checkpointing(True, token_chunks=chunks)
    latents, sigmas, context = _inputs()
    out = model(latents, sigmas, context)
    out.square().mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("chunks", [2, 3, 5])
def test_chunked_gradients_equal_one_pass_within_rounding(chunks, full):
    model = _model()
    out, grads = _gradients(model, 1, full)
    chunked_out, chunked = _gradients(model, chunks, full)
    torch.testing.assert_close(chunked_out, out, rtol=1e-5, atol=1e-6)
    assert grads.keys() == chunked.keys() and grads
    for name in grads:
        torch.testing.assert_close(chunked[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("branch", ["_cross_branch", "_ffn_branch"])
def test_the_chunks_are_recomputed_in_the_backward(branch):
    model = _model()
    calls = []
    original = getattr(type(model.blocks[0]), branch)

    def counting(block, *args):
        calls.append(args[0].shape[1])
        return original(block, *args)

    for block in model.blocks:
        setattr(block, branch, counting.__get__(block))
    model.train().requires_grad_(True)
    model.enable_gradient_checkpointing(True, token_chunks=3)
    latents, sigmas, context = _inputs()
    model(latents, sigmas, context).square().mean().backward()
    # per block: 3 groups (2, 2, 1 frames) in the forward, again in the block's recomputation, and once
    # more in each group's own backward
    assert sorted(calls) == sorted([2, 2, 1] * 3 * len(model.blocks))


def test_inference_ignores_the_chunks_bit_exactly():
    model = _model().eval()
    latents, sigmas, context = _inputs()
    with torch.no_grad():
        plain = model(latents, sigmas, context)
        model.enable_gradient_checkpointing(True, token_chunks=3)
        chunked = model(latents, sigmas, context)
    assert torch.equal(plain, chunked)


@pytest.mark.parametrize("chunks", [0, -1, 1.5, True])
def test_a_bad_chunk_count_is_one_line(chunks):
    with pytest.raises(InputError, match="token_chunks must be an integer >= 1"):
        _model().enable_gradient_checkpointing(True, token_chunks=chunks)
