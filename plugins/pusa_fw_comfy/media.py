"""The Pusa Conditioning node's work: ComfyUI `IMAGE`s + `VAE` -> the given latents of a plan.

pusa-fw's own rule decides what is encoded (`pusa_fw_wan.pipeline.media.encode_sources`): an image or a
keyframe is encoded alone as a one-frame video (Pusa's rule), a clip once in its own causal context, and
each latent lands at the frame the task's `Hold` names. Here ComfyUI's `VAE` does the encoding through a
small codec adapter, and the media come as `IMAGE` batches:

- ``IMAGE`` is `[T, H, W, 3]` float in [0, 1]; pusa-fw's media are `[3, T, H, W]` in [-1, 1];
- media of another size are fitted to the output size by the rule ``pusa-fw generate`` uses
  (`pusa_fw.io.resize.fit_frames`, centre crop: the centre region with the output's aspect ratio, resized
  bicubic with antialiasing), so a start image of another size gives generate's pixels and latents;
  media already at the size pass unchanged.

The result is a ComfyUI `LATENT` in the VAE's own latent space (what the stock VAE Encode gives), zeros at
frames that are not held. Its channels and spatial size are the VAE's (`comfy_bridge.vae_geometry`): 16
channels at 1/8 of the pixels with the Wan2.1 VAE, 48 at 1/16 with the Wan2.2 VAE of TI2V-5B (whose sizes
must then be multiples of 32); the frame map is the plan's.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange

from pusa_fw.errors import InputError
from pusa_fw.geometry import LatentGeometry
from pusa_fw.io.resize import fit_frames

from pusa_fw_wan.pipeline.media import ConditioningMedia, check_media, encode_sources

from . import comfy_bridge
from .plan_spec import PusaPlanSpec

__all__ = ["ComfyVAECodec", "GIVEN_FRAMES_KEY", "encode_given", "fit_image", "image_to_video", "video_to_image"]

GIVEN_FRAMES_KEY = "pusa_given_frames"
"""Extra key of the conditioning node's `LATENT`: the latent frames that hold given content."""

_FLAGS = {
    "image": "an IMAGE on the image input",
    "keyframe": "one IMAGE per keyframe on the keyframes input (a batch, in order)",
    "video": "the clip on the video input",
    "video_b": "the second clip on the video_b input",
}


