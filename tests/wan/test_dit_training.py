"""Training support: per-block gradient checkpointing and torch.compile(fullgraph=True) of one block."""

from __future__ import annotations

import pytest
import torch

from pusa_fw_wan.dit.rope import rope_frequencies


def _block_inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    frames, height, width, dim = 3, 2, 3, 256
    x = torch.randn(2, frames * height * width, dim, generator=generator)
    time_projection = 0.1 * torch.randn(2, frames, 6, dim, generator=generator)
    context = torch.randn(2, 7, dim, generator=generator)
    rope = rope_frequencies((frames, height, width), head_dim=128)
    return x, time_projection, context, rope


def _loss_and_grads(
    model: torch.nn.Module, checkpointing: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    latents = torch.randn(1, 16, 3, 4, 4, generator=generator)
    context = torch.randn(1, 6, 64, generator=generator)
    target = torch.randn(1, 16, 3, 4, 4, generator=generator)
    model.zero_grad(set_to_none=True)
    model.enable_gradient_checkpointing(checkpointing)
    loss = (model.velocity(latents, torch.tensor([[0.9, 0.4, 0.1]]), context) - target).pow(2).mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_gradients(make_random_dit) -> None:
    model = make_random_dit(seed=9)
    recomputed_blocks: list[int] = []
    for index, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda _m, _a, index=index: recomputed_blocks.append(index))
    plain_loss, plain_grads = _loss_and_grads(model, checkpointing=False)
    assert recomputed_blocks == [0, 1]
    recomputed_blocks.clear()
    checkpointed_loss, checkpointed_grads = _loss_and_grads(model, checkpointing=True)
    assert recomputed_blocks == [0, 1, 1, 0]  # forward, then each block again during backward
    assert torch.equal(plain_loss, checkpointed_loss)
    for name, gradient in plain_grads.items():
        assert gradient.abs().sum() > 0, f"{name} got no gradient"
        error = (gradient - checkpointed_grads[name]).abs().max().item()
        assert error <= 1e-6 * max(1.0, gradient.abs().max().item()), (
            f"{name}: checkpointed grad differs by {error}"
        )


def test_one_block_traces_without_graph_breaks(make_random_dit) -> None:
    """fullgraph=True makes dynamo raise on any graph break; the eager backend keeps this fast."""
    torch._dynamo.reset()
    block = make_random_dit(seed=10, num_layers=1).blocks[0]
    inputs = _block_inputs()
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.allclose(compiled(*inputs), block(*inputs), atol=1e-6)


@pytest.mark.slow
def test_one_block_compiles_with_inductor_on_cpu(make_random_dit) -> None:
    torch._dynamo.reset()
    block = make_random_dit(seed=11, num_layers=1).blocks[0]
    inputs = _block_inputs(seed=1)
    compiled = torch.compile(block, fullgraph=True)
    with torch.no_grad():
        expected = block(*inputs)
        got = compiled(*inputs)
    error = (got - expected).abs().max().item()
    assert error <= 1e-4, f"inductor-compiled block differs by {error}"
