"""Pusa Conditioning: given media -> given latents, equal to pusa-fw's own encoding (stand-in ComfyUI VAE)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import pusa_fw
from pusa_fw_wan.pipeline.media import ConditioningMedia, encode_sources

from .conftest import comfy_model

HEIGHT, WIDTH = 32, 48


def _spec(task: str, num_frames: int = 9, **params: Any) -> Any:
    from pusa_fw_comfy.plan_spec import compile_plan

    return compile_plan(pusa_fw.get_task(task, **params), num_frames, 4, 5.0)


def _images(count: int, seed: int, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def _run(spec: Any, vae: Any, **media: Any) -> dict[str, Any]:
    from pusa_fw_comfy.nodes import PusaConditioning

    return PusaConditioning.execute(spec, vae, WIDTH, HEIGHT, media.pop("keyframe_encoding", "image"), **media).args[0]


def _pusa(images: torch.Tensor) -> torch.Tensor:
    return images.movedim(-1, 0) * 2.0 - 1.0  # [3, T, H, W] in [-1, 1]


@pytest.mark.parametrize("encoding", ["image", "video"])
def test_keyframes_land_at_the_plans_latent_frames(tiny_vae: Any, tiny_model_format: Any, comfy_vae: Any,
                                                   encoding: str) -> None:
    spec = _spec("keyframes", positions=[0, 4, 8])
    keyframes = _images(3, 1)
    given = _run(spec, comfy_vae, keyframes=keyframes, keyframe_encoding=encoding)
    media = ConditioningMedia(keyframes=list(_pusa(keyframes).unbind(1)))
    with torch.no_grad():
        expected = encode_sources(tiny_vae, spec.holds, media, spec.num_latent_frames, keyframe_encoding=encoding)
    assert given["samples"].shape == (1, 16, 3, HEIGHT // 8, WIDTH // 8)
    assert given["pusa_given_frames"] == [0, 1, 2]
    torch.testing.assert_close(tiny_model_format.process_in(given["samples"]), expected, rtol=1e-4, atol=1e-5)


def test_extension_uses_the_last_frames_of_the_clip(tiny_vae: Any, tiny_model_format: Any, comfy_vae: Any) -> None:
    spec = _spec("extension", num_frames=13, given_frames=5, strengths=[1.0, 0.8])
    clip = _images(11, 2)
    given = _run(spec, comfy_vae, video=clip)
    with torch.no_grad():
        expected = encode_sources(tiny_vae, spec.holds, ConditioningMedia(video=_pusa(clip)), spec.num_latent_frames)
    assert given["pusa_given_frames"] == [0, 1]
    held = tiny_model_format.process_in(given["samples"])[:, :, :2]
    torch.testing.assert_close(held, expected[:, :, :2], rtol=1e-4, atol=1e-5)
    assert torch.equal(given["samples"][:, :, 2:], torch.zeros_like(given["samples"][:, :, 2:]))
    assert comfy_vae.calls == 1  # a clip is encoded once, causally


def test_media_of_another_size_are_cropped_and_resized(comfy_vae: Any) -> None:
    from pusa_fw_comfy.media import fit_image

    spec = _spec("i2v")
    wide = _images(1, 3, height=64, width=160)
    given = _run(spec, comfy_vae, image=wide)
    assert given["samples"].shape == (1, 16, 3, HEIGHT // 8, WIDTH // 8)
    fitted = fit_image(wide, HEIGHT, WIDTH)
    assert fitted.shape == (1, HEIGHT, WIDTH, 3) and 0 <= fitted.min() and fitted.max() <= 1
    same = _images(1, 4)
    assert fit_image(same, HEIGHT, WIDTH) is not same and torch.equal(fit_image(same, HEIGHT, WIDTH), same)


def test_text_to_video_gives_zeros_of_the_plans_shape(comfy_vae: Any) -> None:
    given = _run(_spec("t2v"), comfy_vae)
    assert torch.equal(given["samples"], torch.zeros(1, 16, 3, HEIGHT // 8, WIDTH // 8))
    assert given["pusa_given_frames"] == [] and comfy_vae.calls == 0


def test_bad_media_are_one_line_node_errors(comfy_vae: Any) -> None:
    from pusa_fw_comfy.errors import PusaNodeError
    from pusa_fw_comfy.nodes import PusaConditioning

    def error(spec: Any, width: int = WIDTH, **media: Any) -> str:
        with pytest.raises(PusaNodeError) as raised:
            PusaConditioning.execute(spec, comfy_vae, width, HEIGHT, "image", **media)
        assert "\n" not in str(raised.value) and str(raised.value).startswith("Pusa Conditioning: ")
        return str(raised.value)

    assert "needs image" in error(_spec("i2v"))
    assert "does not use image" in error(_spec("t2v"), image=_images(1, 0))
    assert "keyframe 1" in error(_spec("start-end"), keyframes=_images(1, 0))
    assert "holds 2 images" in error(_spec("i2v"), image=_images(2, 0))
    assert "multiple of 16" in error(_spec("i2v"), width=40, image=_images(1, 0))
    assert "needs [3, T >= 13" in error(_spec("extension", num_frames=17), video=_images(5, 0))


def test_the_given_latents_feed_the_sampler(tiny_dit: Any, comfy_vae: Any) -> None:
    """Conditioning -> Sampler: with a clean hold, the held frame comes out as the encoded image, bit for bit."""
    from pusa_fw_comfy.nodes import PusaConditioning, PusaSampler

    spec = _spec("i2v", policy="clean")
    given = PusaConditioning.execute(spec, comfy_vae, WIDTH, HEIGHT, "image", image=_images(1, 5)).args[0]
    model = comfy_model(tiny_dit)
    text = [[torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(0)), {}]]
    latent = PusaSampler.execute(model, text, None, spec, given, 0, "unipc", 1.0, 1.0).args[0]["samples"]
    fmt = model.model.latent_format
    assert torch.equal(fmt.process_in(latent)[:, :, 0], fmt.process_in(given["samples"])[:, :, 0])


def test_a_start_image_of_another_size_gives_generates_pixels_and_latents(tmp_path: Any, tiny_vae: Any,
                                                                          tiny_model_format: Any,
                                                                          comfy_vae: Any) -> None:
    """One resize rule: a 40x60 start image fitted to 32x48 by ComfyUI's path and by generate's file path."""
    import numpy as np
    from PIL import Image

    from pusa_fw_wan.pipeline.media import load_media

    from pusa_fw_comfy.media import fit_image

    pixels = (torch.rand(40, 60, 3, generator=torch.Generator().manual_seed(9)) * 255).round().to(torch.uint8)
    path = tmp_path / "start.png"
    Image.fromarray(pixels.numpy()).save(path)
    # ComfyUI's LoadImage: the 8-bit pixels as float32 / 255 in an IMAGE [1, H, W, 3].
    comfy_image = torch.from_numpy(np.asarray(Image.open(path)).astype(np.float32) / 255.0).unsqueeze(0)
    spec = _spec("i2v")
    generate_media = load_media(spec.holds, image=path, keyframes=[], video=None, video_b=None,
                                size=(HEIGHT, WIDTH), fps=16)
    comfy_pixels = fit_image(comfy_image, HEIGHT, WIDTH)[0].movedim(-1, 0) * 2.0 - 1.0
    assert generate_media.image is not None and generate_media.image.shape == comfy_pixels.shape
    # Same rule, same float input: the pixels agree far inside one 8-bit step (2 / 255 in [-1, 1]).
    assert (generate_media.image - comfy_pixels).abs().max().item() <= 1e-6
    with torch.no_grad():
        expected = encode_sources(tiny_vae, spec.holds, generate_media, spec.num_latent_frames)
    given = _run(spec, comfy_vae, image=comfy_image)
    latents = tiny_model_format.process_in(given["samples"])
    assert (latents[:, :, :1] - expected[:, :, :1]).abs().max().item() < 1e-5
