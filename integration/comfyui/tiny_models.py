"""Tiny random Wan2.1 files that both ComfyUI and ``pusa-fw generate`` load (run inside ComfyUI's venv).

ComfyUI infers a Wan checkpoint's shape with fixed assumptions (``num_heads = dim // 128``, text dim 4096,
``freq_dim`` 256, VAE base width 96), so the DiT here is dim 128 with one head and text dim 4096, and the
VAE is the released width with random weights. The umT5 encoder has ``d_model`` 4096 (what the DiT's text
embedding takes) but tiny inner sizes, so it runs in milliseconds; ComfyUI's own text encoder cannot load
it (it builds the full umT5-xxl), so the prompts reach ComfyUI as the embeddings pusa-fw computed with it
(see `scenario.prompt_embeddings`).

The DiT file is shared: ComfyUI's ``models/diffusion_models/<name>`` is the very file ``pusa-fw generate``
reads through ``--model`` (its directory holds the official ``config.json`` beside it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pusa_fw.io.atomic import atomic_write_bytes
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.testing.tiny import _umt5_tensors, _write_tokenizer, randomise_parameters
from pusa_fw_wan.vae.model import WanVAE
from pusa_fw_wan.weights import write_tensor_file

__all__ = ["DIT_NAME", "TinyFiles", "VAE_NAME", "write_tiny_models"]

DIT_NAME = "pusa_tiny_wan21_t2v.safetensors"
VAE_NAME = "pusa_tiny_wan21_vae.safetensors"
TEXT_DIM = 4096
"""umT5-xxl width: ComfyUI sizes the Wan text embedding from it."""


@dataclass(frozen=True)
class TinyFiles:
    """Where the tiny models are: the DiT directory (``--model``), VAE, umT5 and tokenizer."""

    dit_dir: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path

    def cli_args(self) -> list[str]:
        return [
            "--model",
            str(self.dit_dir),
            "--vae",
            str(self.vae),
            "--text-encoder",
            str(self.text_encoder),
            "--tokenizer",
            str(self.tokenizer),
        ]


def write_tiny_models(models_dir: Path, work_dir: Path, seed: int = 0) -> TinyFiles:
    """Write the DiT to ``models_dir/diffusion_models``, the VAE to ``models_dir/vae``, umT5 to `work_dir`.

    Args:
        models_dir: ComfyUI's ``models`` folder (under its ``--base-directory``).
        work_dir: scratch folder for the text encoder and tokenizer (ComfyUI does not read them).
        seed: seed of every random weight.
    """
    generator = torch.Generator().manual_seed(seed)
    dit_dir = models_dir / "diffusion_models"
    vae_dir = models_dir / "vae"
    for folder in (dit_dir, vae_dir, work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config = WanConfig(dim=128, num_heads=1, num_layers=2, ffn_dim=256, freq_dim=256, text_dim=TEXT_DIM)
    dit = randomise_parameters(WanDiT(config), generator)
    write_tensor_file(dit_dir / DIT_NAME, dict(dit.state_dict()), {"format": "pt"})
    atomic_write_bytes(dit_dir / "config.json", json.dumps(config.to_official_json(), indent=2).encode())
    vae = randomise_parameters(WanVAE(dim=96, z_dim=16), generator)
    write_tensor_file(vae_dir / VAE_NAME, dict(vae.state_dict()), {"format": "pt"})
    text_encoder = work_dir / "tiny_umt5_d4096.safetensors"
    tensors = _umt5_tensors(
        vocab_size=128,
        d_model=TEXT_DIM,
        num_heads=2,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        buckets=32,
        generator=generator,
    )
    write_tensor_file(text_encoder, tensors, {"format": "pt"})
    _write_tokenizer(work_dir / "tokenizer", 128)
    return TinyFiles(
        dit_dir=dit_dir, vae=vae_dir / VAE_NAME, text_encoder=text_encoder, tokenizer=work_dir / "tokenizer"
    )
