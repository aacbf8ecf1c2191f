"""A tiny random-weight Wan2.1 set on disk, laid out like the official release, for tests and demos.

`build_tiny_wan(directory)` writes, in the layout of ``Wan-AI/Wan2.1-T2V-*`` (so ``--model DIR`` alone finds
everything):

- ``config.json`` + ``diffusion_pytorch_model.safetensors``: a `WanDiT` (default dim 32, 2 heads, 2 layers)
  with official key names;
- ``Wan2.1_VAE.safetensors``: a `WanVAE` (default dim 8, z_dim 16) with the official ``Wan2.1_VAE.pth`` keys;
- ``models_t5_umt5-xxl-enc-bf16.safetensors``: a umT5 encoder (fp32, despite the name) with the original
  Wan T5 keys (``token_embedding.weight``, ``blocks.{i}...``);
- ``tokenizer/``: a word-level tokenizer built with the `tokenizers` library (``<pad>`` 0, ``</s>`` 1
  appended to every prompt, ``<unk>`` 2), loadable by transformers' ``AutoTokenizer``.

Every parameter is random and non-zero (no zero-initialised output layers), so every input changes the
output. Nothing here needs a download. Files are written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw.io.atomic import atomic_write_bytes

from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.weights import write_tensor_file

__all__ = ["TINY_WORDS", "TinyWan", "build_tiny_wan", "randomise_parameters", "umt5_tensors", "write_tokenizer"]

DIT_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
VAE_NAME = "Wan2.1_VAE.safetensors"
TEXT_ENCODER_NAME = "models_t5_umt5-xxl-enc-bf16.safetensors"
TOKENIZER_DIR = "tokenizer"

TINY_WORDS: tuple[str, ...] = tuple(
    "a an the of and in on at with to from by is are was cat dog bird fish horse person man woman child car "
    "boat tree flower sea beach river mountain city street road house room sky sun moon night day rain snow "
    "fire water red blue green yellow black white small big fast slow walks runs flies swims jumps sits "
    "looks "
    "camera pan zoom close wide shot video scene light dark bright static moving".split()
)
"""Words of the tiny tokenizer (lower case); anything else becomes ``<unk>``."""


@dataclass(frozen=True)
class TinyWan:
    """Paths of a tiny Wan set (see `build_tiny_wan`).

    Attributes:
        root: the model directory (DiT ``config.json`` and weights; pass it as ``--model``).
        vae: the VAE ``.safetensors`` file.
        text_encoder: the umT5 ``.safetensors`` file.
        tokenizer: the tokenizer directory.
    """

    root: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path

    def cli_args(self) -> list[str]:
        """``--model``, ``--vae``, ``--text-encoder`` and ``--tokenizer`` options naming these files."""
        return [
            "--model", str(self.root), "--vae", str(self.vae),
            "--text-encoder", str(self.text_encoder), "--tokenizer", str(self.tokenizer),
        ]


def randomise_parameters(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Fill every parameter with random non-zero values (`pusa_fw_wan.dit.init.init_from_seed`).

    Args:
        model: any module; changed in place.
        generator: CPU generator.

    Returns:
        The same module.
    """
    from pusa_fw_wan.dit.init import init_from_seed

    return init_from_seed(model, generator)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    write_tensor_file(path, tensors, metadata={"format": "pt"})


def _write_dit(root: Path, config: WanConfig, generator: torch.Generator) -> None:
    from pusa_fw_wan.dit.model import WanDiT

    model = randomise_parameters(WanDiT(config), generator)
    _save_tensors(root / DIT_WEIGHTS_NAME, dict(model.state_dict()))
    atomic_write_bytes(root / "config.json", json.dumps(config.to_official_json(), indent=2).encode())


def _write_vae(path: Path, dim: int, generator: torch.Generator) -> None:
    from pusa_fw_wan.vae.model import WanVAE

    model = randomise_parameters(WanVAE(dim=dim, z_dim=16), generator)
    _save_tensors(path, dict(model.state_dict()))


