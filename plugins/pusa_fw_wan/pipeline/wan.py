"""`WanPipeline`: text encoder + VAE + Wan DiT + a task + a sampler, from prompt and media to a video.

One call of `WanPipeline.generate`:

1. compiles the task into its `Plan` (one window, or sliding windows over a long timeline);
2. encodes the prompt(s) and, when guidance is on, the negative prompt (Wan's default when none given);
3. VAE-encodes the held images and clips into source latents (`conditioning_media`);
4. draws the noise from a CPU generator seeded with `seed` and runs `pusa_fw.sampling.sample` over the
   plan. Rolling and loop plans keep the whole timeline as latents, so history passes from window to
   window without a VAE decode/encode round trip;
5. decodes the final latents once.

Each model is used through a placement (`offload`): resident on the device, on the device only while
in use (``"model"``), or streamed block by block (``"block"``, the DiT; the other two models then get
model offload). Progress goes to a tqdm bar only when the caller asks for it; nothing is printed.

The settings `generate` is not given are the model's own (`pusa_fw_wan.pipeline.model_defaults`): Wan2.1
T2V 832x480, 81 frames, 10 Euler steps, cfg 3; Wan2.2 TI2V-5B 1280x704, 121 frames, 50 UniPC steps, cfg 5.
Sizes, frame counts and latent shapes all come from the VAE's `LatentGeometry` (TI2V-5B: /16 and 48
channels, so heights and widths are multiples of 32).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pusa_fw.context import PromptTimeline
from pusa_fw.errors import InputError
from pusa_fw.geometry import LatentGeometry
from pusa_fw.guidance import Guidance
from pusa_fw.plan import Plan
from pusa_fw.sampling import StepInfo, sample
from pusa_fw.seeding import draw_noise, make_generator
from pusa_fw.task import Task

from pusa_fw_wan.pipeline.media import ConditioningMedia, KeyframeEncoding, encode_sources
from pusa_fw_wan.pipeline.model_defaults import ModelDefaults, defaults_for_dit
from pusa_fw_wan.text.prompts import WAN_DEFAULT_NEGATIVE_PROMPT
from pusa_fw_wan.pipeline.offload import Placement, make_placement

__all__ = ["DEFAULT_GUIDANCE", "GenerationResult", "WanPipeline", "clean_held_frames"]

DEFAULT_GUIDANCE = Guidance(cfg_scale=3.0)
"""Text guidance 3 (the Pusa/Wan CLI range), no history guidance."""


@dataclass
class GenerationResult:
    """What `WanPipeline.generate` returns (all tensors on the CPU).

    Attributes:
        video: `[3, T, H, W]` float32 in [-1, 1], T = `num_frames` (Wan: 4(N - 1) + 1); None when not
            decoded.
        latents: `[1, C, N, h, w]` the final latents (every frame at sigma 0; Wan2.1: C = 16, h = H/8;
            Wan2.2 TI2V-5B: C = 48, h = H/16).
        source_latents: `[1, C, N, h, w]` the encoded held inputs (zeros elsewhere), or None.
        plan: the plan that was run.
        clean_frames: latent frames held clean (sigma 0 at every step): there `latents == source_latents`
            bit for bit.
        timings: seconds per phase: ``text``, ``encode`` (conditioning media), ``denoise``, ``decode``.
        seed: the noise seed.
    """

    video: torch.Tensor | None
    latents: torch.Tensor
    source_latents: torch.Tensor | None
    plan: Plan
    clean_frames: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    seed: int = 0


def clean_held_frames(plan: Plan) -> list[int]:
    """Latent frames that are held and at sigma 0 in every state and model input of the plan."""
    clean = plan.held & (plan.sigmas == 0).all(dim=0) & (plan.input_sigmas == 0).all(dim=0)
    return clean.nonzero().squeeze(1).tolist()


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start


class WanPipeline:
    """Composes a `WanDiT`, a `WanVAE` and a `WanTextEncoder` with any registered task and sampler.

    Args:
        dit: the DiT backbone (LoRAs already applied).
        vae: the VAE (or another codec with ``encode``, ``encode_image``, ``decode`` and ``.geometry``);
            its `LatentGeometry` gives the frame map, the size checks and the latent shape.
        text_encoder: the umT5 text encoder (a `WanTextEncoder`).
        device: the compute device.
        offload: ``"none"``, ``"model"`` or ``"block"`` (see the module docstring).

    Raises:
        InputError: the VAE's latent channels are not the DiT's ``in_dim`` (e.g. the Wan2.1 VAE with TI2V-5B).
    """

    def __init__(self, dit: nn.Module, vae: nn.Module, text_encoder: Any, *,
                 device: torch.device | str = "cpu", offload: str = "none") -> None:
        self.device = torch.device(device)
        self.offload = offload
        self.dit = dit
        self.vae = vae
        self.geometry: LatentGeometry = vae.geometry
        in_dim = getattr(getattr(dit, "config", None), "in_dim", None)
        if in_dim is not None and in_dim != self.geometry.channels:
            raise InputError(
                f"the VAE makes {self.geometry.channels}-channel latents but the DiT takes in_dim={in_dim}; "
                "pair each DiT with its own VAE (Wan2.1 T2V: Wan2.1_VAE, Wan2.2 TI2V-5B: Wan2.2_VAE)"
            )
        self.defaults: ModelDefaults = defaults_for_dit(dit)
        """The DiT's generation defaults (`generate` uses them for every setting it is not given)."""
        self.text_encoder = text_encoder
        self.dit_placement: Placement = make_placement(dit, self.device, offload, blocks=True)
        self.vae_placement: Placement = make_placement(vae, self.device, offload)
        self.text_placement: Placement = make_placement(text_encoder.model, self.device, offload)

    # ------------------------------------------------------------------ pieces

    def encode_prompts(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Embed prompts with the text encoder: one `[1, 512, text_dim]` context per prompt.

        Each prompt is encoded on its own, so its embedding does not depend on which other prompts (a
        negative prompt, other ranges) share the run: batching changes the float rounding.
        """
        with self.text_placement.active(), torch.no_grad():
            return [self.text_encoder.encode([prompt]).to(self.device) for prompt in prompts]

    def _prompt_contexts(self, prompt: str | None, prompts_at: Sequence[tuple[int, str]], plan: Plan,
                         num_frames: int) -> tuple[list[int], list[str]]:
        """Latent start frames and texts of the prompt ranges (the plain prompt starts at frame 0)."""
        entries = [(0, prompt)] if prompt is not None else []
        entries += [(frame, text) for frame, text in prompts_at]
        if not entries:
            raise InputError("no prompt given: pass --prompt TEXT (or --prompt-at 0:TEXT for the first one)")
        if prompts_at and len({tuple(window) for window in plan.windows.tolist()}) == 1:
            raise InputError(
                "--prompt-at needs a task with sliding windows (rolling, loop): this plan has one window, so "
                "only one prompt could ever apply; use --prompt"
            )
        starts: dict[int, str] = {}
        for frame, _text in sorted(entries, key=lambda entry: entry[0]):
            start = self.geometry.latent_index(frame, num_frames)
            if start in starts:
                raise InputError(
                    f"prompts at pixel frames {starts[start]} and {frame} start in the same latent frame "
                    f"{start}; give each prompt range its own latent frame, and only one prompt from frame 0"
                )
            starts[start] = str(frame)
        if 0 not in starts:
            raise InputError("the first prompt must start at frame 0: pass --prompt or --prompt-at 0:TEXT")
        ordered = sorted(entries, key=lambda entry: entry[0])
        return [self.geometry.latent_index(frame, num_frames) for frame, _ in ordered], [text for _, text in ordered]

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        task: Task,
        *,
        prompt: str | None,
        negative_prompt: str | None = None,
        prompts_at: Sequence[tuple[int, str]] = (),
        media: ConditioningMedia | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        shift: float | None = None,
        guidance: Guidance | None = None,
        sampler: str | None = None,
        seed: int = 0,
        keyframe_encoding: KeyframeEncoding = "image",
        progress: bool = False,
        callback: Callable[[StepInfo], None] | None = None,
        decode: bool = True,
    ) -> GenerationResult:
        """Generate one video.

        Args:
            task: a task instance (e.g. ``lookup("tasks", "i2v")(strength=0.8)``).
            prompt: the prompt (from pixel frame 0).
            negative_prompt: used when ``guidance.cfg_scale != 1``; None means Wan2.1's default negative prompt.
            prompts_at: ``(pixel frame, text)`` prompt ranges for sliding-window tasks.
            media: the images and clips the task holds, at `height` x `width` (see `ConditioningMedia`).
            num_frames: pixel frames, a count the VAE's geometry accepts (Wan: 4n + 1); None: the model's
                default (`defaults`; Wan2.1 81, TI2V-5B 121), as for every setting below.
            height: pixels, a multiple of the geometry's `spatial_multiple` (Wan2.1: 16, TI2V-5B: 32).
            width: pixels, likewise.
            num_steps: denoising steps.
            shift: sigma shift of the schedule.
            guidance: the `Guidance` scales (a scale of 1 skips that branch's forward pass); None: the
                model's cfg, no history guidance.
            sampler: registered sampler name (``"euler"``, ``"unipc"``).
            seed: seed of the CPU generator for the noise (and any fresh noise the plan needs).
            keyframe_encoding: ``"image"`` or ``"video"`` (see `conditioning_media`).
            progress: show a tqdm bar over the steps (on stderr).
            callback: called after every step with a `StepInfo`.
            decode: VAE-decode the latents; False leaves ``video`` None (the ranks of a parallel run
                other than 0).

        Returns:
            A `GenerationResult`.

        Raises:
            InputError, FrameMapError, PlanError: bad sizes, frame counts, prompts or media.
        """
        defaults = self.defaults
        num_frames = defaults.num_frames if num_frames is None else num_frames
        height = defaults.height if height is None else height
        width = defaults.width if width is None else width
        num_steps = defaults.num_steps if num_steps is None else num_steps
        shift = defaults.shift if shift is None else shift
        guidance = Guidance(cfg_scale=defaults.cfg) if guidance is None else guidance
        sampler = defaults.sampler if sampler is None else sampler
        channels, latents_count, latent_height, latent_width = self.geometry.latent_shape(num_frames, height, width)
        plan = task.plan(num_frames=num_frames, num_steps=num_steps, shift=shift, geometry=self.geometry)
        holds = task.holds(num_frames, num_steps, self.geometry)
        starts, texts = self._prompt_contexts(prompt, prompts_at, plan, num_frames)
        timings: dict[str, float] = {}
        use_cfg = guidance.cfg_scale != 1.0
        with _timed(timings, "text"):
            negative = WAN_DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
            contexts = self.encode_prompts(texts + ([negative] if use_cfg else []))
        negative_context = contexts.pop() if use_cfg else None
        context: Any = contexts[0] if len(contexts) == 1 else PromptTimeline(starts=starts, contexts=contexts)
        with _timed(timings, "encode"), self.vae_placement.active(), torch.no_grad():
            source = encode_sources(self.vae, holds, media or ConditioningMedia(), latents_count,
                                    keyframe_encoding=keyframe_encoding, geometry=self.geometry)
        shape = (1, channels, latents_count, latent_height, latent_width)
        if source is not None and tuple(source.shape) != shape:
            raise InputError(
                f"encoded inputs have shape {tuple(source.shape)}, expected {shape}; resize the media"
            )
        generator = make_generator(seed)
        noise = draw_noise(shape, generator, device=self.device)
        with _timed(timings, "denoise"), self.dit_placement.active(), torch.no_grad():
            latents = self._sample(plan, noise, source, context, negative_context, guidance, sampler, generator,
                                   progress, callback)
        video = None
        if decode:
            with _timed(timings, "decode"), self.vae_placement.active(), torch.no_grad():
                video = self.vae.decode(latents)[0].cpu()
        return GenerationResult(
            video=video,
            latents=latents.cpu(),
            source_latents=None if source is None else source.cpu(),
            plan=plan,
            clean_frames=clean_held_frames(plan),
            timings=timings,
            seed=seed,
        )

    def _sample(self, plan: Plan, noise: torch.Tensor, source: torch.Tensor | None, context: Any,
                negative_context: torch.Tensor | None, guidance: Guidance, sampler: str,
                generator: torch.Generator,
                progress: bool, callback: Callable[[StepInfo], None] | None) -> torch.Tensor:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.num_steps, desc="denoise", unit="step", disable=not progress, leave=False)
        with bar:

            def on_step(info: StepInfo) -> None:
                bar.update(1)
                if callback is not None:
                    callback(info)

            return sample(
                self.dit, plan, noise, sampler=sampler, source=source, context=context,
                negative_context=negative_context, guidance=guidance, generator=generator,
                callback=on_step,
            )
