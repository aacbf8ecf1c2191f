"""Short validation renders during training: one video per task plan, from the current (or EMA) weights.

At the configured steps the main rank samples each task in ``validation.render_tasks`` with
`pusa_fw.sample` over the task's plan (the model's own forward, no copy), a fixed seed, and the prompt
context of a fixed held-out sample; frames a task holds (i2v, start-end, ...) come from that sample's
latents. The codec of ``model.path`` (from the backbone's training adapter) decodes the latents, and `pusa_fw.io` writes
``<run>/renders/step-XXXXXXX/<task>.mp4`` and ``<task>.png`` (a contact sheet), both atomically, plus a
``renders.json`` saying which weights rendered (``"ema"`` or ``"current"``).

Renders compute like the training step: under ``torch.autocast`` with the trainer's dtype (bf16 for
``precision = "bf16"``) on the latents' device type, the codec's decode included; the model's master weights
are fp32, so without it every GEMM and attention would run in fp32.

Rendering leaves training untouched: the model goes back to train mode, EMA weights swapped in are copied
back bit-exactly, and the global torch RNG states are restored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw.geometry import LatentGeometry
from pusa_fw.io.atomic import atomic_write_bytes

from .validation import task_params

__all__ = ["RenderSetup", "build_render_tasks", "render_tasks", "swapped_weights"]


@dataclass
class RenderSetup:
    """What renders need, checked once when the run starts.

    Attributes:
        codec: a codec with ``decode([B, C, F, H, W]) -> [B, 3, T, H', W']`` and ``.geometry``.
        tasks: ``(name, task)`` pairs, built with `pusa_fw.get_task`.
        prompts: ``(prompt, context [1, L, D])`` of the sample prompts, encoded once by the backbone's real
            text encoder; empty: render the held-out sample's own caption context.
        negative_context: `[1, L, D]` the negative prompt's context (classifier-free guidance), or None.
        guidance: the guidance scales of every render.
    """

    codec: Any
    tasks: list[tuple[str, Any]]
    prompts: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    negative_context: torch.Tensor | None = None
    guidance: Any = None


def build_render_tasks(
    names: Sequence[str], num_latent_frames: int, geometry: LatentGeometry
) -> list[tuple[str, Any]]:
    """`get_task` for every name, with the clip-dependent parameters validation uses.

    Raises:
        InputError: an unknown task name, or bad task parameters.
    """
    from pusa_fw.api import get_task

    tasks = []
    for name in names:
        try:
            tasks.append((name, get_task(name, **task_params(name, num_latent_frames, geometry))))
        except (KeyError, ValueError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise InputError(f"validation.render_tasks: task {name!r} cannot be used: {message}") from None
    return tasks


@contextmanager
def swapped_weights(
    tensors: dict[str, nn.Parameter], values: dict[str, torch.Tensor] | None
) -> Iterator[None]:
    """Copy `values` (e.g. the EMA shadow) into `tensors` for the block, then restore them bit-exactly."""
    if values is None:
        yield
        return
    saved = {name: tensor.detach().clone() for name, tensor in tensors.items()}
    try:
        with torch.no_grad():
            for name, tensor in tensors.items():
                tensor.copy_(values[name])
        yield
    finally:
        with torch.no_grad():
            for name, tensor in tensors.items():
                tensor.copy_(saved[name])


@contextmanager
def _kept_rng(device: torch.device) -> Iterator[None]:
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def render_tasks(
    model: nn.Module,
    setup: RenderSetup,
    *,
    latents: torch.Tensor,
    context: torch.Tensor,
    directory: Path,
    num_steps: int,
    seed: int,
    weights: str,
    step: int,
    autocast_dtype: torch.dtype | None = None,
) -> list[Path]:
    """Sample, decode and write one short video (mp4 + contact-sheet png) per task.

    Args:
        model: the DiT (a `Backbone`); put in eval mode here and back in train mode after.
        setup: codec and tasks (`RenderSetup`).
        latents: `[1, C, F, H, W]` the fixed sample's clean latents (source of held frames, and the shape).
        context: `[1, L, D]` its text embedding.
        directory: ``<run>/renders/step-XXXXXXX``.
        num_steps: sampler steps.
        seed: noise seed (the same for every task and step).
        weights: ``"ema"`` or ``"current"`` (recorded in ``renders.json``).
        step: the optimizer step (recorded).
        autocast_dtype: the training step's autocast dtype (None: no autocast, fp32).

    Returns:
        The written files.
    """
    from pusa_fw.io.image import save_contact_sheet
    from pusa_fw.io.video import save_video
    from pusa_fw.sampling import sample
    from pusa_fw.seeding import draw_noise

    codec = setup.codec
    geometry: LatentGeometry = codec.geometry
    num_frames = geometry.num_frames(int(latents.shape[2]))
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    was_training = model.training
    model.eval()
    prompts = [(f"-p{position}", prompt_context) for position, (_, prompt_context) in enumerate(setup.prompts)]
    negative = None if setup.negative_context is None else setup.negative_context.to(latents.device)
    autocast = torch.autocast(latents.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    try:
        with torch.no_grad(), _kept_rng(latents.device), autocast:
            for name, task in setup.tasks:
                plan = task.plan(num_frames=num_frames, num_steps=num_steps, geometry=geometry)
                for suffix, condition in prompts or [("", context)]:
                    noise = draw_noise(latents.shape, seed, device=latents.device)
                    result = sample(
                        model,
                        plan,
                        noise,
                        source=latents,
                        context=condition.to(latents.device),
                        negative_context=negative,
                        guidance=setup.guidance,
                        generator=torch.Generator().manual_seed(seed),
                    )
                    video = codec.to(result.device).decode(result.float())[0].float().cpu().clamp(-1, 1)
                    written.append(save_video(directory / f"{name}{suffix}.mp4", video))
                    written.append(save_contact_sheet(directory / f"{name}{suffix}.png", video))
    finally:
        model.train(was_training)
    record = {
        "step": step,
        "weights": weights,
        "tasks": [name for name, _ in setup.tasks],
        "num_steps": num_steps,
        "seed": seed,
        "num_frames": num_frames,
        "prompts": [prompt for prompt, _ in setup.prompts],
        "cfg_scale": 1.0 if setup.guidance is None else setup.guidance.cfg_scale,
    }
    written.append(atomic_write_bytes(directory / "renders.json", json.dumps(record, indent=2).encode()))
    return written
