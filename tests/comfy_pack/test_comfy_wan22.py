"""The pack on Wan2.2 TI2V-5B (stand-in ComfyUI): a 48-channel `WAN22` MODEL with the Wan2.2 VAE (/16).

The whole node chain (Pusa Task -> Pusa Conditioning with a ComfyUI-style Wan2.2 VAE -> Pusa Sampler on a
`WAN22` MODEL) must give pusa-fw's own loop on our `WanDiT` with the same weights, plan, seed and the
latents our `Wan22VAE` encodes; the model's own image-to-video holds frame 0 clean (strength 1).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import pusa_fw
from pusa_fw.seeding import draw_noise, make_generator
from pusa_fw_wan.pipeline.media import ConditioningMedia, encode_sources

from .conftest import TEXT_DIM, ComfyStyleVAE, comfy_model, conditioning

NUM_FRAMES, HEIGHT, WIDTH = 9, 64, 32  # 3 latent frames of 4 x 2 latent cells (/16)
SEED = 42


@pytest.fixture(scope="module")
def dit22() -> Any:
    from pusa_fw_wan.dit.config import TI2V_MODEL_TYPE, WanConfig
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.testing.tiny import randomise_parameters

    config = WanConfig(model_type=TI2V_MODEL_TYPE, in_dim=48, out_dim=48, dim=32, num_heads=2, num_layers=2,
                       ffn_dim=64, freq_dim=32, text_dim=TEXT_DIM)
    return randomise_parameters(WanDiT(config), torch.Generator().manual_seed(8)).eval()


@pytest.fixture(scope="module")
def vae22() -> Any:
    from pusa_fw_wan.testing.tiny import randomise_parameters
    from pusa_fw_wan.vae.wan22 import Wan22VAE

    return randomise_parameters(Wan22VAE(dim=8, z_dim=48, decoder_dim=12), torch.Generator().manual_seed(4)).eval()


def comfy_model22(dit: Any) -> Any:
    """A stand-in ComfyUI TI2V-5B `MODEL`: ``WAN22`` (latent format ``Wan22``) around `dit`'s weights."""
    from comfy.model_base import WAN22
    from comfy.model_patcher import ModelPatcher

    wan21 = comfy_model(dit)
    return ModelPatcher(WAN22(wan21.model.diffusion_model))


def _texts() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(12)
    return torch.randn(1, 6, TEXT_DIM, generator=generator), torch.randn(1, 6, TEXT_DIM, generator=generator)


def _images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(seed))


