"""A tiny Wan2.2 TI2V-5B set on disk, laid out like the official ``Wan-AI/Wan2.2-TI2V-5B`` release.

`build_tiny_wan22(directory)` writes what ``--model DIR`` alone finds:

- the DiT: ``config.json`` (``model_type: "ti2v"``, 48 channels in and out) with either the weights of a
  given checkpoint directory (e.g. the reference fixture's ``dit/sharded``, copied file for file: shards and
  index) or a random one (``diffusion_pytorch_model.safetensors``);
- ``Wan2.2_VAE.safetensors``: a given Wan2.2 VAE file, or a random `Wan22VAE` (encoder dim 8, decoder 12);
- ``models_t5_umt5-xxl-enc-bf16.safetensors`` and ``tokenizer/``: a tiny umT5 whose width is the DiT's
  ``text_dim`` (as `pusa_fw_wan.testing.tiny.build_tiny_wan` writes them).

Every random parameter is non-zero. Nothing here needs a download; files are written atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from pusa_fw.errors import InputError
from pusa_fw.io.atomic import atomic_write_bytes

from pusa_fw_wan.dit.config import TI2V_MODEL_TYPE, WanConfig
from pusa_fw_wan.testing.tiny import (
    DIT_WEIGHTS_NAME,
    TEXT_ENCODER_NAME,
    TOKENIZER_DIR,
    TinyWan,
    randomise_parameters,
    umt5_tensors,
    write_tokenizer,
)
from pusa_fw_wan.weights import write_tensor_file

__all__ = ["VAE22_NAME", "build_tiny_wan22"]

VAE22_NAME = "Wan2.2_VAE.safetensors"


def _copy_dit(source: Path, root: Path) -> WanConfig:
    from pusa_fw_wan.dit.checkpoint_source import find_checkpoint_files, read_wan_config

    config = read_wan_config(source)
    files = find_checkpoint_files(source)
    for file in files.weight_files:
        shutil.copyfile(file, root / file.name)
    index = files.weight_files[0].parent / f"{DIT_WEIGHTS_NAME}.index.json"
    if index.is_file():
        shutil.copyfile(index, root / index.name)
    atomic_write_bytes(root / "config.json", json.dumps(config.to_official_json(), indent=2).encode())
    return config


def _random_dit(root: Path, text_dim: int, generator: torch.Generator) -> WanConfig:
    from pusa_fw_wan.dit.model import WanDiT

    config = WanConfig(model_type=TI2V_MODEL_TYPE, in_dim=48, out_dim=48, dim=32, num_heads=2, num_layers=2,
                       ffn_dim=64, freq_dim=32, text_dim=text_dim)
    model = randomise_parameters(WanDiT(config), generator)
    write_tensor_file(root / DIT_WEIGHTS_NAME, dict(model.state_dict()), metadata={"format": "pt"})
    atomic_write_bytes(root / "config.json", json.dumps(config.to_official_json(), indent=2).encode())
    return config


def build_tiny_wan22(
    directory: str | os.PathLike[str],
    *,
    dit_from: str | os.PathLike[str] | None = None,
    vae_from: str | os.PathLike[str] | None = None,
    seed: int = 0,
    text_dim: int = 32,
    text_heads: int = 2,
    text_layers: int = 2,
    vocab_size: int = 128,
) -> TinyWan:
    """Write a tiny Wan2.2 TI2V-5B release folder (DiT, Wan2.2 VAE, umT5, tokenizer) into `directory`.

    Args:
        directory: the model folder; created if missing (its parent must exist).
        dit_from: a TI2V DiT checkpoint directory to copy (its ``text_dim`` sizes the umT5); None writes
            a random one (dim 32, 2 heads, 2 layers).
        vae_from: a Wan2.2 VAE file to copy; None writes a random one.
        seed: seed of every random weight.
        text_dim: the umT5 width of a random DiT (a copied DiT's own is used).
        text_heads: umT5 heads.
        text_layers: umT5 blocks.
        vocab_size: umT5 vocabulary (>= 4).

    Returns:
        The `TinyWan` paths (``vae`` is the Wan2.2 VAE).

    Raises:
        InputError: the parent directory does not exist, or a copied DiT is not a TI2V one.
    """
    root = Path(directory).expanduser()
    if not root.parent.is_dir():
        raise InputError(f"cannot create {str(root)!r}: {str(root.parent)!r} does not exist; create it first")
    root.mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    if dit_from is not None:
        config = _copy_dit(Path(dit_from), root)
        if not config.is_ti2v:
            raise InputError(f"{str(dit_from)!r} is not a TI2V DiT (model_type {config.model_type!r})")
    else:
        config = _random_dit(root, text_dim, generator)
    vae = root / VAE22_NAME
    if vae_from is not None:
        shutil.copyfile(vae_from, vae)
    else:
        from pusa_fw_wan.vae.wan22 import Wan22VAE

        model = randomise_parameters(Wan22VAE(dim=8, z_dim=48, decoder_dim=12), generator)
        write_tensor_file(vae, dict(model.state_dict()), metadata={"format": "pt"})
    width = config.text_dim
    if width % text_heads:
        raise InputError(f"text_dim={width} must be divisible by text_heads={text_heads}")
    tensors = umt5_tensors(vocab_size, width, text_heads, width // text_heads, 2 * width, text_layers, 32,
                           generator)
    write_tensor_file(root / TEXT_ENCODER_NAME, tensors, metadata={"format": "pt"})
    write_tokenizer(root / TOKENIZER_DIR, vocab_size)
    return TinyWan(root=root, vae=vae, text_encoder=root / TEXT_ENCODER_NAME, tokenizer=root / TOKENIZER_DIR)