def umt5_tensors(vocab_size: int, d_model: int, num_heads: int, d_kv: int, d_ff: int, num_layers: int,
                 buckets: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random umT5 encoder tensors under the original Wan keys (`wan/modules/t5.py`).

    ``d_kv`` and ``d_ff`` are free (unlike `build_tiny_wan`'s), so a wide ``d_model`` (4096, what ComfyUI's
    Wan expects) can keep tiny attention and FFN widths.
    """

    def linear(rows: int, columns: int) -> torch.Tensor:
        return torch.randn(rows, columns, generator=generator) / columns**0.5

    def norm() -> torch.Tensor:
        return 1.0 + 0.1 * torch.randn(d_model, generator=generator)

    inner = num_heads * d_kv
    tensors = {"token_embedding.weight": torch.randn(vocab_size, d_model, generator=generator)}
    for index in range(num_layers):
        block = f"blocks.{index}."
        tensors.update({
            block + "norm1.weight": norm(),
            block + "attn.q.weight": linear(inner, d_model),
            block + "attn.k.weight": linear(inner, d_model),
            block + "attn.v.weight": linear(inner, d_model),
            block + "attn.o.weight": linear(d_model, inner),
            block + "norm2.weight": norm(),
            block + "ffn.gate.0.weight": linear(d_ff, d_model),
            block + "ffn.fc1.weight": linear(d_ff, d_model),
            block + "ffn.fc2.weight": linear(d_model, d_ff),
            block + "pos_embedding.embedding.weight": 0.5 * torch.randn(
                buckets, num_heads, generator=generator
            ),
        })
    tensors["norm.weight"] = norm()
    return tensors


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    """The tiny word-level tokenizer (`TINY_WORDS`, at most `vocab_size` ids) saved into `directory`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(TINY_WORDS))[: vocab_size - 3]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{word: index + 3 for index, word in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    directory.mkdir(exist_ok=True)
    tokenizer.save_pretrained(str(directory))


def build_tiny_wan(
    directory: str | os.PathLike[str],
    *,
    seed: int = 0,
    dim: int = 32,
    num_heads: int = 2,
    num_layers: int = 2,
    ffn_dim: int = 64,
    freq_dim: int = 32,
    vae_dim: int = 8,
    text_dim: int = 32,
    text_heads: int = 2,
    text_layers: int = 2,
    vocab_size: int = 128,
) -> TinyWan:
    """Write a tiny random Wan2.1 set (DiT, VAE, umT5 encoder, tokenizer) into `directory`.

    Args:
        directory: target directory; created if missing (its parent must exist). Existing files of the
            same names are replaced.
        seed: seed of all random weights (the same seed writes the same files).
        dim: DiT width; ``dim / num_heads`` must be even and >= 6.
        num_heads: DiT attention heads.
        num_layers: DiT blocks.
        ffn_dim: DiT feed-forward width.
        freq_dim: width of the DiT's timestep sinusoid.
        vae_dim: VAE base width (96 in the released model).
        text_dim: umT5 width (``d_model``), which is also the DiT's ``text_dim``.
        text_heads: umT5 heads (``d_kv = text_dim / text_heads``).
        text_layers: umT5 blocks.
        vocab_size: umT5 vocabulary (>= 4; the tokenizer uses at most this many ids).

    Returns:
        The `TinyWan` paths.

    Raises:
        InputError: the parent directory does not exist, or a size is inconsistent.
    """
    root = Path(directory).expanduser()
    if not root.parent.is_dir():
        raise InputError(f"cannot create {str(root)!r}: {str(root.parent)!r} does not exist; create it first")
    if text_dim % text_heads or vocab_size < 4:
        raise InputError(
            f"text_dim={text_dim} must be divisible by text_heads={text_heads}, and vocab_size={vocab_size} "
            "must be >= 4"
        )
    root.mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    config = WanConfig(dim=dim, num_heads=num_heads, num_layers=num_layers, ffn_dim=ffn_dim,
                       freq_dim=freq_dim, text_dim=text_dim)
    _write_dit(root, config, generator)
    _write_vae(root / VAE_NAME, vae_dim, generator)
    tensors = umt5_tensors(vocab_size, text_dim, text_heads, text_dim // text_heads, 2 * text_dim,
                            text_layers, 32, generator)
    _save_tensors(root / TEXT_ENCODER_NAME, tensors)
    write_tokenizer(root / TOKENIZER_DIR, vocab_size)
    return TinyWan(root=root, vae=root / VAE_NAME, text_encoder=root / TEXT_ENCODER_NAME,
                   tokenizer=root / TOKENIZER_DIR)