CASES = {
    # TI2V-5B's own image-to-video: frame 0 held clean (t = 0, the image latent re-imposed every step).
    "i2v": ("i2v", "1.0", {"image": 1}),
    "start-end": ("start-end", "1.0, 0.8", {"keyframes": 2}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_node_chain_on_ti2v_5b_equals_pusa_fw_sample(dit22: Any, vae22: Any, case: str) -> None:
    from pusa_fw_comfy.nodes import PusaConditioning, PusaSampler, PusaTask

    task, strengths, inputs = CASES[case]
    spec, _ = PusaTask.execute(task, NUM_FRAMES, 4, 5.0, strengths, "", "{}", "(task default)", "{}",
                               "(task default)", "{}").args
    media = {name: _images(count, seed=3 + count) for name, count in inputs.items()}
    given = PusaConditioning.execute(spec, ComfyStyleVAE(vae22), WIDTH, HEIGHT, "image", **media).args[0]
    assert given["samples"].shape == (1, 48, 3, HEIGHT // 16, WIDTH // 16)
    model = comfy_model22(dit22)
    positive, negative = _texts()
    output = PusaSampler.execute(model, conditioning(positive), conditioning(negative), spec, given, SEED,
                                 "unipc", 5.0, 1.0).args[0]["samples"]
    assert output.shape == given["samples"].shape

    pixels = {name: images.movedim(-1, 0) * 2.0 - 1.0 for name, images in media.items()}  # [3, T, H, W]
    ours_media = ConditioningMedia(image=pixels["image"][:, 0] if "image" in pixels else None,
                                   keyframes=list(pixels["keyframes"].unbind(1)) if "keyframes" in pixels else [])
    with torch.no_grad():
        source = encode_sources(vae22, spec.holds, ours_media, spec.num_latent_frames, geometry=vae22.geometry)
        generator = make_generator(SEED)
        reference = pusa_fw.sample(
            dit22, spec.plan, draw_noise(tuple(given["samples"].shape), generator), sampler="unipc",
            source=source, context=positive, negative_context=negative, guidance=pusa_fw.Guidance(cfg_scale=5.0),
            generator=generator,
        )
    latents = model.model.latent_format.process_in(output)
    assert (latents - reference).abs().max().item() < 1e-4
    # Frame 0 is held clean: the image latent itself (up to the latent format's round trip), not noise.
    assert (latents[:, :, 0] - source[:, :, 0]).abs().max().item() < 1e-5
    assert (latents[:, :, 1] - source[:, :, 1]).abs().max().item() > 0.1


def test_text_to_video_on_ti2v_5b(dit22: Any, vae22: Any) -> None:
    """No held frame: the chain gives zeros of the Wan2.2 shape, and the sampler runs the 48-channel model."""
    from pusa_fw_comfy.nodes import PusaConditioning, PusaSampler, PusaTask

    spec, _ = PusaTask.execute("t2v", NUM_FRAMES, 3, 5.0, "", "", "{}", "(task default)", "{}", "(task default)",
                               "{}").args
    given = PusaConditioning.execute(spec, ComfyStyleVAE(vae22), WIDTH, HEIGHT, "image").args[0]
    assert torch.equal(given["samples"], torch.zeros(1, 48, 3, HEIGHT // 16, WIDTH // 16))
    positive, _ = _texts()
    output = PusaSampler.execute(comfy_model22(dit22), conditioning(positive), None, spec, given, 1, "euler", 1.0,
                                 1.0).args[0]["samples"]
    assert output.shape == given["samples"].shape and torch.isfinite(output).all()


def _error(call: Any) -> str:
    from pusa_fw_comfy.errors import PusaNodeError

    with pytest.raises(PusaNodeError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_mismatched_vae_model_and_sizes_are_one_line_errors(dit22: Any, vae22: Any, tiny_vae: Any,
                                                             tiny_dit: Any) -> None:
    from pusa_fw_comfy.nodes import PusaConditioning, PusaSampler, PusaTask

    spec, _ = PusaTask.execute("i2v", NUM_FRAMES, 3, 5.0, "1.0", "", "{}", "(task default)", "{}",
                               "(task default)", "{}").args
    image = _images(1, 5)
    positive, _ = _texts()
    # A Wan2.1 VAE's 16-channel latents into the 48-channel TI2V-5B model.
    wan21_given = PusaConditioning.execute(spec, ComfyStyleVAE(tiny_vae), WIDTH, HEIGHT, "image", image=image)
    assert wan21_given.args[0]["samples"].shape[1] == 16
    message = _error(lambda: PusaSampler.execute(comfy_model22(dit22), conditioning(positive), None, spec,
                                                 wan21_given.args[0], 0, "euler", 1.0, 1.0))
    assert message.startswith("Pusa Sampler: latent has 16 channels but the MODEL takes 48")
    # And the other way: Wan2.2 latents into a Wan2.1 model.
    wan22_given = PusaConditioning.execute(spec, ComfyStyleVAE(vae22), WIDTH, HEIGHT, "image", image=image)
    assert "latent has 48 channels but the MODEL takes 16" in _error(
        lambda: PusaSampler.execute(comfy_model(tiny_dit), conditioning(positive), None, spec, wan22_given.args[0],
                                    0, "euler", 1.0, 1.0))
    # The Wan2.2 VAE's sizes are multiples of 32 (16 pixels per latent cell, 2 cells per token).
    assert "width=48 must be a positive multiple of 32" in _error(
        lambda: PusaConditioning.execute(spec, ComfyStyleVAE(vae22), 48, HEIGHT, "image", image=image))
    # Something that is not a video VAE.
    assert "is not a video VAE" in _error(
        lambda: PusaConditioning.execute(spec, object(), WIDTH, HEIGHT, "image", image=image))


def test_a_48_channel_dit_with_wan21_latents_is_refused(dit22: Any) -> None:
    """A MODEL whose input channels are not its latent format's (48 in, Wan21's 16) is refused in one line."""
    from pusa_fw_comfy.backbone import ComfyWanBackbone
    from pusa_fw_comfy.errors import node_errors

    message = _error(lambda: _construct(ComfyWanBackbone, comfy_model(dit22), node_errors))
    assert "takes 48 input channels for 16-channel latents" in message


def _construct(cls: Any, model: Any, node_errors: Any) -> Any:
    with node_errors("Pusa Sampler"):
        return cls(model)


def test_vae_geometry_reads_the_vae(vae22: Any, tiny_vae: Any) -> None:
    from pusa_fw.geometry import WAN21_GEOMETRY

    from pusa_fw_comfy.comfy_bridge import vae_geometry

    wan22 = vae_geometry(ComfyStyleVAE(vae22), WAN21_GEOMETRY)
    assert (wan22.channels, wan22.spatial_factor, wan22.spatial_multiple) == (48, 16, 32)
    assert wan22 == vae22.geometry
    assert vae_geometry(ComfyStyleVAE(tiny_vae), WAN21_GEOMETRY) == WAN21_GEOMETRY
