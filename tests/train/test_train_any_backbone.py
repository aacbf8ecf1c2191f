"""The trainer drives any registered backbone: a small non-Wan model, written here and registered through
``register_train_adapters`` by a test plugin, is trained with FAFM through ``pusa-fw train`` (LoRA and full):
its loss falls, and a run stopped and resumed ends bit-identical to one that ran straight through."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from einops import rearrange
from safetensors.torch import load_file
from torch import nn

from pusa_fw import plugins
from pusa_fw.cli import main
from pusa_fw.errors import InputError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.hookspecs import hookimpl
from pusa_fw.training_data import pad_contexts

pytestmark = pytest.mark.usefixtures("one_thread")


class FrameMixer(nn.Module):
    """Not a DiT: per-position MLP whose hidden units see the frame's sigma and the mean text embedding."""

    def __init__(self, channels: int = 4, hidden: int = 32, text_dim: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(channels, hidden)
        self.time = nn.Linear(1, hidden)
        self.text = nn.Linear(text_dim, hidden)
        self.out = nn.Linear(hidden, channels)

    def forward(self, latents: torch.Tensor, sigmas: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        tokens = rearrange(latents, "b c f h w -> b f h w c")
        time = rearrange(self.time(sigmas.unsqueeze(-1)), "b f d -> b f 1 1 d")
        text = rearrange(self.text(context.mean(dim=1)), "b d -> b 1 1 1 d")
        hidden = torch.nn.functional.silu(self.inp(tokens) + time + text)
        return rearrange(self.out(hidden), "b f h w c -> b c f h w")


class FrameMixerAdapter:
    """The training adapter of `FrameMixer` (random init only; no codec, no sharding, no LoRA files)."""

    name = "frame-mixer"
    default_lora_targets = ("inp", "out")

    def build_model(self, path: str | None, architecture: dict[str, Any] | None, init_seed: int) -> nn.Module:
        if path is not None:
            raise InputError("frame-mixer has no checkpoints; give model.architecture")
        model = FrameMixer(**(architecture or {}))
        generator = torch.Generator().manual_seed(init_seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        return model

    def shard(self, model: nn.Module, mesh: Any, **options: Any) -> nn.Module:
        raise InputError("frame-mixer is too small to shard")

    def codec(self, model_path: str | None) -> Any:
        raise InputError("frame-mixer has no codec")

    def geometry(self, model_path: str | None) -> LatentGeometry:
        return WAN21_GEOMETRY

    def text_encoder(self, model_path: str | None) -> Any:
        raise InputError("frame-mixer has no text encoder")

    def collate_context(self, contexts: Sequence[torch.Tensor]) -> torch.Tensor:
        return pad_contexts(contexts)

    def tokens_per_sample(self, latents_shape: Sequence[int]) -> int:
        _, frames, height, width = latents_shape
        return int(frames * height * width)

    def read_lora(self, path: str) -> dict[str, Any]:
        raise InputError("frame-mixer reads no LoRA files")

    def export_lora(self, checkpoint: Path, out: Path, **options: Any) -> Path:
        raise InputError("frame-mixer exports no LoRA files")


class FrameMixerPlugin:
    @staticmethod
    @hookimpl
    def register_train_adapters(register):
        register(FrameMixerAdapter(), name="frame-mixer")


@pytest.fixture()
def frame_mixer_registered():
    manager = plugins.make_plugin_manager(plugins={"frame-mixer-plugin": FrameMixerPlugin()})
    plugins.install_plugin_manager(manager)
    try:
        yield
    finally:
        plugins.reset_plugins()


RUN_FILE = """
output_dir = "{output}"
max_steps = 40
seed = 5
mode = "{mode}"
# Pinned: the run compares exact float32 weights on the CPU whatever the machine's defaults resolve to.
precision = "fp32"
gradient_checkpointing = false
device = "cpu"
[model]
backbone = "frame-mixer"
architecture = {{channels = 4, hidden = 32, text_dim = 8}}
init_seed = 3
[lora]
rank = 4
alpha = 4.0
[data]
source = "random"
batch_size = 4
options = {{count = 4, latent_shape = [4, 3, 4, 4], context_shape = [3, 8], seed = 1}}
[ptss]
p_async = 0.5
held_probability = 0.25
[optimizer]
lr = {lr}
weight_decay = 0.0
[logging]
tensorboard = false
every = 1
"""


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("mode", "lr", "weights"), [("full", 3e-2, "model"), ("lora", 3e-2, "adapter")])
def test_a_non_wan_backbone_trains_with_fafm_through_the_cli(
    tmp_path, capsys, frame_mixer_registered, mode, lr, weights
):
    for name in ("straight", "paused"):
        (tmp_path / f"{name}.toml").write_text(RUN_FILE.format(output=name, mode=mode, lr=lr))
    assert main(["train", "--config", str(tmp_path / "straight.toml"), "--no-progress"]) == 0
    losses = _losses(tmp_path / "straight")
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, f"the loss did not fall: {first:.4f} -> {last:.4f}"

    paused = tmp_path / "paused"
    assert main(["train", "--config", str(tmp_path / "paused.toml"), "--max-steps", "17", "--no-progress"]) == 0
    assert main(["train", "--resume", str(paused), "--max-steps", "40", "--no-progress"]) == 0
    capsys.readouterr()
    straight_file = tmp_path / "straight" / "checkpoints" / "step-0000040" / f"{weights}.safetensors"
    paused_file = paused / "checkpoints" / "step-0000040" / f"{weights}.safetensors"
    straight_tensors, paused_tensors = load_file(str(straight_file)), load_file(str(paused_file))
    assert straight_tensors.keys() == paused_tensors.keys()
    for name, tensor in straight_tensors.items():
        assert torch.equal(paused_tensors[name], tensor), f"{name}: stop + resume is not bit-identical"
    assert _losses(paused) == losses


def test_an_unknown_backbone_is_one_line_naming_the_registered_ones(tmp_path, capsys):
    (tmp_path / "run.toml").write_text(RUN_FILE.format(output="run", mode="full", lr=1e-2))
    assert main(["train", "--config", str(tmp_path / "run.toml"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "'frame-mixer'" in error and "wan2.1-t2v" in error
