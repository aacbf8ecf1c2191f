"""WanPipeline on a tiny random Wan set: held frames, media encoding, rolling latents, guidance, prompts."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw.guidance import Guidance
from pusa_fw.registry_lookup import lookup
from pusa_fw_wan.pipeline.media import ConditioningMedia, clip_end
from pusa_fw_wan.text.prompts import WAN_DEFAULT_NEGATIVE_PROMPT
from pusa_fw_wan.pipeline.loading import load_models, resolve_model_paths
from pusa_fw_wan.pipeline.wan import WanPipeline
from pusa_fw_wan.testing.tiny import build_tiny_wan

HEIGHT, WIDTH = 32, 48


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> WanPipeline:
    tiny = build_tiny_wan(tmp_path_factory.mktemp("tiny_wan"))
    paths = resolve_model_paths(tiny.root, None, None, None)
    models = load_models(paths, loras=[], dtype=torch.float32, device=torch.device("cpu"), offload="none",
                         prompt_cache=False)
    return WanPipeline(models.dit, models.vae, models.text_encoder)


def picture(seed: int) -> torch.Tensor:
    return torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def clip(seed: int, frames: int) -> torch.Tensor:
    return torch.rand(3, frames, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# task, params (every held frame clean), pixel frames, media
HELD_CASES = {
    "i2v": ({}, 9, ConditioningMedia(image=picture(1))),
    "start-end": ({}, 9, ConditioningMedia(keyframes=[picture(2), picture(3)])),
    "keyframes": ({"positions": [0, 8]}, 9, ConditioningMedia(keyframes=[picture(4), picture(5)])),
    "extension": ({"given_frames": 5, "strengths": [1.0]}, 9, ConditioningMedia(video=clip(6, 13))),
    "transition": ({"tail_frames": 1, "head_frames": 1}, 9,
                   ConditioningMedia(video=clip(7, 9), video_b=clip(8, 5))),
    "rolling": ({"window": 9, "overlap": 5, "image": True}, 13, ConditioningMedia(image=picture(9))),
    "loop": ({"window": 9, "overlap": 1, "image": True}, 17, ConditioningMedia(image=picture(10))),
}


@pytest.mark.parametrize("task_name", sorted(HELD_CASES))
def test_clean_held_frames_decode_from_the_unchanged_source_latents(pipeline: WanPipeline,
                                                                    task_name: str) -> None:
    params, num_frames, media = HELD_CASES[task_name]
    task = lookup("tasks", task_name)(policy="clean", **params)
    result = pipeline.generate(task, prompt="a cat on the beach", media=media, num_frames=num_frames,
                               height=HEIGHT, width=WIDTH, num_steps=2, guidance=Guidance(cfg_scale=1.0), seed=3)
    held = sorted(hold.frame for hold in task.holds(num_frames, 2))
    assert result.clean_frames == held and held
    assert result.source_latents is not None
    for frame in held:  # bit for bit: the sampler never touched them
        assert torch.equal(result.latents[:, :, frame], result.source_latents[:, :, frame])
    free = [frame for frame in range(result.latents.shape[2]) if frame not in held]
    assert free and not torch.equal(result.latents[:, :, free], result.source_latents[:, :, free])
    assert result.video.shape == (3, num_frames, HEIGHT, WIDTH)
    with torch.no_grad():  # the output video is the VAE decode of exactly these latents
        assert torch.equal(pipeline.vae.decode(result.latents)[0], result.video)


def test_held_sources_are_the_vae_encodings_of_the_inputs(pipeline: WanPipeline) -> None:
    image, first, last = picture(11), picture(12), picture(13)
    given = clip(14, 13)
    cases = [
        ("i2v", {}, ConditioningMedia(image=image), {0: pipeline.vae.encode_image(image[None])[0, :, 0]}),
        ("start-end", {}, ConditioningMedia(keyframes=[first, last]),
         {0: pipeline.vae.encode_image(first[None])[0, :, 0],
          2: pipeline.vae.encode_image(last[None])[0, :, 0]}),
        # extension continues the clip: its LAST 5 frames (2 latents) are encoded and held
        ("extension", {"given_frames": 5, "strengths": [1.0]}, ConditioningMedia(video=given),
         {f: pipeline.vae.encode(given[None, :, -5:])[0, :, f] for f in (0, 1)}),
        # v2v re-generates the clip: its FIRST 9 frames (3 latents)
        ("v2v", {"policy": "late_release"}, ConditioningMedia(video=given),
         {f: pipeline.vae.encode(given[None, :, :9])[0, :, f] for f in (0, 1, 2)}),
    ]
    for task_name, params, media, expected in cases:
        task = lookup("tasks", task_name)(**{"policy": "clean", **params})
        result = pipeline.generate(task, prompt="dog", media=media, num_frames=9, height=HEIGHT, width=WIDTH,
                                   num_steps=1, guidance=Guidance(cfg_scale=1.0))
        for frame, latent in expected.items():
            assert torch.equal(result.source_latents[0, :, frame], latent), (task_name, frame)


def test_clip_ends_are_declared_by_the_tasks() -> None:
    extension = lookup("tasks", "extension")(given_frames=5, strengths=[1.0]).holds(17)
    transition = lookup("tasks", "transition")(tail_frames=5, head_frames=5).holds(17)
    v2v = lookup("tasks", "v2v")().holds(17)
    assert clip_end(extension, "video") == "tail"
    assert clip_end(transition, "video") == "tail"
    assert clip_end(transition, "video_b") == "head"
    assert clip_end(v2v, "video") == "head"


def test_keyframe_encoding_video_changes_only_chunk_positions(pipeline: WanPipeline) -> None:
    media = ConditioningMedia(keyframes=[picture(15), picture(16)])
    task = lookup("tasks", "keyframes")(positions=[0, 8], policy="clean")
    as_image = pipeline.generate(task, prompt="x", media=media, num_frames=9, height=HEIGHT, width=WIDTH,
                                 num_steps=1, guidance=Guidance(cfg_scale=1.0), keyframe_encoding="image")
    as_video = pipeline.generate(task, prompt="x", media=media, num_frames=9, height=HEIGHT, width=WIDTH,
                                 num_steps=1, guidance=Guidance(cfg_scale=1.0), keyframe_encoding="video")
    assert torch.equal(as_image.source_latents[:, :, 0], as_video.source_latents[:, :, 0])
    assert not torch.allclose(as_image.source_latents[:, :, 2], as_video.source_latents[:, :, 2], atol=1e-3)
    still = picture(16)[None, :, None].expand(-1, -1, 5, -1, -1)
    assert torch.equal(as_video.source_latents[0, :, 2], pipeline.vae.encode(still)[0, :, 1])


def test_rolling_keeps_latents_between_windows(pipeline: WanPipeline,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"encode": 0, "decode": 0}
    vae = pipeline.vae
    original_encode, original_decode = vae.encode, vae.decode

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(vae, "encode", counting("encode", original_encode))
    monkeypatch.setattr(vae, "decode", counting("decode", original_decode))
    task = lookup("tasks", "rolling")(window=9, overlap=5)
    result = pipeline.generate(task, prompt="a red car", num_frames=21, height=HEIGHT, width=WIDTH, num_steps=2,
                               guidance=Guidance(cfg_scale=1.0))
    assert len({tuple(window) for window in result.plan.windows.tolist()}) > 1
    assert calls == {"encode": 0, "decode": 1}
    assert result.video.shape[1] == 21


def test_guidance_uses_the_negative_prompt_and_wans_default(pipeline: WanPipeline,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    original = pipeline.text_encoder.encode

    def spy(prompts):
        seen.append(list(prompts))
        return original(prompts)

    monkeypatch.setattr(pipeline.text_encoder, "encode", spy)
    task = lookup("tasks", "t2v")()
    settings = dict(num_frames=5, height=HEIGHT, width=WIDTH, num_steps=2, seed=1)
    plain = pipeline.generate(task, prompt="a cat", guidance=Guidance(cfg_scale=1.0), **settings)
    default_negative = pipeline.generate(task, prompt="a cat", guidance=Guidance(cfg_scale=3.0), **settings)
    own_negative = pipeline.generate(task, prompt="a cat", guidance=Guidance(cfg_scale=3.0), negative_prompt="dark night",
                                     **settings)
    assert seen == [["a cat"], ["a cat"], [WAN_DEFAULT_NEGATIVE_PROMPT], ["a cat"], ["dark night"]]
    assert not torch.equal(plain.latents, default_negative.latents)
    assert not torch.equal(default_negative.latents, own_negative.latents)
    again = pipeline.generate(task, prompt="a cat", guidance=Guidance(cfg_scale=3.0), negative_prompt="dark night",
                              **settings)
    assert torch.equal(own_negative.video, again.video)  # seeded: the same run twice is identical


def test_prompt_ranges_need_sliding_windows_and_a_first_prompt(pipeline: WanPipeline) -> None:
    t2v = lookup("tasks", "t2v")()
    with pytest.raises(InputError, match="sliding windows"):
        pipeline.generate(t2v, prompt="a", prompts_at=[(4, "b")], num_frames=9, height=HEIGHT, width=WIDTH,
                          num_steps=1, guidance=Guidance(cfg_scale=1.0))
    rolling = lookup("tasks", "rolling")(window=9, overlap=5)
    with pytest.raises(InputError, match="frame 0"):
        pipeline.generate(rolling, prompt=None, prompts_at=[(8, "b")], num_frames=13, height=HEIGHT,
                          width=WIDTH, num_steps=1, guidance=Guidance(cfg_scale=1.0))
    with pytest.raises(InputError, match="no prompt"):
        pipeline.generate(t2v, prompt=None, num_frames=9, height=HEIGHT, width=WIDTH, num_steps=1,
                          guidance=Guidance(cfg_scale=1.0))
    two = pipeline.generate(rolling, prompt="a cat", prompts_at=[(8, "a dog")], num_frames=13, height=HEIGHT,
                            width=WIDTH, num_steps=1, guidance=Guidance(cfg_scale=1.0))
    one = pipeline.generate(rolling, prompt="a cat", num_frames=13, height=HEIGHT, width=WIDTH, num_steps=1,
                            guidance=Guidance(cfg_scale=1.0))
    assert torch.equal(two.latents[:, :, :3], one.latents[:, :, :3])  # first window: same prompt
    assert not torch.equal(two.latents[:, :, 3:], one.latents[:, :, 3:])  # second window: the new prompt


def test_missing_media_is_an_input_error(pipeline: WanPipeline) -> None:
    with pytest.raises(InputError, match="not given"):
        pipeline.generate(lookup("tasks", "i2v")(), prompt="a", num_frames=5, height=HEIGHT, width=WIDTH,
                          num_steps=1, guidance=Guidance(cfg_scale=1.0))
