"""FSDP2 `shard_dit`: the sharded forward under torchrun (2 processes, gloo) equals the plain model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pusa_fw.errors import InputError

from pusa_fw_wan.parallel import shard_dit, shard_text_encoder
from pusa_fw_wan.parallel.launch import run_torchrun
from pusa_fw_wan.testing.parallel_worker import write_random_dit


def test_fsdp_forward_equals_unsharded(tmp_path: Path) -> None:
    model = write_random_dit(tmp_path / "dit")
    generator = torch.Generator().manual_seed(0)
    frames = 5
    cases = {
        "latents": torch.randn(1, 16, frames, 4, 6, generator=generator),
        "context": torch.randn(1, 7, 32, generator=generator),
        "sigmas.scalar": torch.tensor([0.7]),
        "sigmas.frames": torch.rand(1, frames, generator=generator),
    }
    save_file(cases, str(tmp_path / "cases.safetensors"))
    result = run_torchrun(
        ["-m", "pusa_fw_wan.testing.parallel_worker", "--model", str(tmp_path / "dit"),
         "--cases", str(tmp_path / "cases.safetensors"), "--out", str(tmp_path / "out.safetensors"),
         "--fsdp"],
        nproc=2, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = load_file(str(tmp_path / "out.safetensors"))
    with torch.no_grad():
        for name in ("scalar", "frames"):
            expected = model(cases["latents"], cases[f"sigmas.{name}"], cases["context"])
            error = (outputs[f"velocity.{name}"] - expected).abs().max().item()
            assert error <= 1e-5, f"{name}: max error {error}"


def test_shard_dit_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="blocks"):
        shard_dit(nn.Linear(2, 2), mesh=None)
    with pytest.raises(InputError, match="DeviceMesh"):
        shard_dit(write_random_dit(tmp_path / "dit"), mesh="cpu")
    with pytest.raises(InputError, match="encoder.block"):
        shard_text_encoder(nn.Linear(2, 2), mesh=None)
