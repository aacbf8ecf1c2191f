"""`WanTrainAdapter`: how the backbone-agnostic trainer (``pusa_fw_train``) builds, shards, renders and exports
a Wan DiT. Registered for ``wan2.1-t2v`` through the ``register_train_adapters`` hook.

The checkpoint says which Wan it is: a Wan2.1 T2V DiT (16 channels) or Wan2.2 TI2V-5B (``model_type:
"ti2v"``, 48 channels) is built from its own config, and the codec and latent geometry are those of the VAE
beside it whose latents the DiT takes (``Wan2.1_VAE`` /8 or ``Wan2.2_VAE`` /16; with both in the folder, the
matching one). `WanTI2VTrainAdapter` is the same adapter under the name ``wan2.2-ti2v-5b``: it refuses a
checkpoint or architecture that is not TI2V in one line.

A model directory claimed by another registered model format (e.g. a small codec paired with a Wan DiT)
takes its geometry and codec from that format, so this module names no other plugin. torch is imported
only when a method runs (registering the adapter stays cheap).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PUSA_LORA_TARGETS", "WanTI2VTrainAdapter", "WanTrainAdapter", "matching_vae"]

PUSA_LORA_TARGETS: tuple[str, ...] = ("q", "k", "v", "o", "ffn.0", "ffn.2")
"""Pusa's LoRA targets: q, k, v, o of self- and cross-attention and both FFN linears, in every block."""

_PATCH_TOKENS = 4
"""Latent positions per transformer token: the Wan DiT patchifies 1 x 2 x 2."""


def _folder(model_path: str) -> Path:
    path = Path(model_path).expanduser()
    return path if path.is_dir() else path.parent


def matching_vae(model_path: str) -> Path | None:
    """The Wan VAE file beside the DiT at `model_path` whose latent channels are the DiT's ``in_dim``.

    Candidates are ``Wan2.1_VAE`` and ``Wan2.2_VAE`` (``.pth`` or ``.safetensors``) in the DiT's folder; each
    is judged by its tensor shapes (`pusa_fw_wan.pipeline.loading.vae_geometry`), the DiT by its config or
    shapes, so no weight is loaded.

    Returns:
        The VAE path, or None when the folder holds no Wan VAE.

    Raises:
        CheckpointError: the folder holds Wan VAEs, but none makes the DiT's latents (e.g. only
            ``Wan2.1_VAE.pth`` beside a TI2V-5B DiT).
    """
    from pusa_fw_wan.dit.checkpoint_source import read_wan_config
    from pusa_fw_wan.pipeline.loading import VAE_NAMES, vae_geometry

    folder = _folder(model_path)
    present = [folder / name for name in VAE_NAMES if (folder / name).is_file()]
    if not present:
        return None
    in_dim = read_wan_config(Path(model_path).expanduser()).in_dim
    for path in present:
        if vae_geometry(path).channels == in_dim:
            return path
    names = ", ".join(path.name for path in present)
    raise CheckpointError(
        f"{str(folder)!r} holds {names}, but the DiT takes {in_dim}-channel latents; add this model's VAE "
        "(Wan2.1 T2V: Wan2.1_VAE.pth, Wan2.2 TI2V-5B: Wan2.2_VAE.pth)"
    )


