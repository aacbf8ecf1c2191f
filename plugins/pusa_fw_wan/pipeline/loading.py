"""Find and load the three Wan models (DiT with LoRAs, VAE, umT5 text encoder) for generation.

Given only ``--model DIR`` (the layout of the Wan2.1 T2V and Wan2.2 TI2V-5B releases), the VAE and the
text encoder are taken from the same directory: ``Wan2.1_VAE.pth`` or ``Wan2.2_VAE.pth`` (or ``.safetensors``
copies; with both present, the one whose latents the DiT takes) and ``models_t5_umt5-xxl-enc-bf16.pth`` (or
``.safetensors``). The tokenizer defaults to a ``tokenizer/`` directory beside the encoder file, then to
``google/umt5-xxl/`` (the release layout). The umT5 size is read from the tensor shapes of a
``.safetensors`` encoder, so small test encoders load without extra settings. The latent geometry (frame
map, pixel multiple, channels) is read from the VAE's tensor shapes before any weight is loaded
(`model_geometry`), and a VAE whose latents the DiT does not take is refused there.

A directory claimed by a registered model format (``register_model_formats``, `pusa_fw.model_formats`)
is loaded by that format instead: its codec and text encoder stand in for the VAE and umT5 and everything
else runs the same way. This module names no such plugin; it asks the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import CheckpointError, InputError

__all__ = [
    "LoadedModels", "ModelPaths", "find_model_format", "load_models", "model_geometry", "resolve_device",
    "resolve_dtype", "resolve_model_paths",
    "umt5_overrides", "vae_geometry",
]

WAN21_VAE_NAMES = ("Wan2.1_VAE.pth", "Wan2.1_VAE.safetensors")
WAN22_VAE_NAMES = ("Wan2.2_VAE.pth", "Wan2.2_VAE.safetensors")
VAE_NAMES = WAN21_VAE_NAMES + WAN22_VAE_NAMES
TEXT_ENCODER_NAMES = ("models_t5_umt5-xxl-enc-bf16.pth", "models_t5_umt5-xxl-enc-bf16.safetensors")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelPaths:
    """Resolved model files (tokenizer None: the text encoder's own default).

    ``format`` names the registered model format that claimed the directory (then ``dit``, ``vae`` and
    ``text_encoder`` are all that directory); None for the Wan release layouts.
    """

    dit: Path
    vae: Path
    text_encoder: Path
    tokenizer: Path | None
    format: str | None = None


@dataclass
class LoadedModels:
    """The loaded models (on the CPU when offloading, else on the device) and what was applied."""

    dit: Any
    vae: Any
    text_encoder: Any
    lora_report: Any | None
    dtype: torch.dtype


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; anything else is checked by torch.

    Raises:
        InputError: an unknown device name, or cuda asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"--device {name!r} is not a device name; use cpu, cuda, cuda:1 or auto") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name!r}: CUDA is not available here; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"`` -> bfloat16 on GPUs, float32 on the CPU; else the named dtype."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise InputError(f"--dtype {name!r} is unknown; use auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def _find(directory: Path, names: tuple[str, ...], what: str, flag: str) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(
        f"no {what} given and none of {', '.join(names)} is in {str(directory)!r}; pass {flag} PATH"
    )


def find_model_format(folder: Path) -> Any | None:
    """The registered model format (`pusa_fw.model_formats.ModelFormat`) that claims `folder`, or None
    (a Wan release layout)."""
    from pusa_fw.model_formats import detect_model_format
    from pusa_fw.plugins import get_registry

    return detect_model_format(folder, get_registry().model_formats())


def _format(name: str) -> Any:
    from pusa_fw.plugins import get_registry

    return get_registry().get("model_formats", name)


def resolve_model_paths(model: Path | None, vae: Path | None, text_encoder: Path | None,
                        tokenizer: Path | None) -> ModelPaths:
    """Fill in the VAE, text encoder and tokenizer from the model directory where not given.

    Raises:
        CheckpointError: a path does not exist, or a default file is not in the model directory.
    """
    if model is None:
        raise InputError(
            "no model given: pass --model DIR (a Wan2.1 T2V or Wan2.2 TI2V-5B checkpoint directory)"
        )
    model = model.expanduser()
    if not model.exists():
        raise CheckpointError(
            f"--model {str(model)!r} does not exist; pass a Wan2.1 T2V or Wan2.2 TI2V-5B checkpoint folder"
        )
    folder = model if model.is_dir() else model.parent
    claimed = find_model_format(folder)
    if claimed is not None:
        if vae is not None or text_encoder is not None or tokenizer is not None:
            raise InputError(
                f"--model {str(model)!r} is a {claimed.name!r} model with its own codec and text "
                "encoder; drop --vae, --text-encoder and --tokenizer"
            )
        return ModelPaths(dit=folder, vae=folder, text_encoder=folder, tokenizer=None, format=claimed.name)
    vae = vae.expanduser() if vae is not None else _find(folder, _vae_names(folder, model), "VAE", "--vae")
    text_encoder = (text_encoder.expanduser() if text_encoder is not None
                    else _find(folder, TEXT_ENCODER_NAMES, "text encoder", "--text-encoder"))
    for flag, path in (("--vae", vae), ("--text-encoder", text_encoder)):
        if not path.exists():
            raise CheckpointError(f"{flag} {str(path)!r} does not exist; check the path")
    if tokenizer is not None:
        if not tokenizer.expanduser().is_dir():
            raise InputError(f"--tokenizer {str(tokenizer)!r} is not a directory; pass the tokenizer folder")
        tokenizer = tokenizer.expanduser()
    elif text_encoder.is_file() and (text_encoder.parent / "tokenizer").is_dir():
        tokenizer = text_encoder.parent / "tokenizer"
    return ModelPaths(dit=model, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


def _vae_names(folder: Path, model: Path) -> tuple[str, ...]:
    """The default VAE names in the order they are tried: with both VAEs in `folder`, the DiT's first."""
    present = [name for name in VAE_NAMES if (folder / name).is_file()]
    if len({name in WAN22_VAE_NAMES for name in present}) < 2:
        return VAE_NAMES
    from pusa_fw_wan.pipeline.model_defaults import WAN22_TI2V_5B_DEFAULTS, defaults_for_checkpoint

    if defaults_for_checkpoint(model) == WAN22_TI2V_5B_DEFAULTS:
        return WAN22_VAE_NAMES + WAN21_VAE_NAMES
    return VAE_NAMES


def vae_geometry(path: Path) -> Any:
    """The `LatentGeometry` of the Wan VAE at `path` (Wan2.1 or Wan2.2), from its tensor shapes only.

    A ``.safetensors`` file is read through its header, a torch file memory-mapped; a diffusers ``vae/``
    directory is a Wan2.1 VAE (its loader refuses Wan2.2 ones) with the ``z_dim`` of its ``config.json``.

    Raises:
        CheckpointError: an unreadable file, or one that is neither Wan VAE.
    """
    import json

    from pusa_fw_wan.vae.checkpoint import detect_vae_version
    from pusa_fw_wan.vae.model import WanVAE
    from pusa_fw_wan.vae.wan22 import Wan22VAE
    from pusa_fw_wan.weights import read_shapes

    vae_class: type[WanVAE] = WanVAE
    if path.is_dir():
        config = path / "vae" / "config.json" if (path / "vae").is_dir() else path / "config.json"
        try:
            z_dim = int(json.loads(config.read_text()).get("z_dim", 16)) if config.is_file() else 16
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{str(config)!r} is not a readable VAE config.json: {error}") from error
    else:
        shapes = {name: shape for name, (shape, _) in read_shapes([path], what="VAE checkpoint").items()}
        with torch.device("meta"):
            tensors = {name: torch.empty(shape) for name, shape in shapes.items()}
        if detect_vae_version(tensors, str(path)) == "2.2":
            vae_class = Wan22VAE
        z_dim = int(shapes.get("conv2.weight", (48 if vae_class is Wan22VAE else 16,))[0])
    with torch.device("meta"):
        return vae_class(dim=8, z_dim=z_dim).geometry


def model_geometry(paths: ModelPaths) -> Any:
    """The `LatentGeometry` of the models at `paths`, read without loading any weights.

    A registered model format's comes from that format; a Wan set has its VAE's (`vae_geometry`: Wan2.1
    /8 with 16 channels, Wan2.2 /16 with 48; both with the DiT's 2x2 patch), the one `WanPipeline` uses.

    Raises:
        CheckpointError: unreadable files, or a VAE whose latent channels are not the DiT's ``in_dim``.
    """
    if paths.format is not None:
        return _format(paths.format).geometry(paths.dit)
    from pusa_fw_wan.dit.checkpoint_source import read_wan_config

    geometry = vae_geometry(paths.vae)
    dit = read_wan_config(paths.dit)
    if dit.in_dim != geometry.channels:
        raise CheckpointError(
            f"the VAE {paths.vae.name} makes {geometry.channels}-channel latents but the DiT in "
            f"{str(paths.dit)!r} takes in_dim={dit.in_dim}; pass the VAE of this model with --vae "
            "(Wan2.1 T2V: Wan2.1_VAE.pth, Wan2.2 TI2V-5B: Wan2.2_VAE.pth)"
        )
    return geometry


def umt5_overrides(path: Path) -> dict[str, int]:
    """UMT5Config sizes read from the shapes of a ``.safetensors`` encoder with Wan's original keys.

    Returns:
        ``vocab_size, d_model, d_kv, d_ff, num_layers, num_heads, relative_attention_num_buckets``, or {}
        for other files (the umT5-XXL defaults then apply).
    """
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from pusa_fw_wan.weights.safetensors import read_header

    shapes = {name: info.shape for name, info in read_header(path).items()}
    try:
        vocab_size, d_model = shapes["token_embedding.weight"]
        buckets, num_heads = shapes["blocks.0.pos_embedding.embedding.weight"]
        inner = shapes["blocks.0.attn.q.weight"][0]
        d_ff = shapes["blocks.0.ffn.gate.0.weight"][0]
    except (KeyError, ValueError):
        return {}
    num_layers = len({name.split(".")[1] for name in shapes if name.startswith("blocks.")})
    return {
        "vocab_size": vocab_size, "d_model": d_model, "d_kv": inner // num_heads, "d_ff": d_ff,
        "num_layers": num_layers, "num_heads": num_heads, "relative_attention_num_buckets": buckets,
    }


def load_models(paths: ModelPaths, *, loras: list[tuple[Path, float]], dtype: torch.dtype,
                device: torch.device, offload: str, prompt_cache: bool,
                weights_dtype: str = "auto", dit: torch.nn.Module | None = None,
                dit_lora_report: Any | None = None) -> LoadedModels:
    """Load DiT (+ LoRAs, merged), VAE (float32) and text encoder; a given `dit` (e.g. one loaded shard-only
    under FSDP2, `pusa_fw_wan.parallel.fsdp.load_sharded_dit`) is used as it is instead of `paths.dit`: it
    already carries `loras` merged, as `dit_lora_report` says.

    Models go straight to `device` when not offloading, else to the CPU (the pipeline moves them). The
    DiT's large linears are stored in `weights_dtype` (`pusa_fw_wan.dit.storage`), streamed from the
    checkpoint straight into that dtype; LoRAs on a low-precision base are merged per layer at compute
    time (`LowPrecisionLinear.merged_deltas`), never into the stored weights.

    Raises:
        CheckpointError: unreadable checkpoints, or a LoRA that does not fit the DiT.
    """
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.dit.storage import set_weights_dtype
    from pusa_fw_wan.lora.apply import LoraSpec, apply_loras
    from pusa_fw_wan.text.encoder import WanTextEncoder
    from pusa_fw_wan.vae.model import WanVAE

    home = device if offload == "none" else torch.device("cpu")
    for path, _strength in loras:
        if not path.expanduser().is_file():
            raise CheckpointError(f"--lora {str(path)!r} does not exist; check the path")
    other = None
    if dit is not None:
        if paths.format is not None or (loras and dit_lora_report is None):
            raise InputError("a preloaded DiT takes no registered model format, and --lora only when it was "
                             "loaded with them (give its dit_lora_report)")
    elif paths.format is not None:
        other = _format(paths.format).load(paths.dit, dtype=dtype, device=home)
        dit = other.dit
        if weights_dtype != "auto":
            set_weights_dtype(dit, weights_dtype, dtype)
    else:
        dit = WanDiT.from_pretrained(paths.dit, dtype=dtype, device=home, weights_dtype=weights_dtype)
        dit = dit.eval().requires_grad_(False)
    report = dit_lora_report
    if loras and report is None:
        specs = [LoraSpec(path.expanduser(), strength=strength) for path, strength in loras]
        report = apply_loras(dit, specs, merge=True)
    if other is not None:
        return LoadedModels(dit=dit, vae=other.vae, text_encoder=other.text_encoder, lora_report=report,
                            dtype=dtype)
    vae = WanVAE.from_pretrained(paths.vae, dim=None, z_dim=None, dtype=torch.float32, device=home)
    cache: dict[str, Any] = {} if prompt_cache else {"cache_dir": None}
    text_encoder = WanTextEncoder.from_pretrained(
        paths.text_encoder, tokenizer=paths.tokenizer, dtype=dtype, device=home, **cache,
        **umt5_overrides(paths.text_encoder),
    )
    if int(text_encoder.d_model) != int(dit.config.text_dim):
        raise CheckpointError(
            f"the text encoder gives {text_encoder.d_model}-wide features but the DiT expects "
            f"text_dim={dit.config.text_dim}; pass the encoder that belongs to this model"
        )
    return LoadedModels(dit=dit, vae=vae, text_encoder=text_encoder, lora_report=report, dtype=dtype)
