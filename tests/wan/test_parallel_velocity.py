"""Sequence-parallel, FSDP2 and CFG-parallel velocities under torchrun equal the single-process model.

5 latent frames on 2 (and 4) ranks, so the last rank holds padding; scalar `[B]` and per-frame `[B, F]`
sigmas; both guidance branches requested at once (what CFG parallel splits). All layouts of one rank
count run in one torchrun job (one start-up).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from pusa_fw.errors import InputError

from pusa_fw_wan.text.prompts import WAN_DEFAULT_NEGATIVE_PROMPT
from pusa_fw_wan.parallel import ParallelLayout, frame_ranges, valid_sizes
from pusa_fw_wan.parallel.launch import run_torchrun
from pusa_fw_wan.parallel.ulysses import check_heads
from pusa_fw_wan.testing.parallel_worker import write_random_dit
from pusa_fw_wan.testing.tiny import TinyWan

FRAMES = 5


def run_layouts(tmp_path: Path, nproc: int, layouts: list[str], extra: tuple[str, ...] = ()) -> dict:
    """Run the worker under each layout spec and assert every velocity equals the plain model's (<= 1e-5)."""
    model = write_random_dit(tmp_path / "dit")
    generator = torch.Generator().manual_seed(1)
    cases = {
        "latents": torch.randn(2, 16, FRAMES, 4, 6, generator=generator),
        "context": torch.randn(2, 7, 32, generator=generator),
        "negative_context": torch.randn(2, 5, 32, generator=generator),
        "sigmas.scalar": torch.tensor([0.7, 0.3]),
        "sigmas.frames": torch.rand(2, FRAMES, generator=generator),
    }
    save_file(cases, str(tmp_path / "cases.safetensors"))
    result = run_torchrun(
        ["-m", "pusa_fw_wan.testing.parallel_worker", "--model", str(tmp_path / "dit"),
         "--cases", str(tmp_path / "cases.safetensors"), "--out", str(tmp_path / "out.safetensors"),
         *[option for spec in layouts for option in ("--layout", spec)], *extra],
        nproc=nproc, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = load_file(str(tmp_path / "out.safetensors"))
    with torch.no_grad():
        expected = {
            (branch, name): model(cases["latents"], cases[f"sigmas.{name}"], cases[context])
            for name in ("scalar", "frames")
            for branch, context in (("velocity", "context"), ("negative", "negative_context"))
        }
    for spec in layouts:
        for (branch, name), reference in expected.items():
            error = (outputs[f"{spec}/{branch}.{name}"] - reference).abs().max().item()
            assert error <= 1e-5, f"{spec} {branch} {name}: max error {error}"
        sent = outputs[f"{spec}/stats"][0]
        assert (sent > 0) == ("ulysses" in spec), f"{spec}: all-to-all sent {sent} bytes"
    return outputs


def test_two_processes_equal_one(tmp_path: Path, tiny: TinyWan) -> None:
    prompts = ("a cat on the beach", WAN_DEFAULT_NEGATIVE_PROMPT)
    text = ("--text-encoder", str(tiny.text_encoder), "--tokenizer", str(tiny.tokenizer),
            *[option for prompt in prompts for option in ("--prompt", prompt)])
    outputs = run_layouts(tmp_path, 2, ["fsdp", "ulysses=2", "ulysses=2,fsdp", "cfg_parallel",
                                        "cfg_parallel,fsdp"], text)
    for index in range(len(prompts)):  # the umT5 encoder sharded over both ranks (--fsdp-text)
        error = (outputs[f"text.sharded.{index}"] - outputs[f"text.plain.{index}"]).abs().max().item()
        assert error <= 1e-5, f"prompt {index}: sharded text encoder differs by {error}"


@pytest.mark.slow
def test_four_processes_equal_one(tmp_path: Path) -> None:
    run_layouts(tmp_path, 4, ["ulysses=4", "ulysses=2,cfg_parallel,fsdp", "ulysses=2,fsdp"])


@given(frames=st.integers(1, 40), size=st.integers(1, 16))
def test_frame_ranges_cover_every_frame_once_in_order(frames: int, size: int) -> None:
    ranges = frame_ranges(frames, size)
    assert len(ranges) == size
    assert [frame for part in ranges for frame in part] == list(range(frames))
    assert max(len(part) for part in ranges) == -(-frames // size)


def test_heads_that_do_not_divide_name_the_valid_sizes() -> None:
    with pytest.raises(InputError, match=r"40 attention heads; use one of \[1, 2, 4, 5, 8, 10, 20, 40\]"):
        check_heads(40, 3)
    with pytest.raises(InputError, match=r"12 attention heads; use one of \[1, 2, 3, 4, 6, 12\]"):
        check_heads(12, 8)
    assert valid_sizes(40) == [1, 2, 4, 5, 8, 10, 20, 40]


def test_layout_checks_world_size_and_frames() -> None:
    layout = ParallelLayout(ulysses=4, cfg_parallel=True)
    assert layout.world_size == 8
    layout.check_world(8)
    with pytest.raises(InputError, match="needs 8 processes but the job has 4"):
        layout.check_world(4)
    with pytest.raises(InputError, match="more ranks than the 3 latent frames"):
        layout.check_model(num_heads=40, window_frames=3)
    with pytest.raises(InputError, match="--cfg-parallel needs guidance"):
        layout.check_model(num_heads=40, window_frames=21, cfg=1.0)
