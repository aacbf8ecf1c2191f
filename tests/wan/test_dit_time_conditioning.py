"""Per-frame time conditioning of `WanDiT`: scalar equivalence, per-frame shapes only, input errors."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError


@pytest.fixture()
def tiny_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return {
        "latents": torch.randn(2, 16, 4, 4, 6, generator=generator),
        "context": torch.randn(2, 9, 64, generator=generator),
    }


def test_all_frames_equal_is_one_scalar_sigma(make_random_dit, tiny_inputs) -> None:
    model = make_random_dit(seed=1)
    scalar = torch.tensor([0.73, 0.2])
    per_frame = scalar[:, None].expand(2, 4).contiguous()
    with torch.no_grad():
        from_scalar = model.velocity(tiny_inputs["latents"], scalar, tiny_inputs["context"])
        from_frames = model.velocity(tiny_inputs["latents"], per_frame, tiny_inputs["context"])
    error = (from_scalar - from_frames).abs().max().item()
    assert torch.equal(from_scalar, from_frames), (
        f"all-equal per-frame sigmas vs one scalar sigma: max-abs {error}"
    )


def test_different_frame_sigmas_change_the_output(make_random_dit, tiny_inputs) -> None:
    model = make_random_dit(seed=2)
    with torch.no_grad():
        equal = model.velocity(tiny_inputs["latents"], torch.full((2, 4), 0.5), tiny_inputs["context"])
        varied = model.velocity(
            tiny_inputs["latents"], torch.tensor([[0.5, 0.5, 0.5, 0.9]] * 2), tiny_inputs["context"]
        )
    assert (equal - varied).abs().max().item() > 1e-3


def test_blocks_and_head_receive_only_per_frame_time_tensors(make_random_dit, tiny_inputs) -> None:
    """No [B, L, 6, D] or [B, L, D] time tensor reaches a block or the head."""
    model = make_random_dit(seed=3)
    seen: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def record(name: str):
        def hook(_module: torch.nn.Module, args: tuple) -> None:
            seen.append((name, tuple(args[0].shape), tuple(args[1].shape)))

        return hook

    handles = [block.register_forward_pre_hook(record(f"block{i}")) for i, block in enumerate(model.blocks)]
    handles.append(model.head.register_forward_pre_hook(record("head")))
    try:
        sigmas = torch.tensor([[1.0, 0.6, 0.3, 0.0], [0.2, 0.2, 0.9, 0.1]])
        with torch.no_grad():
            model.velocity(tiny_inputs["latents"], sigmas, tiny_inputs["context"])
    finally:
        for handle in handles:
            handle.remove()
    batch, frames, tokens, dim = 2, 4, 4 * 2 * 3, 256
    assert [name for name, _, _ in seen] == ["block0", "block1", "head"]
    for name, x_shape, time_shape in seen:
        assert x_shape == (batch, tokens, dim)
        expected = (batch, frames, dim) if name == "head" else (batch, frames, 6, dim)
        assert time_shape == expected, f"{name} got time tensor {time_shape}, expected per-frame {expected}"


def test_time_mlp_runs_once_per_distinct_timestep(make_random_dit, tiny_inputs) -> None:
    model = make_random_dit(seed=4)
    rows: list[int] = []
    handle = model.time_embedding.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            model.velocity(tiny_inputs["latents"], torch.tensor([0.5, 0.25]), tiny_inputs["context"])
            model.velocity(
                tiny_inputs["latents"],
                torch.tensor([[0.5, 0.5, 0.1, 0.0], [0.1, 0.5, 0.5, 0.5]]),
                tiny_inputs["context"],
            )
            model.velocity(tiny_inputs["latents"], torch.tensor([0.5, 0.5]), tiny_inputs["context"])
    finally:
        handle.remove()
    assert rows == [2, 3, 1]


def test_output_dtype_and_shape_follow_latents(make_random_dit, tiny_inputs) -> None:
    model = make_random_dit(seed=5)
    with torch.no_grad():
        out = model.velocity(tiny_inputs["latents"].double(), torch.rand(2, 4), tiny_inputs["context"])
    assert out.shape == tiny_inputs["latents"].shape and out.dtype == torch.float64


@pytest.mark.parametrize(
    ("latents_shape", "sigmas", "context_shape", "message"),
    [
        ((2, 16, 4, 4), torch.rand(2), (2, 9, 64), "latents must be"),
        ((2, 8, 4, 4, 6), torch.rand(2), (2, 9, 64), "in_dim=16"),
        ((2, 16, 4, 5, 6), torch.rand(2), (2, 9, 64), "multiples of the patch"),
        ((2, 16, 4, 4, 6), torch.rand(2, 3), (2, 9, 64), "[B, F]=[2, 4]"),
        ((2, 16, 4, 4, 6), torch.full((2, 4), 999.0), (2, 9, 64), "[0, 1]"),
        ((2, 16, 4, 4, 6), torch.full((2, 4), -0.1), (2, 9, 64), "[0, 1]"),
        ((2, 16, 4, 4, 6), torch.rand(2), (2, 9, 32), "text_dim=64"),
        ((2, 16, 4, 4, 6), torch.rand(2), (1, 9, 64), "B=2"),
        ((2, 16, 4, 4, 6), torch.rand(2), (2, 513, 64), "text_len=512"),
    ],
)
def test_bad_inputs_raise_input_error(make_random_dit, latents_shape, sigmas, context_shape, message) -> None:
    model = make_random_dit(seed=6, num_layers=1)
    with pytest.raises(InputError) as caught:
        model.velocity(torch.zeros(latents_shape), sigmas, torch.zeros(context_shape))
    assert message in str(caught.value)


def test_nan_sigma_is_rejected(make_random_dit) -> None:
    model = make_random_dit(seed=7, num_layers=1)
    with pytest.raises(InputError, match="NaN"):
        model.velocity(torch.zeros(1, 16, 1, 2, 2), torch.tensor([float("nan")]), torch.zeros(1, 3, 64))
