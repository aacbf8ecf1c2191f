"""A toy model directory: a `WanDiT` checkpoint plus a small JSON naming its codec and text encoder.

Layout (``--model DIR`` of ``pusa-fw generate`` finds everything from it)::

    DIR/toy.json                             format, codec layout, text encoder file, the world
    DIR/config.json                          the WanDiT architecture (official keys)
    DIR/diffusion_pytorch_model.safetensors  the WanDiT weights
    DIR/text_encoder.safetensors             the frozen word-level text encoder

`build_toy_dir` writes one with fresh weights (PyTorch's default initialisation, or random non-zero
values everywhere for tests); `load_toy_models` reads it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.io.atomic import atomic_path, atomic_write_bytes

from pusa_fw_toy.codec import ToyCodec, ToyCodecConfig
from pusa_fw_toy.text import ToyTextEncoder
from pusa_fw_toy.world import WorldConfig

__all__ = ["TOY_MANIFEST", "ToyModelSpec", "ToyModels", "build_toy_dir", "is_toy_dir", "load_toy_models", "read_spec",
           "toy_wan_config"]

TOY_MANIFEST = "toy.json"
DIT_WEIGHTS = "diffusion_pytorch_model.safetensors"
TEXT_ENCODER = "text_encoder.safetensors"


class ToyModelSpec(BaseModel):
    """The content of ``toy.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["pusa-fw-toy"] = "pusa-fw-toy"
    version: Literal[1] = 1
    codec: ToyCodecConfig = Field(default_factory=ToyCodecConfig)
    text_encoder: str = Field(TEXT_ENCODER, description="file of the text encoder, relative to the directory")
    world: WorldConfig = Field(default_factory=WorldConfig, description="the world the model is meant for")


@dataclass
class ToyModels:
    """A loaded toy model: DiT, codec, text encoder and the spec they came with."""

    dit: Any
    codec: ToyCodec
    text_encoder: ToyTextEncoder
    spec: ToyModelSpec


def is_toy_dir(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a directory holding a ``toy.json``."""
    return (Path(path) / TOY_MANIFEST).is_file()


def read_spec(directory: str | os.PathLike[str]) -> ToyModelSpec:
    """Parse and validate ``toy.json``.

    Raises:
        CheckpointError: missing or invalid manifest.
    """
    path = Path(directory) / TOY_MANIFEST
    try:
        return ToyModelSpec.model_validate_json(path.read_bytes())
    except OSError as error:
        raise CheckpointError(f"{str(path)!r} cannot be read ({error}); is {str(directory)!r} a toy model?") from error
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CheckpointError(f"{str(path)!r}: {where}: {first['msg']}; rebuild the toy model") from error


def toy_wan_config(spec: ToyModelSpec, *, dim: int = 192, num_heads: int = 2, num_layers: int = 4,
                   ffn_dim: int | None = None, freq_dim: int = 64, text_dim: int = 32, text_len: int = 8) -> Any:
    """The `WanConfig` of a toy DiT whose in/out channels and patch follow the codec."""
    from pusa_fw_wan.dit.config import WanConfig

    patch = spec.codec.patch_size
    return WanConfig(in_dim=spec.codec.channels, out_dim=spec.codec.channels, patch_size=(1, patch, patch),
                     dim=dim, num_heads=num_heads, num_layers=num_layers, ffn_dim=ffn_dim or 4 * dim,
                     freq_dim=freq_dim, text_dim=text_dim, text_len=text_len)


def build_toy_dir(directory: str | os.PathLike[str], *, spec: ToyModelSpec | None = None, seed: int = 0,
                  randomise: bool = False, **dit_sizes: Any) -> Path:
    """Write a toy model directory with fresh weights.

    Args:
        directory: created if missing (its parent must exist); files of the same names are replaced.
        spec: codec, world and text-encoder file (default: `ToyModelSpec()`).
        seed: seed of every weight.
        randomise: fill every DiT parameter with random non-zero values (tests: every input then changes
            the output) instead of PyTorch's default initialisation (a starting point for training).
        **dit_sizes: `toy_wan_config` sizes (``dim``, ``num_heads``, ``num_layers``, ``ffn_dim``,
            ``freq_dim``, ``text_dim``, ``text_len``).

    Returns:
        The directory.

    Raises:
        InputError: the parent is not a directory, the path is a file, or the seed is out of range; nothing
            is written then (nor for sizes the `WanConfig` rejects).
    """
    from safetensors.torch import save_file

    from pusa_fw_wan.dit.model import WanDiT

    root = Path(directory).expanduser()
    if not root.parent.is_dir():
        raise InputError(
            f"cannot create {str(root)!r}: {str(root.parent)!r} is not a directory; create it first"
        )
    if root.exists() and not root.is_dir():
        raise InputError(
            f"cannot create {str(root)!r}: it is an existing file; pass a new or toy model directory"
        )
    if not 0 <= seed < 2**63 - 1:
        raise InputError(f"seed {seed} is out of range; use 0 <= seed < 2**63 - 1")
    spec = spec or ToyModelSpec()
    config = toy_wan_config(spec, **dit_sizes)  # every check before anything is written
    torch.manual_seed(seed)
    dit = WanDiT(config)
    root.mkdir(exist_ok=True)
    if randomise:
        from pusa_fw_wan.dit.init import init_from_seed

        init_from_seed(dit, torch.Generator().manual_seed(seed))
    with atomic_path(root / DIT_WEIGHTS) as temp:
        save_file({key: value.contiguous() for key, value in dit.state_dict().items()}, str(temp),
                  metadata={"format": "pt"})
    atomic_write_bytes(root / "config.json", json.dumps(config.to_official_json(), indent=2).encode())
    encoder = ToyTextEncoder.random(dim=config.text_dim, max_length=config.text_len, seed=seed + 1)
    encoder.save(root / spec.text_encoder)
    atomic_write_bytes(root / TOY_MANIFEST, spec.model_dump_json(indent=2).encode())
    return root


def load_toy_models(directory: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> ToyModels:
    """Load DiT, codec and text encoder of a toy model directory.

    Raises:
        CheckpointError: a file is missing, or the parts do not fit together.
    """
    from pusa_fw_wan.dit.model import WanDiT

    root = Path(directory).expanduser()
    spec = read_spec(root)
    dit = WanDiT.from_pretrained(root, dtype=dtype, device=device).eval().requires_grad_(False)
    codec = ToyCodec(spec.codec).to(device)
    text_encoder = ToyTextEncoder.load(root / spec.text_encoder, device=device)
    config = dit.config
    if config.in_dim != spec.codec.channels or config.out_dim != spec.codec.channels:
        raise CheckpointError(
            f"the DiT in {str(root)!r} takes {config.in_dim} channels but the codec makes {spec.codec.channels}; "
            "the toy.json does not belong to these weights"
        )
    if (config.text_dim, config.text_len) != (text_encoder.d_model, text_encoder.max_length):
        raise CheckpointError(
            f"the DiT expects {config.text_len} x {config.text_dim} text but the encoder gives "
            f"{text_encoder.max_length} x {text_encoder.d_model}; rebuild the toy model"
        )
    return ToyModels(dit=dit, codec=codec, text_encoder=text_encoder, spec=spec)

