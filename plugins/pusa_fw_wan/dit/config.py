"""`WanConfig`: the hyper-parameters of a Wan text-to-video DiT (Wan2.1 T2V, Wan2.2 TI2V-5B).

The field names follow the official ``WanModel`` constructor (``wan/modules/model.py``), so an official
``config.json`` maps onto it directly. Fields the released ``config.json`` files leave out
(``patch_size``, ``text_dim``, ``qk_norm``, ``cross_attn_norm``) take the official code defaults.

Wan2.2 TI2V-5B (``model_type: "ti2v"``) is the same network with 48 latent channels in and out and no
image branch: its per-token timesteps are per-frame ones in every official use (see
`pusa_fw_wan.dit.token_timesteps`), which `WanDiT` takes directly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from pusa_fw.errors import CheckpointError

__all__ = ["BUILTIN_CONFIGS", "TI2V_MODEL_TYPE", "WanConfig"]

# Keys an official config.json may carry that are bookkeeping, not architecture.
_OFFICIAL_IGNORED_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "window_size"}


TI2V_MODEL_TYPE = "ti2v"
"""``model_type`` of Wan2.2 TI2V-5B's ``config.json`` (text- and image-to-video through per-token timesteps)."""


class WanConfig(BaseModel):
    """Architecture of a Wan text-to-video DiT (Wan2.1 T2V 1.3B/14B, Wan2.2 TI2V-5B).

    Attributes:
        model_type: ``"t2v"`` (Wan2.1) or ``"ti2v"`` (Wan2.2 TI2V-5B); both are text cross-attention only
            and compute the same way (the label says which pipeline defaults belong to the model).
        patch_size: (frames, height, width) patch of the Conv3d patch embedding; the frame patch must be 1
            so that every latent frame keeps its own timestep.
        text_len: number of text rows the context is zero-padded to (512 for umT5).
        in_dim: latent channels in.
        dim: hidden width.
        ffn_dim: hidden width of the feed-forward network.
        freq_dim: width of the timestep sinusoid.
        text_dim: width of the text-encoder features (4096 for umT5-XXL).
        out_dim: latent channels out.
        num_heads: attention heads (head_dim = dim / num_heads).
        num_layers: number of transformer blocks.
        qk_norm: RMS-normalise q and k (over the full width, across heads).
        cross_attn_norm: affine LayerNorm (``norm3``) before cross-attention.
        eps: epsilon of every norm.
        rope_max_positions: largest grid extent per axis the RoPE table supports (official: 1024).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_type: Literal["t2v", "ti2v"] = "t2v"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 12
    num_layers: int = 30
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_max_positions: int = 1024

    @field_validator(
        "text_len",
        "in_dim",
        "dim",
        "ffn_dim",
        "freq_dim",
        "text_dim",
        "out_dim",
        "num_heads",
        "num_layers",
        "rope_max_positions",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be a positive integer, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WanConfig:
        if self.dim % self.num_heads != 0:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        head_dim = self.dim // self.num_heads
        if head_dim % 2 != 0 or head_dim < 6:
            raise ValueError(f"head_dim = dim / num_heads = {head_dim} must be even and >= 6 for the 3D RoPE")
        if self.freq_dim % 2 != 0:
            raise ValueError(f"freq_dim={self.freq_dim} must be even (cos and sin halves)")
        if self.patch_size[0] != 1:
            raise ValueError(
                f"patch_size={self.patch_size}: the frame patch must be 1 so that each latent frame has its "
                "own timestep; use (1, ph, pw)"
            )
        if min(self.patch_size) <= 0:
            raise ValueError(f"patch_size={self.patch_size} must be positive")
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.num_heads

    @property
    def patch_volume(self) -> int:
        """Number of latent positions in one patch."""
        return self.patch_size[0] * self.patch_size[1] * self.patch_size[2]

    @classmethod
    def t2v_1_3b(cls) -> WanConfig:
        """Wan2.1-T2V-1.3B (dim 1536, 12 heads, 30 layers)."""
        return cls(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)

    @classmethod
    def t2v_14b(cls) -> WanConfig:
        """Wan2.1-T2V-14B (dim 5120, 40 heads, 40 layers); Pusa V1.0 is fine-tuned from it."""
        return cls(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

    @classmethod
    def ti2v_5b(cls) -> WanConfig:
        """Wan2.2-TI2V-5B (dim 3072, 24 heads, 30 layers, FFN 14336, 48 latent channels in and out)."""
        return cls(model_type=TI2V_MODEL_TYPE, in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24,
                   num_layers=30)

    @property
    def is_ti2v(self) -> bool:
        """Whether this is a Wan2.2 TI2V DiT (``model_type: "ti2v"``)."""
        return self.model_type == TI2V_MODEL_TYPE

    @classmethod
    def builtin(cls, name: str) -> WanConfig:
        """A built-in config by name (see `BUILTIN_CONFIGS`).

        Raises:
            CheckpointError: the name is unknown; the message lists the known names.
        """
        factory = BUILTIN_CONFIGS.get(name)
        if factory is None:
            raise CheckpointError(f"unknown Wan config {name!r}; known: {sorted(BUILTIN_CONFIGS)}")
        return factory()

    @classmethod
    def from_official_json(cls, data: dict[str, Any], text_dim: int | None = None) -> WanConfig:
        """Build from an official ``config.json`` (``_class_name: WanModel``).

        Args:
            data: the parsed JSON.
            text_dim: used when the JSON has no ``text_dim`` (the released configs do not); read it from
                the shape of ``text_embedding.0.weight``.
        """
        fields = {k: v for k, v in data.items() if k not in _OFFICIAL_IGNORED_KEYS}
        if "window_size" in data and tuple(data["window_size"]) != (-1, -1):
            raise CheckpointError(f"window_size={data['window_size']} is not supported; only global (-1, -1)")
        if "text_dim" not in fields and text_dim is not None:
            fields["text_dim"] = text_dim
        if "patch_size" in fields:
            fields["patch_size"] = tuple(fields["patch_size"])
        return _validated(cls, fields, "official config.json")

    @classmethod
    def from_diffusers_json(cls, data: dict[str, Any]) -> WanConfig:
        """Build from a diffusers ``WanTransformer3DModel`` ``config.json``.

        Raises:
            CheckpointError: the config describes an image-conditioned (i2v/flf2v) model or uses options
                this implementation does not have.
        """
        if data.get("image_dim") or data.get("added_kv_proj_dim") or data.get("pos_embed_seq_len"):
            raise CheckpointError(
                "this diffusers transformer is image-conditioned (image_dim/added_kv_proj_dim set); only "
                "text-to-video Wan2.1 checkpoints are supported"
            )
        qk_norm = data.get("qk_norm", "rms_norm_across_heads")
        if qk_norm not in ("rms_norm_across_heads", None):
            raise CheckpointError(f"qk_norm={qk_norm!r} is not supported; expected 'rms_norm_across_heads'")
        heads = int(data.get("num_attention_heads", 40))
        fields = {
            "patch_size": tuple(data.get("patch_size", (1, 2, 2))),
            "in_dim": data.get("in_channels", 16),
            "out_dim": data.get("out_channels") or data.get("in_channels", 16),
            "dim": heads * int(data.get("attention_head_dim", 128)),
            "num_heads": heads,
            "ffn_dim": data.get("ffn_dim", 13824),
            "freq_dim": data.get("freq_dim", 256),
            "text_dim": data.get("text_dim", 4096),
            "num_layers": data.get("num_layers", 40),
            "qk_norm": qk_norm is not None,
            "cross_attn_norm": data.get("cross_attn_norm", True),
            "eps": data.get("eps", 1e-6),
            "rope_max_positions": data.get("rope_max_seq_len", 1024),
        }
        return _validated(cls, fields, "diffusers config.json")

    def to_diffusers_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the equivalent diffusers ``WanTransformer3DModel`` (text-to-video)."""
        return {
            "patch_size": tuple(self.patch_size),
            "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.in_dim,
            "out_channels": self.out_dim,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "cross_attn_norm": self.cross_attn_norm,
            "qk_norm": "rms_norm_across_heads" if self.qk_norm else None,
            "eps": self.eps,
        }

    def to_official_json(self) -> dict[str, Any]:
        """The official ``config.json`` content for this config (plus ``text_dim`` and ``patch_size``)."""
        return {
            "_class_name": "WanModel",
            "model_type": self.model_type,
            "patch_size": list(self.patch_size),
            "text_len": self.text_len,
            "in_dim": self.in_dim,
            "dim": self.dim,
            "ffn_dim": self.ffn_dim,
            "freq_dim": self.freq_dim,
            "text_dim": self.text_dim,
            "out_dim": self.out_dim,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "eps": self.eps,
        }


def _validated(cls: type[WanConfig], fields: dict[str, Any], source: str) -> WanConfig:
    try:
        return cls(**fields)
    except ValidationError as error:
        raise CheckpointError(f"{source} does not describe a supported Wan T2V/TI2V DiT: {error}") from error


BUILTIN_CONFIGS = {
    "t2v-1.3B": WanConfig.t2v_1_3b,
    "t2v-14B": WanConfig.t2v_14b,
    "ti2v-5B": WanConfig.ti2v_5b,
}
