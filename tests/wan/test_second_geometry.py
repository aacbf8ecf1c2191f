"""A codec with another latent geometry (Wan2.2 TI2V-5B's: stride 4, /16 spatial, 48 channels) end to end.

The codec stand-in folds each group of 4 pixel frames (frame 0 alone, repeated) and each 16 x 16 pixel block
into 3 * 4 * 256 values and projects them onto 48 fixed orthonormal directions; decoding projects back. A
tiny random `WanDiT` with ``in_dim = out_dim = 48`` is the backbone. The pipeline must take the frame map,
the size checks and the latent shape from the codec's `geometry`, and clean-held frames stay bit-exact.
"""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from torch import nn

import pusa_fw
from pusa_fw.errors import FrameMapError
from pusa_fw.geometry import WAN21_GEOMETRY, LatentGeometry
from pusa_fw.guidance import Guidance
from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.pipeline.media import ConditioningMedia
from pusa_fw_wan.pipeline.wan import WanPipeline
from pusa_fw_wan.testing.tiny import randomise_parameters

GEOMETRY = LatentGeometry(temporal_stride=4, first_frame_alone=True, spatial_factor=16, patch_size=2, channels=48)
SIZE = 64  # pixels: 4 latent cells, 2 tokens per side
TEXT_DIM = 16

pytestmark = pytest.mark.usefixtures("one_thread")


class ProjectionCodec(nn.Module):
    """Pixel unshuffle (time x 4, space x 16) followed by a fixed orthonormal projection to 48 channels."""

    def __init__(self, geometry: LatentGeometry = GEOMETRY) -> None:
        super().__init__()
        self.geometry = geometry
        stride, factor = geometry.temporal_stride, geometry.spatial_factor
        folded = 3 * stride * factor * factor
        basis, _ = torch.linalg.qr(torch.randn(folded, geometry.channels, generator=torch.Generator().manual_seed(0)))
        self.register_buffer("basis", basis.T.contiguous())  # [C, folded], orthonormal rows

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """`[B, 3, T, H, W]` -> `[B, C, F, H / 16, W / 16]`."""
        stride, factor = self.geometry.temporal_stride, self.geometry.spatial_factor
        self.geometry.num_latent_frames(video.shape[2])
        padded = torch.cat([video[:, :, :1].expand(-1, -1, stride - 1, -1, -1), video], dim=2)
        folded = rearrange(padded, "b c (f s) (h p) (w q) -> b f h w (c s p q)", s=stride, p=factor, q=factor)
        return rearrange(folded @ self.basis.T, "b f h w k -> b k f h w")

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """`[B, 3, H, W]` -> `[B, C, 1, h, w]`."""
        return self.encode(image.unsqueeze(2))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """`[B, C, F, h, w]` -> `[B, 3, T, H, W]` (the projection back; frame 0 from its first copy)."""
        stride, factor = self.geometry.temporal_stride, self.geometry.spatial_factor
        folded = rearrange(latents, "b k f h w -> b f h w k") @ self.basis
        video = rearrange(folded, "b f h w (c s p q) -> b c (f s) (h p) (w q)", s=stride, p=factor, q=factor)
        return video[:, :, stride - 1:].clamp(-1, 1)


class HashTextEncoder:
    """Prompt -> `[1, 4, TEXT_DIM]` from a generator seeded by the prompt's bytes."""

    def __init__(self) -> None:
        self.model = nn.Identity()

    def encode(self, prompts: list[str]) -> torch.Tensor:
        seed = sum(ord(ch) * (k + 1) for k, ch in enumerate(prompts[0]))
        return torch.randn(1, 4, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pipeline() -> WanPipeline:
    config = WanConfig(in_dim=48, out_dim=48, dim=32, ffn_dim=64, freq_dim=32, text_dim=TEXT_DIM, num_heads=2,
                       num_layers=2, text_len=4)
    dit = randomise_parameters(WanDiT(config), torch.Generator().manual_seed(1)).eval()
    return WanPipeline(dit, ProjectionCodec(), HashTextEncoder())


def picture(seed: int) -> torch.Tensor:
    return torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_codec_stand_in_has_the_declared_geometry() -> None:
    codec = ProjectionCodec()
    video = torch.rand(1, 3, 9, SIZE, SIZE) * 2 - 1
    latents = codec.encode(video)
    assert tuple(latents.shape[1:]) == GEOMETRY.latent_shape(9, SIZE, SIZE) == (48, 3, 4, 4)
    assert tuple(codec.decode(latents).shape) == tuple(video.shape)
    assert torch.equal(codec.encode_image(video[:, :, 0])[:, :, 0], latents[:, :, 0])  # frame 0 is alone


def test_a_task_runs_end_to_end_on_the_second_geometry(pipeline: WanPipeline) -> None:
    assert pipeline.geometry == GEOMETRY
    task = pusa_fw.get_task("keyframes", positions=[0, 8], strengths=[1.0], policy="clean")
    media = ConditioningMedia(keyframes=[picture(1), picture(2)])
    result = pipeline.generate(task, prompt="a cat", media=media, num_frames=9, height=SIZE, width=SIZE,
                               num_steps=2, guidance=Guidance(cfg_scale=2.0), sampler="unipc", seed=3)
    assert tuple(result.video.shape) == (3, 9, SIZE, SIZE)
    assert tuple(result.latents.shape) == (1, 48, 3, 4, 4)
    assert result.plan.num_latent_frames == 3 and result.clean_frames == [0, 2]
    for frame in result.clean_frames:
        assert torch.equal(result.latents[:, :, frame], result.source_latents[:, :, frame])
    assert torch.isfinite(result.video).all() and not torch.equal(result.latents[:, :, 1], result.latents[:, :, 0])


def test_rolling_windows_and_sizes_follow_the_codec(pipeline: WanPipeline) -> None:
    task = pusa_fw.get_task("rolling", window=9, overlap=5, image=True, image_strength=1.0, policy="clean")
    result = pipeline.generate(task, prompt="a boat", media=ConditioningMedia(image=picture(3)), num_frames=17,
                               height=SIZE, width=SIZE, num_steps=1, guidance=Guidance(), seed=0)
    assert result.plan.num_latent_frames == 5 and tuple(result.video.shape) == (3, 17, SIZE, SIZE)
    assert torch.equal(result.latents[:, :, 0], result.source_latents[:, :, 0])
    with pytest.raises(FrameMapError, match="height=48 must be a positive multiple of 32"):
        pipeline.generate(task, prompt="x", num_frames=17, height=48, width=SIZE)


def test_wan_codec_and_backbone_factory_declare_the_wan21_geometry() -> None:
    from pusa_fw.components import lookup_class
    from pusa_fw_wan.vae.model import WanVAE

    assert WanVAE(dim=8).geometry == WAN21_GEOMETRY
    assert lookup_class("backbones", "wan2.1-t2v").geometry == WAN21_GEOMETRY
