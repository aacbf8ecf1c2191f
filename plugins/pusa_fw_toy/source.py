"""`WorldSource`: a `TrainingSource` that renders toy-world clips on the fly and encodes them.

Sample ``index`` is the world clip of seed ``seed_offset + index``, folded into latents by the toy codec
and captioned through the toy text encoder of the same model directory, so the training data and the
model can never disagree on geometry or vocabulary. Nothing is stored on disk. With ``caption_dropout``
a fixed share of the samples (chosen by a hash of the seed, so a sample is always the same) gets the
empty caption, which the model then learns as the unconditional branch for classifier-free guidance.
With ``direction_caption_share`` another hashed share of the captions also names the direction
(``"a red square moving left"``), so the model can learn what a heading is from words while prompts that
do not name one stay the task it is evaluated on.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from pusa_fw.errors import InputError

from pusa_fw_toy.codec import ToyCodec
from pusa_fw_toy.model_dir import read_spec
from pusa_fw_toy.text import ToyTextEncoder
from pusa_fw_toy.world import HELD_OUT_SEED_BASE, WorldConfig, render_clip

__all__ = ["WorldSource", "open_world"]


def _hashed(seed: int, rate: float, salt: str = "caption-dropout") -> bool:
    """Whether `seed` falls in the share `rate` (a stable hash, independent of torch's RNG)."""
    if rate <= 0:
        return False
    digest = hashlib.blake2b(f"{salt}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


class WorldSource:
    """Toy-world clips as training samples (see the module docstring).

    Args:
        world: the world.
        codec: the codec that makes the latents.
        text_encoder: the frozen text encoder that embeds the captions.
        length: samples per epoch (distinct seeds ``seed_offset .. seed_offset + length - 1``).
        seed_offset: first seed; training seeds stay below `HELD_OUT_SEED_BASE`.
        caption_dropout: share of samples with an empty caption.
        direction_caption_share: share of the (not dropped) captions that also name the direction.
    """

    def __init__(self, world: WorldConfig, codec: ToyCodec, text_encoder: ToyTextEncoder, *,
                 length: int = 100_000, seed_offset: int = 0, caption_dropout: float = 0.0,
                 direction_caption_share: float = 0.0) -> None:
        if length < 1 or seed_offset < 0 or seed_offset + length > HELD_OUT_SEED_BASE:
            raise InputError(
                f"length={length} and seed_offset={seed_offset} must give seeds in [0, {HELD_OUT_SEED_BASE}) "
                "(seeds from there on are held out for evaluation)"
            )
        if not 0 <= caption_dropout < 1:
            raise InputError(f"caption_dropout={caption_dropout} must be in [0, 1)")
        if not 0 <= direction_caption_share <= 1:
            raise InputError(f"direction_caption_share={direction_caption_share} must be in [0, 1]")
        if direction_caption_share > 0 and world.caption_direction:
            raise InputError(
                f"direction_caption_share={direction_caption_share} has no effect: the world's captions all name "
                "the direction (caption_direction=true); set one of them only"
            )
        codec.geometry.num_latent_frames(world.num_frames)
        codec.geometry.check_spatial_size(world.size, world.size)
        self.world = world
        self.codec = codec
        self.text_encoder = text_encoder
        self.length = length
        self.seed_offset = seed_offset
        self.caption_dropout = caption_dropout
        self.direction_caption_share = direction_caption_share
        shape = tuple(codec.geometry.latent_shape(world.num_frames, world.size, world.size))
        self._bucket = shape + (text_encoder.max_length, text_encoder.d_model)
        self._contexts: dict[str, torch.Tensor] = {}

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike[str], **options: object) -> WorldSource:
        """The source for the world, codec and text encoder recorded in a toy model directory."""
        root = Path(model_dir).expanduser()
        spec = read_spec(root)
        encoder = ToyTextEncoder.load(root / spec.text_encoder)
        return cls(spec.world, ToyCodec(spec.codec), encoder, **options)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.length

    def bucket(self, index: int) -> tuple:
        """Every sample has the same shapes: ``(C, F, h, w, L, D)`` (one shared tuple)."""
        return self._bucket

    def _context(self, caption: str) -> torch.Tensor:
        if caption not in self._contexts:
            self._contexts[caption] = self.text_encoder.encode([caption])[0].cpu()
        return self._contexts[caption]

    def load(self, index: int):  # -> TrainingSample (imported lazily with the trainer package)
        """Render, encode and caption sample `index`."""
        from pusa_fw.training_data import TrainingSample

        if not 0 <= index < self.length:
            raise InputError(f"index {index} is outside [0, {self.length})")
        seed = self.seed_offset + int(index)
        clip = render_clip(self.world, seed)
        caption = clip.caption
        if _hashed(seed, self.direction_caption_share, salt="direction-caption"):
            caption = f"{caption} moving {clip.direction}"
        if _hashed(seed, self.caption_dropout):
            caption = ""
        latents = self.codec.encode(clip.video.unsqueeze(0))[0].cpu()
        meta = {"seed": seed, "colour": clip.colour, "direction": clip.direction,
                "start": [float(value) for value in clip.centres[0]]}
        return TrainingSample(latents=latents, context=self._context(caption).clone(), caption=caption, meta=meta)


def open_world(model_dir: str, length: int = 100_000, seed_offset: int = 0,
               caption_dropout: float = 0.0, direction_caption_share: float = 0.0) -> WorldSource:
    """Training-source factory (``data.source = "pusa_fw_toy.source:open_world"``, options as keywords).

    Args:
        model_dir: the toy model directory whose world, codec and text encoder make the samples.
        length: samples per epoch.
        seed_offset: first world seed.
        caption_dropout: share of samples with an empty caption.
        direction_caption_share: share of the captions that also name the direction.
    """
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"data.options.model_dir {str(root)!r} is not a directory; pass the toy model directory")
    return WorldSource.from_model_dir(root, length=length, seed_offset=seed_offset, caption_dropout=caption_dropout,
                                      direction_caption_share=direction_caption_share)
