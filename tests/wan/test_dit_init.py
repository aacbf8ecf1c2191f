"""`init_wan`: the official Wan2.1 initialisation law, seeded; the training adapter's ``init="wan"``."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw_train.adapter import get_train_adapter
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.init import init_wan
from pusa_fw_wan.dit.model import WanDiT

ARCHITECTURE = {"in_dim": 4, "out_dim": 4, "patch_size": (1, 2, 2), "dim": 64, "num_heads": 2, "num_layers": 2,
                "ffn_dim": 256, "freq_dim": 32, "text_dim": 16, "text_len": 6}


def test_init_wan_follows_the_official_law() -> None:
    model = init_wan(WanDiT(WanConfig(**ARCHITECTURE)), torch.Generator().manual_seed(0))
    parameters = dict(model.named_parameters())
    assert torch.count_nonzero(parameters["head.head.weight"]) == 0
    for name, value in parameters.items():
        if name.endswith("bias") and name != "patch_embedding.bias":
            assert torch.count_nonzero(value) == 0, name
        if "norm" in name and name.endswith("weight"):
            assert torch.equal(value, torch.ones_like(value)), name
    bound = (6 / (64 + 256)) ** 0.5  # Xavier-uniform of a 64 -> 256 linear
    ffn = parameters["blocks.0.ffn.0.weight"]
    assert ffn.abs().max() <= bound and abs(ffn.std().item() - bound / 3**0.5) < 0.1 * bound
    kernel = parameters["patch_embedding.weight"]  # Xavier over [dim, in_dim * patch volume]
    assert kernel.abs().max() <= (6 / (64 + 16)) ** 0.5
    patch_bias = parameters["patch_embedding.bias"]  # PyTorch's own Conv3d law, left alone by Wan
    assert 0 < patch_bias.abs().max() <= 1 / 16**0.5
    for name in ("text_embedding.0.weight", "time_embedding.2.weight"):
        assert abs(parameters[name].std().item() - 0.02) < 0.004, name
    modulation = parameters["blocks.1.modulation"]
    assert abs(modulation.std().item() - 1 / 8) < 0.03


def test_adapter_init_wan_is_seeded_and_starts_at_zero_velocity() -> None:
    adapter = get_train_adapter("wan2.1-t2v")
    first = adapter.build_model(None, ARCHITECTURE, 7, init="wan")
    again = adapter.build_model(None, ARCHITECTURE, 7, init="wan")
    other = adapter.build_model(None, ARCHITECTURE, 8, init="wan")
    for (name, value), twin, different in zip(first.state_dict().items(), again.state_dict().values(),
                                              other.state_dict().values()):
        assert torch.equal(value, twin), name
    assert not torch.equal(first.blocks[0].self_attn.q.weight, other.blocks[0].self_attn.q.weight)
    velocity = first(torch.randn(1, 4, 2, 4, 4), torch.full((1, 2), 0.7), torch.randn(1, 6, 16))
    assert torch.count_nonzero(velocity) == 0
    with pytest.raises(InputError, match="cannot be built shard-only"):
        adapter.build_model(None, ARCHITECTURE, 7, init="wan", device="meta")
    with pytest.raises(InputError, match="'random', 'default' or 'wan'"):
        adapter.build_model(None, ARCHITECTURE, 7, init="xavier")