class WanTrainAdapter:
    """The training adapter of the Wan DiTs: Wan2.1 T2V and Wan2.2 TI2V-5B, told apart by the checkpoint
    (see `pusa_fw_train.adapter.TrainAdapter`)."""

    name = "wan2.1-t2v"
    default_lora_targets = PUSA_LORA_TARGETS

    def build_model(
        self,
        path: str | None,
        architecture: dict[str, Any] | None,
        init_seed: int,
        *,
        weights_dtype: str = "float32",
        device: str = "cpu",
        init: str = "random",
    ) -> nn.Module:
        """`WanDiT.from_pretrained(path)`, or a `WanConfig(**architecture)` initialised from `init_seed`.

        The model computes in float32 (the trainer's autocast gives bf16); its block linears are stored in
        `weights_dtype` (`pusa_fw_wan.dit.storage`). A checkpoint is read tensor by tensor into a model
        built on the meta device, each tensor converted to its storage dtype on `device` as it is read (no
        float32 copy of a low-precision base); a random init is made in float32 on the CPU, then stored.
        ``device="meta"`` reads no weight: the structure only, filled by `load_shards` after FSDP2 sharding
        (from the checkpoint, or with the ``"random"`` init; ``init="default"`` is refused there).

        Args:
            init: for an `architecture`: ``"random"`` fills every parameter with random non-zero values
                (`pusa_fw_wan.dit.init.init_from_seed`); ``"default"`` keeps PyTorch's own initialisation of
                the layers, drawn after ``torch.manual_seed(init_seed)``; ``"wan"`` is the official Wan2.1
                law with a zero output head (`pusa_fw_wan.dit.init.init_wan`, seeded by `init_seed`). The
                last two are starts for training from scratch and are built on a device, not shard-only.
        """
        import torch

        from pusa_fw_wan.dit.config import WanConfig
        from pusa_fw_wan.dit.model import WanDiT
        from pusa_fw_wan.dit.init import init_from_seed, init_wan

        if init not in ("random", "default", "wan"):
            raise InputError(f"init {init!r} is not a Wan initialisation; use 'random', 'default' or 'wan'")
        if device == "meta":
            if path is None and init != "random":
                raise InputError(
                    f"init {init!r} cannot be built shard-only (device='meta'): load_shards fills the shards "
                    "with the seeded random init; use init='random', or build on a device and shard after"
                )
            return self._meta_model(path, architecture, weights_dtype)
        if path is not None:
            return WanDiT.from_pretrained(
                path, dtype=torch.float32, device=device, weights_dtype=weights_dtype
            )
        try:
            config = WanConfig(**(architecture or {}))
            if init == "default":
                torch.manual_seed(init_seed)
            model = WanDiT(config)
        except (TypeError, ValueError) as error:
            from pydantic import ValidationError

            from pusa_fw.cli_params import one_line_validation_error

            detail = one_line_validation_error(error) if isinstance(error, ValidationError) else str(error)
            raise InputError(f"model.architecture is not a Wan architecture: {detail}") from None
        if init == "random":
            init_from_seed(model, torch.Generator().manual_seed(init_seed))
        elif init == "wan":
            init_wan(model, torch.Generator().manual_seed(init_seed))
        return model.set_weights_dtype(weights_dtype).to(device)

    def _meta_model(self, path: str | None, architecture: dict[str, Any] | None, weights_dtype: str) -> nn.Module:
        """The float32-compute model of `build_model` on the meta device (headers read, no weights)."""
        import torch

        from pusa_fw_wan.dit.checkpoint import open_wan_dit
        from pusa_fw_wan.dit.config import WanConfig
        from pusa_fw_wan.parallel.shard_load import meta_wan_dit

        if path is not None:
            return open_wan_dit(path, dtype=torch.float32, weights_dtype=weights_dtype)[0]
        try:
            config = WanConfig(**(architecture or {}))
        except (TypeError, ValueError) as error:
            raise InputError(f"model.architecture is not a Wan architecture: {error}") from None
        return meta_wan_dit(config, weights_dtype)

    def load_shards(
        self, model: nn.Module, path: str | None, architecture: dict[str, Any] | None, init_seed: int, *,
        weights_dtype: str = "float32",
    ) -> Any:
        """Fill the local shards of a ``build_model(device="meta")`` model, FSDP2-sharded and ``to_empty``-ed.

        A checkpoint: each rank reads only its own rows, tensor by tensor; a random init: the draws of
        `build_model`, one full tensor at a time, sliced (`pusa_fw_wan.parallel.shard_load`).

        Returns:
            The rank's `ShardLoadReport` (bytes read, kept and in full).
        """
        import torch

        from pusa_fw_wan.dit.checkpoint import open_wan_dit
        from pusa_fw_wan.dit.config import WanConfig
        from pusa_fw_wan.parallel.shard_load import init_dit_shards, load_dit_shards

        if path is not None:
            _, source = open_wan_dit(path, dtype=torch.float32, weights_dtype=weights_dtype)
            return load_dit_shards(model, source)
        config = WanConfig(**(architecture or {}))
        return init_dit_shards(model, config, torch.Generator().manual_seed(init_seed))

    def shard(self, model: nn.Module, mesh: Any, **options: Any) -> nn.Module:
        """FSDP2 per transformer block, then the root (`pusa_fw_wan.parallel.fsdp.shard_dit`)."""
        from pusa_fw_wan.parallel.fsdp import shard_dit

        return shard_dit(model, mesh, **options)

    def geometry(self, model_path: str | None) -> LatentGeometry:
        """The latent geometry of the model's codec, read without loading weights.

        A registered model format's for a directory it claims; else the VAE's beside the DiT
        (`matching_vae`); with no VAE there, the DiT's own (TI2V: the Wan2.2 VAE's /16 with 48 channels,
        else Wan2.1's /8 with 16). A random init (no path) has Wan2.1's (the frame map, all that
        validation plans read, is the same for both).
        """
        if model_path is None:
            return WAN21_GEOMETRY
        from pusa_fw_wan.dit.checkpoint_source import read_wan_config
        from pusa_fw_wan.hooks import WAN22_TI2V_GEOMETRY
        from pusa_fw_wan.pipeline.loading import find_model_format, vae_geometry

        claimed = find_model_format(_folder(model_path))
        if claimed is not None:
            return claimed.geometry(_folder(model_path))
        vae = matching_vae(model_path)
        if vae is not None:
            return vae_geometry(vae)
        return WAN22_TI2V_GEOMETRY if read_wan_config(Path(model_path).expanduser()).is_ti2v else WAN21_GEOMETRY

    def check_latents(self, latents_shape: tuple[int, ...], model_path: str | None) -> None:
        """Refuse training latents (`[C, F, H, W]`) whose channels are not those of the model's codec (e.g. a
        Wan2.1 cache for TI2V-5B), from the files' headers only. A random init (no path) takes what it gets."""
        if model_path is None:
            return
        channels = self.geometry(model_path).channels
        if latents_shape[0] != channels:
            raise InputError(
                f"the training data's latents have {latents_shape[0]} channels but model {model_path!r} takes "
                f"{channels}-channel latents; encode the data with this model's VAE "
                "(`pusa-fw prepare ... --model <this model>`)"
            )

    def codec(self, model_path: str | None) -> Any:
        """A registered model format's own codec, or the Wan-VAE file beside the DiT that makes its latents
        (`matching_vae`: ``Wan2.2_VAE`` for TI2V-5B, ``Wan2.1_VAE`` for Wan2.1).

        Raises:
            InputError: a random-init model (no directory), or no codec file beside the DiT.
            CheckpointError: VAEs beside the DiT, none of them its own.
        """
        import torch

        from pusa_fw_wan.pipeline.loading import VAE_NAMES, find_model_format

        if model_path is None:
            raise InputError(
                "validation.render_tasks needs a codec to decode renders, but model.architecture (random "
                "init) has none; set model.path to a model directory or clear validation.render_tasks"
            )
        folder = _folder(model_path)
        claimed = find_model_format(folder)
        if claimed is not None:
            return claimed.codec(folder)
        path = matching_vae(model_path)
        if path is not None:
            from pusa_fw_wan.vae.model import WanVAE

            vae = WanVAE.from_pretrained(path, dim=None, z_dim=None, dtype=torch.float32, device="cpu")
            return vae.eval().requires_grad_(False)
        raise InputError(
            f"validation.render_tasks needs a codec to decode renders, but {str(folder)!r} holds none of "
            f"{', '.join(VAE_NAMES)} (nor is it a registered model format); add the VAE or clear "
            "validation.render_tasks"
        )

    def text_encoder(self, model_path: str | None) -> Any:
        """umT5 beside the DiT (fp32, CPU), or the text encoder of a registered model format's directory.

        Raises:
            InputError: a random-init model (no directory to find an encoder in).
        """
        import torch

        from pusa_fw_wan.pipeline.loading import find_model_format, resolve_model_paths, umt5_overrides
        from pusa_fw_wan.text.encoder import WanTextEncoder

        if model_path is None:
            raise InputError(
                "validation.render_prompts needs the model's text encoder, but model.architecture (random "
                "init) has none; set model.path to a model directory or clear validation.render_prompts"
            )
        paths = resolve_model_paths(_folder(model_path), None, None, None)
        if paths.format is not None:  # a small registered format: its loader is the only way in
            claimed = find_model_format(paths.dit)
            return claimed.load(paths.dit, dtype=torch.float32, device="cpu").text_encoder
        return WanTextEncoder.from_pretrained(
            paths.text_encoder, tokenizer=paths.tokenizer, dtype=torch.float32, device="cpu", cache_dir=None,
            **umt5_overrides(paths.text_encoder),
        )

    def collate_context(self, contexts: Sequence[torch.Tensor]) -> torch.Tensor:
        """umT5 contexts `[L, D]` of different lengths, zero-padded to the longest: `[B, L_max, D]` float32."""
        from pusa_fw.training_data import pad_contexts

        return pad_contexts(contexts)

    def tokens_per_sample(self, latents_shape: Sequence[int]) -> int:
        """`F * H * W / 4` (1 x 2 x 2 patches) for latents `[C, F, H, W]`."""
        _, frames, height, width = (int(size) for size in latents_shape)
        return frames * height * width // _PATCH_TOKENS

    def read_lora(self, path: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """Every low-rank pair of a LoRA file in any layout `pusa_fw_wan.lora` reads, by Wan module path."""
        from pusa_fw_wan.lora.formats import load_lora_state

        state = load_lora_state(path)
        pairs = {}
        for module, weights in state.modules.items():
            if weights.has_pair:
                pairs[module] = (weights.down, weights.up, float(weights.scale))
        if not pairs:
            raise CheckpointError(f"{path}: no LoRA pair found to continue from")
        return pairs

    def export_lora(self, checkpoint: Path, out: Path, **options: Any) -> Path:
        """ComfyUI (default) or diffusers key layout (`pusa_fw_wan.train.export.export_lora`)."""
        from pusa_fw_wan.train.export import export_lora

        return export_lora(checkpoint, out, **options).path


class WanTI2VTrainAdapter(WanTrainAdapter):
    """`WanTrainAdapter` for ``model.backbone = "wan2.2-ti2v-5b"``: the same training, limited to TI2V DiTs.

    A random-init `architecture` is a TI2V one unless it says otherwise (``model_type: "ti2v"``, 48 channels
    in and out by default), and a checkpoint or architecture that is not TI2V is refused in one line.
    """

    name = "wan2.2-ti2v-5b"

    def build_model(
        self, path: str | None, architecture: dict[str, Any] | None, init_seed: int, **options: Any
    ) -> nn.Module:
        """`WanTrainAdapter.build_model` of a TI2V DiT.

        Raises:
            CheckpointError: `path` holds a DiT that is not TI2V-5B (e.g. Wan2.1: train it as ``wan2.1-t2v``).
            InputError: an `architecture` that is not TI2V.
        """
        if path is None:
            architecture = {"model_type": "ti2v", "in_dim": 48, "out_dim": 48, **(architecture or {})}
        model = super().build_model(path, architecture, init_seed, **options)
        config = model.config
        if not config.is_ti2v:
            where = f"{str(path)!r} holds" if path is not None else "model.architecture is"
            fix = ("train it as backbone 'wan2.1-t2v'" if path is not None
                   else "set model_type = 'ti2v' or use backbone 'wan2.1-t2v'")
            error = CheckpointError if path is not None else InputError
            raise error(
                f"{where} a {config.in_dim}-channel {config.model_type} Wan DiT, not Wan2.2 TI2V-5B; {fix}"
            )
        return model

    def load_shards(
        self, model: nn.Module, path: str | None, architecture: dict[str, Any] | None, init_seed: int, **options: Any
    ) -> Any:
        """`WanTrainAdapter.load_shards`, with the TI2V defaults of a random-init `architecture`."""
        if path is None:
            architecture = {"model_type": "ti2v", "in_dim": 48, "out_dim": 48, **(architecture or {})}
        return super().load_shards(model, path, architecture, init_seed, **options)
