"""The pack's nodes in ComfyUI's V3 schema (``comfy_api.latest.io``).

- **Pusa Task** compiles any registered task (a third-party plugin's too) into a `PUSA_PLAN` and draws it.
- **Pusa Conditioning** encodes the given images and clips with the stock `VAE` at the plan's latent frames.
- **Pusa Sampler** runs the plan on the stock Wan `MODEL` with pusa-fw's own sampling loop.
- **Pusa Prompt Schedule** adds prompts along a rolling or loop timeline.
- **Pusa Prompt Embedding** reads a text embedding saved by pusa-fw (its prompt cache format) from
  ComfyUI's ``models/pusa_embeddings`` folder as a `CONDITIONING`, for prompts encoded once outside ComfyUI.
- **Pusa Preset** gives a ``pusa-fw generate --preset`` recipe (e.g. ``lightx2v``) as values to wire into
  the Task's and the Sampler's widgets.

Every node is V3; nothing here needs the V1 style. Bodies are thin: the work is in `plan_spec`, `media`,
`sampling` and `prompts`, and every error leaves a node as one line (`errors.node_errors`).
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import ComfyExtension, io

from pusa_fw.api import list_components

from .errors import node_errors
from .plan_spec import DEFAULT_CHOICE, build_task, compile_plan, heatmap_image
from .prompts import PromptEntry

__all__ = ["NODES", "PusaConditioning", "PusaExtension", "PusaPreset", "PusaPromptEmbedding",
           "PusaPromptSchedule", "PusaSampler", "PusaTask"]

CATEGORY = "Pusa"
PusaPlan = io.Custom("PUSA_PLAN")
PusaPrompts = io.Custom("PUSA_PROMPTS")
ComboValue = io.Custom("COMBO")
"""A value for a combo widget: an output of type ``COMBO`` links into any combo input, in the front end (its
type check compares type names, and a combo input's is ``COMBO``) and in ComfyUI's /prompt validation (which
compares the output's RETURN_TYPE with the input's type; `io.Combo.Output`'s type is its option list, which
that check refuses against a V3 combo input's ``COMBO``). A linked value is not checked against the input's
options there, so the node that makes it checks it."""
MAX_SEED = 2**64 - 1


def _names(kind: str) -> list[str]:
    return sorted(list_components(kind))


class PusaTask(io.ComfyNode):
    """A registered task, its parameters, frames, steps and shift -> a plan and its heatmap."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        tasks = _names("tasks")
        return io.Schema(
            node_id="PusaTask",
            display_name="Pusa Task",
            category=CATEGORY,
            description="Compile a pusa-fw task (per-frame sigma schedule + held frames) into a plan.",
            inputs=[
                io.Combo.Input("task", options=tasks, default="i2v" if "i2v" in tasks else tasks[0],
                               tooltip="any task a pusa-fw plugin registered (`pusa-fw tasks` lists them)"),
                io.Int.Input("num_frames", default=81, min=1, max=4097, step=4,
                             tooltip="pixel frames of the whole video (4n + 1 for Wan2.1: 81 = 21 latents)"),
                io.Int.Input("num_steps", default=10, min=1, max=1000, tooltip="denoising steps"),
                io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.1, tooltip="sigma shift"),
                io.String.Input("strengths", default="", tooltip=(
                    "hold strengths, comma-separated (i2v: one value, Pusa's 0.8 = noise multiplier 0.2; "
                    "start-end: start, end; keyframes: one per keyframe); empty = the task's default")),
                io.String.Input("positions", default="", tooltip=(
                    "pixel-frame positions of keyframes, comma-separated (keyframes, rolling, loop)")),
                io.String.Input("params", default="{}", multiline=True, tooltip=(
                    'other task parameters as JSON, e.g. {"window": 81, "overlap": 17, "image": true}')),
                io.Combo.Input("schedule", options=[DEFAULT_CHOICE, *_names("schedules")], default=DEFAULT_CHOICE),
                io.String.Input("schedule_params", default="{}", tooltip='JSON, e.g. {"ar_step": 2}'),
                io.Combo.Input("policy", options=[DEFAULT_CHOICE, *_names("policies")], default=DEFAULT_CHOICE),
                io.String.Input("policy_params", default="{}", tooltip='JSON, e.g. {"level": 0.05}'),
            ],
            outputs=[PusaPlan.Output("plan"), io.Image.Output("heatmap")],
        )

    @classmethod
    def execute(cls, task: str, num_frames: int, num_steps: int, shift: float, strengths: str, positions: str,
                params: str, schedule: str, schedule_params: str, policy: str, policy_params: str) -> io.NodeOutput:
        with node_errors("Pusa Task"):
            built = build_task(task, strengths=strengths, positions=positions, params=params, schedule=schedule,
                               schedule_params=schedule_params, policy=policy, policy_params=policy_params)
            spec = compile_plan(built, num_frames, num_steps, shift)
            return io.NodeOutput(spec, heatmap_image(spec.plan))


class PusaConditioning(io.ComfyNode):
    """Given images and clips + the stock VAE -> the given latents at the plan's latent frames."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PusaConditioning",
            display_name="Pusa Conditioning",
            category=CATEGORY,
            description="Encode the task's given media with the VAE at the latent frames the plan holds.",
            inputs=[
                PusaPlan.Input("plan"),
                io.Vae.Input("vae"),
                io.Int.Input("width", default=832, min=16, max=8192, step=16,
                             tooltip="a multiple of 16 (Wan2.1 VAE) or of 32 (Wan2.2 VAE, TI2V-5B)"),
                io.Int.Input("height", default=480, min=16, max=8192, step=16,
                             tooltip="a multiple of 16 (Wan2.1 VAE) or of 32 (Wan2.2 VAE, TI2V-5B)"),
                io.Combo.Input("keyframe_encoding", options=["image", "video"], default="image", tooltip=(
                    "image: each keyframe encoded alone (Pusa); video: as a still chunk of 4 frames")),
                io.Image.Input("image", optional=True, tooltip="start image (i2v; rolling with image)"),
                io.Image.Input("keyframes", optional=True, tooltip="one image per keyframe, in order (start-end: 2)"),
                io.Image.Input("video", optional=True, tooltip="the clip to extend, transition from, or transform"),
                io.Image.Input("video_b", optional=True, tooltip="the clip a transition goes to"),
            ],
            outputs=[io.Latent.Output("given")],
        )

    @classmethod
    def execute(cls, plan: Any, vae: Any, width: int, height: int, keyframe_encoding: str, image: Any = None,
                keyframes: Any = None, video: Any = None, video_b: Any = None) -> io.NodeOutput:
        from .media import encode_given

        with node_errors("Pusa Conditioning"):
            given = encode_given(plan, vae, width=width, height=height, image=image, keyframes=keyframes,
                                 video=video, video_b=video_b, keyframe_encoding=keyframe_encoding)
            return io.NodeOutput(given)


class PusaSampler(io.ComfyNode):
    """The plan on the stock Wan MODEL, with pusa-fw's sampling loop -> LATENT."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        samplers = _names("samplers")
        return io.Schema(
            node_id="PusaSampler",
            display_name="Pusa Sampler",
            category=CATEGORY,
            description="Sample a pusa-fw plan (one sigma per latent frame) with a Wan T2V or TI2V-5B MODEL.",
            inputs=[
                io.Model.Input("model", tooltip=("a Wan2.1 T2V MODEL, fp8 or not, LoRAs (Pusa at 1.4) applied; "
                                                 "or Wan2.2 TI2V-5B (48 channels, with its Wan2.2 VAE)")),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                PusaPlan.Input("plan"),
                io.Latent.Input("given", tooltip="Pusa Conditioning output (or an empty video latent for t2v)"),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True),
                io.Combo.Input("sampler", options=samplers, default="unipc" if "unipc" in samplers else samplers[0]),
                io.Float.Input("cfg", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Float.Input("history_guidance", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="history guidance scale on held frames (1 = off)"),
                PusaPrompts.Input("prompt_schedule", optional=True, tooltip="later prompts (rolling, loop)"),
                io.Combo.Input("cache", options=_names("caches"), default="none", optional=True,
                               tooltip="step cache: none, teacache (global, any model), framecache (per frame; "
                                       "needs a model with partial computation)"),
                io.String.Input("cache_params", default="{}", optional=True,
                                tooltip='the cache\'s parameters as a JSON object, e.g. {"threshold": 0.2}'),
            ],
            outputs=[io.Latent.Output("latent")],
        )

    @classmethod
    def execute(cls, model: Any, positive: Any, negative: Any, plan: Any, given: Any, seed: int, sampler: str,
                cfg: float, history_guidance: float, prompt_schedule: Any = None, cache: str = "none",
                cache_params: str = "{}") -> io.NodeOutput:
        from .sampling import run_sampler

        with node_errors("Pusa Sampler"):
            latent = run_sampler(model, plan, given, positive, negative, seed=seed, sampler=sampler, cfg=cfg,
                                 history_guidance=history_guidance, prompt_schedule=prompt_schedule,
                                 cache=cache, cache_params=cache_params)
            return io.NodeOutput(latent)


class PusaPromptSchedule(io.ComfyNode):
    """A prompt from a pixel frame on, chained into a schedule for rolling and loop plans."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PusaPromptSchedule",
            display_name="Pusa Prompt Schedule",
            category=CATEGORY,
            description="Add a prompt that applies from a pixel frame on (windows whose middle frame it covers).",
            inputs=[
                io.Conditioning.Input("conditioning"),
                io.Int.Input("frame", default=81, min=1, max=1_000_000, tooltip="first pixel frame of this prompt"),
                PusaPrompts.Input("schedule", optional=True, tooltip="earlier entries to extend"),
            ],
            outputs=[PusaPrompts.Output("prompt_schedule")],
        )

    @classmethod
    def execute(cls, conditioning: Any, frame: int, schedule: Any = None) -> io.NodeOutput:
        entries = list(schedule or []) + [PromptEntry(frame=frame, conditioning=conditioning)]
        return io.NodeOutput(entries)


class PusaPromptEmbedding(io.ComfyNode):
    """A text embedding saved by pusa-fw (prompt cache format), from ComfyUI's models/pusa_embeddings."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from .embedding import EMBEDDING_FOLDER, embedding_names

        return io.Schema(
            node_id="PusaPromptEmbedding",
            display_name="Pusa Prompt Embedding",
            category=CATEGORY,
            description="Read a prompt embedding pusa-fw wrote (safetensors, tensor 'embedding' [tokens, dim]).",
            inputs=[
                io.Combo.Input("embedding", options=embedding_names(), tooltip=(
                    f"a pusa-fw prompt cache entry copied into ComfyUI's models/{EMBEDDING_FOLDER} folder")),
                io.Int.Input("pad_to", default=512, min=0, max=4096,
                             tooltip="zero-pad to this many tokens, as Wan's text encoder does (0 = no padding)"),
            ],
            outputs=[io.Conditioning.Output("conditioning")],
        )

    @classmethod
    def execute(cls, embedding: str, pad_to: int) -> io.NodeOutput:
        from .embedding import load_prompt_embedding

        with node_errors("Pusa Prompt Embedding"):
            return io.NodeOutput([[load_prompt_embedding(embedding, pad_to), {}]])


class PusaPreset(io.ComfyNode):
    """A named sampling recipe of ``pusa-fw generate --preset`` -> num_steps, shift, cfg and sampler.

    The values are the CLI's own (`pusa_fw_wan.cli.presets.PRESETS`). Every ComfyUI widget has a value, so
    "explicit values override the preset" is done by wiring: link an output into a widget to take the
    preset's value, leave the widget unlinked to set it yourself.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        from pusa_fw_wan.cli.presets import PRESETS

        names = sorted(PRESETS)
        return io.Schema(
            node_id="PusaPreset",
            display_name="Pusa Preset",
            category=CATEGORY,
            description=("A pusa-fw sampling preset (pusa-fw generate --preset): wire num_steps and shift into "
                         "Pusa Task, cfg and sampler into Pusa Sampler. Load the preset's LoRA with "
                         "LoraLoaderModelOnly."),
            inputs=[
                io.Combo.Input("preset", options=names, default="lightx2v" if "lightx2v" in names else names[0],
                               tooltip="; ".join(f"{name}: {PRESETS[name].summary}" for name in names)),
            ],
            outputs=[
                io.Int.Output("num_steps", display_name="num_steps", tooltip="into Pusa Task's num_steps"),
                io.Float.Output("shift", display_name="shift", tooltip="into Pusa Task's shift"),
                io.Float.Output("cfg", display_name="cfg", tooltip="into Pusa Sampler's cfg"),
                ComboValue.Output("sampler", display_name="sampler", tooltip="into Pusa Sampler's sampler"),
            ],
        )

    @classmethod
    def execute(cls, preset: str) -> io.NodeOutput:
        from .presets import PRESET_OUTPUTS, preset_values

        with node_errors("Pusa Preset"):
            values = preset_values(preset, samplers=_names("samplers"))
            return io.NodeOutput(*(values[name] for name in PRESET_OUTPUTS))


NODES: list[type[io.ComfyNode]] = [PusaTask, PusaConditioning, PusaSampler, PusaPromptSchedule, PusaPromptEmbedding,
                                   PusaPreset]


class PusaExtension(ComfyExtension):
    """The pack as a ComfyUI extension (what `comfy_entrypoint` returns)."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