def image_to_video(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI `IMAGE` `[T, H, W, 3]` in [0, 1] -> pusa-fw pixels `[3, T, H, W]` in [-1, 1]."""
    return rearrange(images[..., :3].to(torch.float32), "t h w c -> c t h w") * 2.0 - 1.0


def video_to_image(video: torch.Tensor) -> torch.Tensor:
    """pusa-fw pixels `[3, T, H, W]` in [-1, 1] -> ComfyUI `IMAGE` `[T, H, W, 3]` in [0, 1]."""
    return rearrange((video + 1.0) / 2.0, "c t h w -> t h w c")


def fit_image(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`IMAGE` `[T, H, W, C]` fitted to `height` x `width` by generate's centre-crop rule (`fit_frames`)."""
    if images.dim() != 4 or images.shape[-1] < 3:
        raise InputError(f"an IMAGE must be [frames, height, width, 3], got {list(images.shape)}")
    if tuple(images.shape[1:3]) == (height, width):
        return images[..., :3]
    frames = rearrange(images[..., :3], "t h w c -> t c h w")
    return rearrange(fit_frames(frames, (height, width), "center-crop"), "t c h w -> t h w c")


class ComfyVAECodec:
    """ComfyUI's `VAE` with the codec interface `encode_sources` expects.

    Args:
        vae: a ComfyUI `VAE` (``encode(IMAGE) -> [1, C, L, h, w]``).
        geometry: the codec geometry: the plan's frame map with the VAE's channels and spatial factor.
    """

    def __init__(self, vae: Any, geometry: LatentGeometry) -> None:
        self.vae = vae
        self.geometry = geometry

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """`[1, 3, T, H, W]` in [-1, 1] -> `[1, C, L, h, w]` latents, causally over the T frames."""
        latents = self.vae.encode(video_to_image(video[0]))
        expected = self.geometry.num_latent_frames(video.shape[2])
        if latents.dim() != 5 or latents.shape[1] != self.geometry.channels or latents.shape[2] != expected:
            raise InputError(
                f"the VAE gave latents {list(latents.shape)} for {video.shape[2]} frames, expected "
                f"{self.geometry.channels} channels and {expected} latent frames: load a Wan VAE (Wan2.1_VAE "
                "for Wan2.1 / A14B models, Wan2.2_VAE for TI2V-5B)"
            )
        return latents.to(torch.float32)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """`[1, 3, H, W]` in [-1, 1] -> `[1, C, 1, h, w]`: the picture encoded as a one-frame video."""
        return self.encode(image.unsqueeze(2))


def _media(spec: PusaPlanSpec, height: int, width: int, image: torch.Tensor | None,
           keyframes: torch.Tensor | None, video: torch.Tensor | None, video_b: torch.Tensor | None) -> ConditioningMedia:
    def fitted(images: torch.Tensor | None) -> torch.Tensor | None:
        return None if images is None else image_to_video(fit_image(images, height, width))

    picture = fitted(image)
    if picture is not None and picture.shape[1] != 1:
        raise InputError(f"the image input holds {picture.shape[1]} images; give one (the start image)")
    keyframe_video = fitted(keyframes)
    return ConditioningMedia(
        image=None if picture is None else picture[:, 0],
        keyframes=[] if keyframe_video is None else list(keyframe_video.unbind(1)),
        video=fitted(video),
        video_b=fitted(video_b),
    )


def encode_given(
    spec: PusaPlanSpec,
    vae: Any,
    *,
    width: int,
    height: int,
    image: torch.Tensor | None = None,
    keyframes: torch.Tensor | None = None,
    video: torch.Tensor | None = None,
    video_b: torch.Tensor | None = None,
    keyframe_encoding: str = "image",
) -> dict[str, Any]:
    """The given latents of `spec`'s plan as a ComfyUI `LATENT`.

    Args:
        spec: the compiled task.
        vae: ComfyUI's `VAE` (Wan2.1's, or Wan2.2's for TI2V-5B); its channels and spatial factor shape the
            latents.
        width: output width in pixels (a multiple of 16 for the Wan2.1 VAE, of 32 for the Wan2.2 VAE).
        height: output height in pixels.
        image: `[1, H, W, 3]` the start image (i2v, rolling with an image).
        keyframes: `[K, H, W, 3]` keyframe k feeds the task's ``keyframe:k`` (start-end: first, last).
        video: `[T, H, W, 3]` the clip to extend (its last frames are used) or to transform.
        video_b: `[T, H, W, 3]` the second clip of a transition.
        keyframe_encoding: ``"image"`` (Pusa: a keyframe encoded alone) or ``"video"`` (as a still chunk).

    Returns:
        ``{"samples": [1, C, N, h, w], "pusa_given_frames": [...]}``, zeros at frames that are not held.

    Raises:
        InputError: a missing or unused input, a clip too short, a size the codec does not take, a VAE that
            is not a Wan video VAE.
    """
    geometry = comfy_bridge.vae_geometry(vae, spec.geometry)
    channels, num_latents, latent_height, latent_width = geometry.latent_shape(spec.num_frames, height, width)
    holds = spec.holds
    given = {"image": image is not None, "video": video is not None, "video_b": video_b is not None}
    count = 0 if keyframes is None else int(keyframes.shape[0])
    given.update({f"keyframe:{k}": True for k in range(count)})
    check_media(holds, given, spec.task.name, _FLAGS)
    media = _media(spec, height, width, image, keyframes, video, video_b)
    with torch.no_grad():
        source = encode_sources(ComfyVAECodec(vae, geometry), holds, media, num_latents,
                                keyframe_encoding=keyframe_encoding, geometry=geometry)  # type: ignore[arg-type]
    if source is None:
        source = torch.zeros(1, channels, num_latents, latent_height, latent_width)
    return {"samples": source.cpu(), GIVEN_FRAMES_KEY: sorted(hold.frame for hold in holds)}
