"""Batched generation of toy-world videos with any registered task, through the same parts as
``pusa-fw generate``: the task's plan and holds, the core's `encode_sources` for the held media, the core
`pusa_fw.sampling.sample` loop with guidance, the codec's decode.

Each item's noise is drawn from its own seed (as `WanPipeline.generate` draws it for batch 1), so an
item's starting noise does not depend on which batch it ran in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pusa_fw.conditioning_media import ConditioningMedia, encode_sources
from pusa_fw.guidance import Guidance
from pusa_fw.sampling import sample
from pusa_fw.seeding import draw_noise, make_generator
from pusa_fw.task import Task

from pusa_fw_toy.world import WorldClip, WorldConfig

__all__ = ["TASK_SETUPS", "TaskSetup", "generate_batch", "given_frames", "media_for"]


@dataclass(frozen=True)
class TaskSetup:
    """How eval-toy poses one task in the toy world.

    Attributes:
        task: registered task name.
        held: whether the task holds frames (t2v does not; its conditioning policy is irrelevant).
    """

    task: str
    held: bool


TASK_SETUPS: dict[str, TaskSetup] = {
    "i2v": TaskSetup("i2v", True),
    "start-end": TaskSetup("start-end", True),
    "extension": TaskSetup("extension", True),
    "t2v": TaskSetup("t2v", False),
}


def extension_frames(world: WorldConfig, geometry: Any) -> int:
    """Pixel frames the extension task is given: about a third of the clip, a whole number of latents."""
    latents = geometry.num_latent_frames(world.num_frames)
    return int(geometry.num_frames(max(1, latents // 3)))


def task_params(name: str, policy: str, strength: float, world: WorldConfig, geometry: Any) -> dict[str, Any]:
    """Parameters of task `name` holding its frames with `policy` at `strength`."""
    if name == "t2v":
        return {}
    if name == "i2v":
        return {"policy": policy, "strength": strength}
    if name == "start-end":
        return {"policy": policy, "strengths": [strength, strength]}
    if name == "extension":
        return {"policy": policy, "strengths": [strength], "given_frames": extension_frames(world, geometry)}
    raise ValueError(f"no toy setup for task {name!r}; choose from {sorted(TASK_SETUPS)}")


def given_frames(name: str, world: WorldConfig, geometry: Any) -> list[int]:
    """Pixel frames of the clip the task is given."""
    last = world.num_frames - 1
    return {"t2v": [], "i2v": [0], "start-end": [0, last],
            "extension": list(range(extension_frames(world, geometry)))}[name]


def media_for(name: str, clip: WorldClip, world: WorldConfig, geometry: Any) -> ConditioningMedia:
    """The `ConditioningMedia` of task `name` taken from the ground-truth clip."""
    video = clip.video
    if name == "i2v":
        return ConditioningMedia(image=video[:, 0])
    if name == "start-end":
        return ConditioningMedia(keyframes=[video[:, 0], video[:, -1]])
    if name == "extension":
        return ConditioningMedia(video=video[:, : extension_frames(world, geometry)])
    return ConditioningMedia()


def generate_batch(dit: Any, codec: Any, text_encoder: Any, task: Task, name: str, clips: Sequence[WorldClip],
                   world: WorldConfig, *, seeds: Sequence[int], steps: int = 20, shift: float = 2.0,
                   cfg: float = 1.0, sampler: str = "euler", num_frames: int | None = None,
                   history_scale: float = 1.0, media: Sequence[ConditioningMedia] | None = None) -> torch.Tensor:
    """Generate one video per clip with `task` (conditioned on each clip's given frames and caption).

    Args:
        dit: the toy DiT (a `pusa_fw.backbone.Backbone` module).
        codec: the `ToyCodec`.
        text_encoder: the `ToyTextEncoder`.
        task: the task instance.
        name: its `TASK_SETUPS` key (which media it takes from the clips).
        clips: ground-truth clips (captions and given frames).
        world: the world.
        seeds: one noise seed per clip.
        steps: sampling steps.
        shift: sigma shift of the schedule.
        cfg: text guidance scale against the empty caption (1 = off).
        sampler: registered sampler.
        num_frames: video length T (default: the world's clip length).
        history_scale: history guidance scale (1 = off).
        media: one `ConditioningMedia` per clip (default: `media_for` the task `name`).

    Returns:
        `[B, 3, T, H, W]` videos in [-1, 1] on the CPU.
    """
    geometry = codec.geometry
    num_frames = world.num_frames if num_frames is None else num_frames
    if media is None:
        media = [media_for(name, clip, world, geometry) for clip in clips]
    latents_shape = geometry.latent_shape(num_frames, world.size, world.size)
    plan = task.plan(num_frames, steps, shift, geometry)
    holds = task.holds(num_frames, steps, geometry)
    device = next(dit.parameters()).device
    with torch.no_grad():
        sources = [encode_sources(codec, holds, given, latents_shape[1], geometry=geometry) for given in media]
        source = None if sources[0] is None else torch.cat(sources).to(device)
        context = text_encoder.encode([clip.caption for clip in clips]).to(device)
        negative = text_encoder.encode([""] * len(clips)).to(device) if cfg != 1.0 else None
        noise = torch.cat([draw_noise((1, *latents_shape), make_generator(seed), device=device) for seed in seeds])
        latents = sample(dit, plan, noise, sampler=sampler, source=source, context=context,
                         negative_context=negative, guidance=Guidance(cfg_scale=cfg, history_scale=history_scale),
                         generator=make_generator(seeds[0]))
        return codec.decode(latents).cpu()
