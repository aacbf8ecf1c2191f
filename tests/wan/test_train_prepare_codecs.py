"""`prepare_dataset` is written against small codec / text-encoder interfaces: the toy plugin's lossless
codec (stride 2, no lone first frame, no ``identity``) plugs in unchanged, and its geometry decides what is
valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pusa_fw.errors import FrameMapError
from pusa_fw.io.image import load_image, save_image
from pusa_fw.io.video import write_video
from pusa_fw_toy.codec import ToyCodec, ToyCodecConfig
from pusa_fw_toy.text import ToyTextEncoder
from pusa_fw_wan.train.cache import LatentCache
from pusa_fw_wan.train.prepare import PrepareConfig, prepare_dataset


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    frames = (np.arange(11 * 8 * 8 * 3) % 251).astype(np.uint8).reshape(11, 8, 8, 3)
    write_video(tmp_path / "clip.mp4", frames, fps=16)
    save_image(
        tmp_path / "still.png", torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    )
    (tmp_path / "metadata.csv").write_text(
        "file_name,text\nclip.mp4,a red fish swims\nstill.png,a cat sits\n"
    )
    return tmp_path


def test_a_toy_codec_with_another_geometry_plugs_in(folder: Path) -> None:
    codec = ToyCodec(ToyCodecConfig(temporal_stride=2, factor=2))  # frames must be a multiple of 2
    text = ToyTextEncoder.random(dim=8, max_length=8)
    config = PrepareConfig(
        data=folder,
        out=folder / "cache",
        height=8,
        width=8,
        aspect_buckets=False,
        num_frames=(4, 6),
        extraction="chunk",
        clips_per_video=3,
    )
    summary = prepare_dataset(config, codec, text)
    assert (
        summary.skipped == [] and summary.clips == 2
    )  # 11 frames -> one chunk of 6; the image: 2 equal frames

    cache = LatentCache(config.out, expect_codec="pusa_fw_toy.codec.ToyCodec")
    assert [cache.bucket(index) for index in range(2)] == [(24, 3, 4, 4, 8, 8), (24, 1, 4, 4, 8, 8)]
    still = cache.load(1)
    image = load_image(folder / "still.png")  # lossless PNG at the bucket size: the latents are its pixels
    expected = codec.encode(image[None, :, None].expand(-1, -1, 2, -1, -1))[0]
    assert torch.equal(still.latents, expected) and still.context.shape == (8, 8)

    with pytest.raises(FrameMapError, match="num_frames=5"):
        prepare_dataset(config.model_copy(update={"num_frames": (5,)}), codec, text)
