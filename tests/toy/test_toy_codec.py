"""The toy codec is lossless in both frame layouts and declares the geometry it implements; the toy
text encoder behaves like Wan's (EOS, zero rows past it, a batch does not change an embedding)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pusa_fw.errors import CheckpointError, FrameMapError, InputError
from pusa_fw_toy.codec import ToyCodec, ToyCodecConfig
from pusa_fw_toy.text import ToyTextEncoder
from pusa_fw_toy.world import WorldConfig, render_clip

LAYOUTS = st.sampled_from([
    ToyCodecConfig(), ToyCodecConfig(temporal_stride=4, first_frame_alone=True), ToyCodecConfig(factor=4),
    ToyCodecConfig(temporal_stride=2), ToyCodecConfig(temporal_stride=3, first_frame_alone=True),
])


@given(layout=LAYOUTS, latents=st.integers(1, 4), cells=st.integers(1, 3), batch=st.integers(1, 2),
       seed=st.integers(0, 2**31))
def test_codec_is_lossless(layout: ToyCodecConfig, latents: int, cells: int, batch: int, seed: int) -> None:
    codec = ToyCodec(layout)
    frames = codec.geometry.num_frames(latents)
    side = cells * layout.factor
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch, 3, frames, side, side), generator=generator)
    video = pixels.float() / 127.5 - 1.0
    encoded = codec.encode(video)
    assert encoded.shape == (batch, layout.channels, latents, cells, cells)
    decoded = codec.decode(encoded)
    assert torch.equal(decoded, video)
    assert torch.equal(((decoded + 1) * 127.5).round().to(torch.int64), pixels)


def test_world_clips_round_trip_and_geometry_matches() -> None:
    codec = ToyCodec()
    world = WorldConfig()
    clip = render_clip(world, 11)
    latents = codec.encode(clip.video.unsqueeze(0))
    assert tuple(latents.shape[1:]) == codec.geometry.latent_shape(world.num_frames, world.size, world.size)
    assert (codec.geometry.channels, codec.geometry.temporal_stride, codec.geometry.spatial_factor) == (12, 1, 2)
    assert torch.equal(codec.decode(latents)[0], clip.video)


def test_wan_layout_puts_frame_zero_alone() -> None:
    codec = ToyCodec(ToyCodecConfig(temporal_stride=4, first_frame_alone=True))
    video = torch.rand(1, 3, 9, 4, 4) * 2 - 1
    latents = codec.encode(video)
    assert latents.shape == (1, 48, 3, 2, 2)
    assert torch.equal(latents[:, :, :1], codec.encode(video[:, :, :1]))
    assert torch.equal(codec.encode_image(video[:, :, 0]), latents[:, :, :1])
    assert codec.geometry.pixel_span(2) == range(5, 9)


def test_codec_rejects_bad_shapes() -> None:
    codec = ToyCodec(ToyCodecConfig(temporal_stride=4, first_frame_alone=True))
    with pytest.raises(FrameMapError, match="num_frames=8"):
        codec.encode(torch.zeros(1, 3, 8, 4, 4))
    with pytest.raises(InputError, match="2x2 cells"):
        codec.encode(torch.zeros(1, 3, 5, 5, 4))
    with pytest.raises(InputError, match="48"):
        codec.decode(torch.zeros(1, 12, 2, 2, 2))


def test_text_encoder_rows_past_eos_are_zero_and_batching_is_neutral() -> None:
    encoder = ToyTextEncoder.random(dim=16, max_length=6, seed=1)
    ids, mask = encoder.tokenize(["A red square!", "a purple square moving left quickly now"])
    vocab = encoder.vocab
    assert ids[0].tolist() == [vocab["a"], vocab["red"], vocab["square"], vocab["</s>"], 0, 0]
    assert ids[1].tolist()[:2] == [vocab["a"], vocab["<unk>"]] and ids[1, -1] == vocab["</s>"]
    assert mask.sum(dim=1).tolist() == [4, 6]
    both = encoder.encode(["a red square", "a blue square"])
    assert both.shape == (2, 6, 16)
    assert bool((both[:, 4:] == 0).all()) and bool((both[:, :4] != 0).any(dim=-1).all())
    assert torch.equal(encoder.encode(["a blue square"])[0], both[1])
    assert not torch.equal(both[0], both[1])


def test_text_encoder_save_load_round_trip(tmp_path: Path) -> None:
    encoder = ToyTextEncoder.random(dim=8, max_length=5, seed=2)
    loaded = ToyTextEncoder.load(encoder.save(tmp_path / "text.safetensors"))
    assert loaded.words == encoder.words
    assert torch.equal(loaded.encode(["a green square"]), encoder.encode(["a green square"]))
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(CheckpointError, match="not a toy text encoder"):
        ToyTextEncoder.load(tmp_path / "bad.safetensors")
