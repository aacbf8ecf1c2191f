"""A toy model directory: a Wan2.1 DiT checkpoint plus a small JSON naming its codec and text encoder.

Layout (``--model DIR`` of ``pusa-fw generate`` finds everything from it)::

    DIR/toy.json                             format, codec layout, text encoder file, the world
    DIR/config.json                          the DiT architecture (official Wan keys)
    DIR/diffusion_pytorch_model.safetensors  the DiT weights
    DIR/text_encoder.safetensors             the frozen word-level text encoder

The DiT is the registered backbone `BACKBONE`, reached only through pusa-fw's registries: its training
adapter builds a fresh one (`build_toy_dir`), its backbone factory saves and loads it (`load_toy_models`).
`build_toy_dir` writes one with fresh weights (PyTorch's default initialisation, Wan's own with a zero
output head, or random non-zero values everywhere for tests); `load_toy_models` reads it back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.io.atomic import atomic_write_bytes

from pusa_fw_toy.codec import ToyCodec, ToyCodecConfig
from pusa_fw_toy.text import ToyTextEncoder
from pusa_fw_toy.world import WorldConfig

__all__ = ["BACKBONE", "TOY_MANIFEST", "ToyModelSpec", "ToyModels", "build_toy_dir", "is_toy_dir", "load_toy_models",
           "read_spec", "toy_architecture"]

BACKBONE = "wan2.1-t2v"
"""The registered backbone (and training adapter) the toy DiT is."""
TOY_MANIFEST = "toy.json"
DIT_WEIGHTS = "diffusion_pytorch_model.safetensors"
"""The weights file the backbone's ``save`` writes and its ``load`` reads in a directory."""
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


def toy_architecture(spec: ToyModelSpec, *, dim: int = 192, num_heads: int = 2, num_layers: int = 4,
                      ffn_dim: int | None = None, freq_dim: int = 64, text_dim: int = 32,
                      text_len: int = 8) -> dict[str, Any]:
    """The architecture of a toy DiT whose in/out channels and patch follow the codec (the ``architecture``
    of the `BACKBONE` training adapter's ``build_model``)."""
    patch = spec.codec.patch_size
    return {"in_dim": spec.codec.channels, "out_dim": spec.codec.channels, "patch_size": (1, patch, patch),
            "dim": dim, "num_heads": num_heads, "num_layers": num_layers, "ffn_dim": ffn_dim or 4 * dim,
            "freq_dim": freq_dim, "text_dim": text_dim, "text_len": text_len}


def build_toy_dir(directory: str | os.PathLike[str], *, spec: ToyModelSpec | None = None, seed: int = 0,
                  randomise: bool = False, init: Literal["default", "wan"] = "default", **dit_sizes: Any) -> Path:
    """Write a toy model directory with fresh weights.

    Args:
        directory: created if missing (its parent must exist); files of the same names are replaced.
        spec: codec, world and text-encoder file (default: `ToyModelSpec()`).
        seed: seed of every weight.
        randomise: fill every DiT parameter with random non-zero values (tests: every input then changes
            the output) instead of a starting point for training.
        init: the starting point for training: ``"default"`` (PyTorch's own initialisation of the layers)
            or ``"wan"`` (the official Wan2.1 law with a zero output head, the training adapter's ``init="wan"``).
        **dit_sizes: `toy_architecture` sizes (``dim``, ``num_heads``, ``num_layers``, ``ffn_dim``,
            ``freq_dim``, ``text_dim``, ``text_len``).

    Returns:
        The directory.

    Raises:
        InputError: the parent is not a directory, the path is a file, the seed is out of range, or the
            backbone rejects the sizes; nothing is written then.
    """
    from pusa_fw.backbone import backbone_factory
    from pusa_fw_train.adapter import get_train_adapter

    root = Path(directory).expanduser()
    if not root.parent.is_dir():
        raise InputError(
            f"cannot create {str(root)!r}: {str(root.parent)!r} is not a directory; create it first"
        )
    if root.exists() and not root.is_dir():
        raise InputError(
            f"cannot create {str(root)!r}: it is an existing file; pass a new or toy model directory"
        )
    if init not in ("default", "wan"):
        raise InputError(f"init {init!r} is not a toy initialisation; use 'default' or 'wan'")
    if randomise and init != "default":
        raise InputError(f"randomise=True replaces the init; drop init={init!r} or randomise")
    if not 0 <= seed < 2**63 - 1:
        raise InputError(f"seed {seed} is out of range; use 0 <= seed < 2**63 - 1")
    spec = spec or ToyModelSpec()
    architecture = toy_architecture(spec, **dit_sizes)
    factory = backbone_factory(BACKBONE, needs=["save"])
    torch.manual_seed(seed)
    try:  # every check before anything is written
        dit = get_train_adapter(BACKBONE).build_model(None, architecture, seed,
                                                      init="random" if randomise else init)
    except InputError as error:
        raise InputError(f"the toy DiT sizes do not fit ({error}); change dim, num_heads or num_layers "
                         "(toy-init: --dim, --heads, --layers)") from None
    factory.save(dit, root)
    encoder = ToyTextEncoder.random(dim=architecture["text_dim"], max_length=architecture["text_len"],
                                    seed=seed + 1)
    encoder.save(root / spec.text_encoder)
    atomic_write_bytes(root / TOY_MANIFEST, spec.model_dump_json(indent=2).encode())
    return root


def load_toy_models(directory: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> ToyModels:
    """Load DiT, codec and text encoder of a toy model directory.

    Raises:
        CheckpointError: a file is missing, or the parts do not fit together.
    """
    from pusa_fw.api import load_backbone

    root = Path(directory).expanduser()
    spec = read_spec(root)
    dit = load_backbone(BACKBONE, root, dtype=dtype, device=device).eval().requires_grad_(False)
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


def merged_with_lora(dit: torch.nn.Module, lora: str | os.PathLike[str]) -> torch.nn.Module:
    """A copy of the toy `dit` with the LoRA file `lora` merged in at scale 1 (how the toy's VTA runs).

    Raises:
        InputError: `lora` is not a file.
    """
    import copy

    from pusa_fw.backbone import backbone_factory

    path = Path(lora).expanduser()
    if not path.is_file():
        raise InputError(f"--lora {str(lora)!r} does not exist; check the path")
    merged = copy.deepcopy(dit)
    backbone_factory(BACKBONE, needs=["apply_loras"]).apply_loras(merged, [(path, 1.0)], merge=True)
    return merged
