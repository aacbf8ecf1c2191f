"""An inference block frees its self-attention input and output (two fp32 `[B, L, D]` tensors) before
cross-attention and the FFN, whose hidden `[B, L, ffn_dim]` is the block's peak; outputs are unchanged."""

from __future__ import annotations

import weakref

import pytest
import torch

from pusa_fw_wan import WanConfig, WanDiT
from pusa_fw_wan.dit.init import init_from_seed

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = WanConfig(dim=64, ffn_dim=128, num_heads=2, text_dim=32, text_len=8, num_layers=2)


def _inputs():
    generator = torch.Generator().manual_seed(5)
    return (torch.randn(1, 16, 3, 4, 6, generator=generator), torch.rand(1, 3, generator=generator),
            torch.randn(1, 6, 32, generator=generator))


def test_self_attention_tensors_are_dead_when_the_ffn_runs():
    model = WanDiT(CONFIG).eval()
    init_from_seed(model, torch.Generator().manual_seed(0))
    block = model.blocks[0]
    watched: dict[str, weakref.ref] = {}
    alive_at_ffn: list[list[str]] = []
    attention, ffn = block.self_attn.forward, block._ffn_branch

    def attention_watched(x, rope):
        watched["attn_in"] = weakref.ref(x._base)  # the rearranged view of the modulated input
        out = attention(x, rope)
        watched["attn_out"] = weakref.ref(out)  # float32 already: .float() is the same tensor
        return out

    def ffn_watched(*args):
        alive_at_ffn.append([name for name, ref in watched.items() if ref() is not None])
        return ffn(*args)

    block.self_attn.forward = attention_watched
    block._ffn_branch = ffn_watched
    with torch.no_grad():
        model(*_inputs())
    assert alive_at_ffn == [[]], f"alive during the FFN: {alive_at_ffn}"
