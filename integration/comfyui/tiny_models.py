"""Tiny random Wan2.1 files that both ComfyUI and ``pusa-fw generate`` load (run inside ComfyUI's venv).

ComfyUI infers a Wan checkpoint's shape with fixed assumptions (``num_heads = dim // 128``, text dim 4096,
``freq_dim`` 256, VAE base width 96), so the DiT here is dim 128 with one head and text dim 4096, and the
VAE is the released width with random weights. The umT5 encoder has ``d_model`` 4096 (what the DiT's text
embedding takes) but tiny inner sizes, so it runs in milliseconds; ComfyUI's own text encoder cannot load
it (it builds the full umT5-xxl), so the prompts reach ComfyUI as the embeddings pusa-fw computed with it
(see `scenario.prompt_embeddings`).

The DiT file is shared: ComfyUI's ``models/diffusion_models/<name>`` is the very file ``pusa-fw generate``
reads through ``--model`` (its directory holds the official ``config.json`` beside it).

Two LoRAs: a rank-4 one in the layout ``pusa-fw export-lora`` writes (the Pusa LoRA's stand-in) and one in
LightX2V's released layout (the 4-step distill LoRA's stand-in, `LIGHTX2V_LORA_NAME`: ``lora_down`` /
``lora_up`` pairs with no alpha, scale 1, and ``.diff_b`` full bias deltas). LightX2V's files also hold
``.diff`` and ``.diff_m`` deltas; the stand-in leaves out ``.diff_m`` (``blocks.N.modulation``), which this
ComfyUI snapshot's LoRA loader does not read.

Wan2.2 TI2V-5B (`write_tiny_models_22`): ComfyUI detects a Wan DiT with 48 output channels as ``WAN22``
(TI2V-5B), with the same fixed assumptions, so the 5B DiT is dim 128, one head, text dim 4096, 48 channels
in and out (the reference fixture's TI2V DiT, dim 128 with 2 heads and text dim 32, would load into
ComfyUI with head dim 128 and fail on the text embedding's shape). ComfyUI builds the Wan2.2 VAE at the
release widths (encoder 160, decoder 256: 705 M parameters) whatever the file holds, so the fixture's
tiny VAE (8 / 12) does not load; the VAE here has the release shapes with random weights, stored in bf16
(1.4 GB; every value exact in the float32 both sides compute in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pusa_fw.io.atomic import atomic_write_bytes
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.testing.tiny import randomise_parameters, umt5_tensors, write_tokenizer
from pusa_fw_wan.vae.model import WanVAE
from pusa_fw_wan.weights import write_tensor_file

__all__ = ["DIT22_NAME", "DIT_NAME", "LIGHTX2V_LORA_NAME", "LORA_NAME", "TinyFiles", "VAE22_NAME", "VAE_NAME",
           "write_tiny_models", "write_tiny_models_22"]

DIT_NAME = "pusa_tiny_wan21_t2v.safetensors"
VAE_NAME = "pusa_tiny_wan21_vae.safetensors"
DIT22_NAME = "wan22_ti2v/pusa_tiny_wan22_ti2v.safetensors"
"""The tiny TI2V-5B DiT, in a folder of its own under ``models/diffusion_models`` (its ``config.json`` beside)."""
VAE22_NAME = "pusa_tiny_wan22_vae.safetensors"
TEXT_DIM = 4096
"""umT5-xxl width: ComfyUI sizes the Wan text embedding from it."""


LORA_NAME = "pusa_tiny_lora.safetensors"
LIGHTX2V_LORA_NAME = "pusa_tiny_lightx2v_lora.safetensors"
LORA_TARGETS = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.k",
    "cross_attn.v",
    "cross_attn.o",
    "ffn.0",
    "ffn.2",
)
"""The modules the Pusa V1 LoRA adapts in each block (attention projections and the FFN)."""


@dataclass(frozen=True)
class TinyFiles:
    """Where the tiny models are: the DiT directory (``--model``), VAE, umT5 and tokenizer."""

    dit_dir: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path
    lora: Path | None
    lightx2v_lora: Path | None = None

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
    lora_dir = models_dir / "loras"
    for folder in (dit_dir, vae_dir, lora_dir, work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config = WanConfig(dim=128, num_heads=1, num_layers=2, ffn_dim=256, freq_dim=256, text_dim=TEXT_DIM)
    dit = randomise_parameters(WanDiT(config), generator)
    write_tensor_file(dit_dir / DIT_NAME, dict(dit.state_dict()), {"format": "pt"})
    atomic_write_bytes(dit_dir / "config.json", json.dumps(config.to_official_json(), indent=2).encode())
    vae = randomise_parameters(WanVAE(dim=96, z_dim=16), generator)
    write_tensor_file(vae_dir / VAE_NAME, dict(vae.state_dict()), {"format": "pt"})
    text_encoder = work_dir / "tiny_umt5_d4096.safetensors"
    tensors = umt5_tensors(
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
    write_tokenizer(work_dir / "tokenizer", 128)
    write_tensor_file(lora_dir / LORA_NAME, _lora_tensors(dit, generator), {"format": "pt"})
    write_tensor_file(lora_dir / LIGHTX2V_LORA_NAME, _lightx2v_tensors(dit, generator), {"format": "pt"})
    return TinyFiles(
        dit_dir=dit_dir,
        vae=vae_dir / VAE_NAME,
        text_encoder=text_encoder,
        tokenizer=work_dir / "tokenizer",
        lora=lora_dir / LORA_NAME,
        lightx2v_lora=lora_dir / LIGHTX2V_LORA_NAME,
    )


def write_tiny_models_22(models_dir: Path, text: TinyFiles, seed: int = 1) -> TinyFiles:
    """Write a tiny TI2V-5B DiT (`DIT22_NAME`) and a release-shaped Wan2.2 VAE (`VAE22_NAME`) into `models_dir`.

    Args:
        models_dir: ComfyUI's ``models`` folder.
        text: the Wan2.1 set of `write_tiny_models`, whose umT5 (d_model 4096) and tokenizer the 5B shares.
        seed: seed of every random weight.

    Returns:
        The 5B set (no LoRA).
    """
    from pusa_fw_wan.dit.config import TI2V_MODEL_TYPE
    from pusa_fw_wan.dit.init import initial_value
    from pusa_fw_wan.vae.wan22 import Wan22VAE

    generator = torch.Generator().manual_seed(seed)
    dit_path = models_dir / "diffusion_models" / DIT22_NAME
    dit_path.parent.mkdir(parents=True, exist_ok=True)
    config = WanConfig(model_type=TI2V_MODEL_TYPE, in_dim=48, out_dim=48, dim=128, num_heads=1, num_layers=2,
                       ffn_dim=256, freq_dim=256, text_dim=TEXT_DIM)
    dit = randomise_parameters(WanDiT(config), generator)
    write_tensor_file(dit_path, dict(dit.state_dict()), {"format": "pt"})
    atomic_write_bytes(dit_path.parent / "config.json", json.dumps(config.to_official_json(), indent=2).encode())
    with torch.device("meta"):
        shapes = {name: tuple(value.shape) for name, value in Wan22VAE().state_dict().items()}
    tensors = {name: initial_value(name, torch.Size(shape), generator).to(torch.bfloat16)
               for name, shape in shapes.items()}
    vae_path = models_dir / "vae" / VAE22_NAME
    write_tensor_file(vae_path, tensors, {"format": "pt"})
    return TinyFiles(dit_dir=dit_path.parent, vae=vae_path, text_encoder=text.text_encoder,
                     tokenizer=text.tokenizer, lora=None)


def _lora_tensors(dit: WanDiT, generator: torch.Generator, rank: int = 4) -> dict[str, torch.Tensor]:
    """A random rank-`rank` LoRA on `LORA_TARGETS` in the ComfyUI layout ``pusa-fw export-lora`` writes.

    Keys ``diffusion_model.<module>.lora_A.weight`` `[rank, in]`, ``lora_B.weight`` `[out, rank]` and
    ``.alpha`` (= rank, so scale 1); B is non-zero, so the LoRA changes every adapted layer.
    """
    tensors = {}
    for name, module in dit.named_modules():
        if not name.startswith("blocks.") or not name.endswith(LORA_TARGETS):
            continue
        out_features, in_features = module.weight.shape
        prefix = f"diffusion_model.{name}"
        tensors[f"{prefix}.lora_A.weight"] = (
            torch.randn(rank, in_features, generator=generator) / in_features**0.5
        )
        tensors[f"{prefix}.lora_B.weight"] = (
            0.2 * torch.randn(out_features, rank, generator=generator) / rank**0.5
        )
        tensors[f"{prefix}.alpha"] = torch.tensor(float(rank))
    return tensors


def _lightx2v_tensors(dit: WanDiT, generator: torch.Generator, rank: int = 4) -> dict[str, torch.Tensor]:
    """A random rank-`rank` LoRA on `LORA_TARGETS` in LightX2V's released Wan2.1 layout.

    Keys ``diffusion_model.<module>.lora_down.weight`` `[rank, in]` and ``lora_up.weight`` `[out, rank]`
    (no ``.alpha``: scale 1), and ``diffusion_model.<module>.diff_b`` `[out]`, a full bias delta.
    """
    tensors = {}
    for name, module in dit.named_modules():
        if not name.startswith("blocks.") or not name.endswith(LORA_TARGETS):
            continue
        out_features, in_features = module.weight.shape
        prefix = f"diffusion_model.{name}"
        tensors[f"{prefix}.lora_down.weight"] = (
            torch.randn(rank, in_features, generator=generator) / in_features**0.5
        )
        tensors[f"{prefix}.lora_up.weight"] = 0.1 * torch.randn(out_features, rank, generator=generator) / rank**0.5
        tensors[f"{prefix}.diff_b"] = 0.05 * torch.randn(out_features, generator=generator)
    return tensors
