"""`pusa-fw prepare` on a folder with good videos, a corrupt file, a too-short clip, an image and a caption
that is not UTF-8: the good items are cached, the bad ones named in the summary, a re-run does nothing new,
and a changed source is re-encoded. The cache is then read back as a `TrainingSource`.

Sizes are tiny (32x32-area buckets, 5-frame clips): the tiny VAE still costs ~0.5 s per clip on a busy CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pusa_fw.cli import main as cli_main
from pusa_fw.io.image import read_image, resize_image, save_image
from pusa_fw.io.pixels import uint8_to_image
from pusa_fw.io.video import write_video
from pusa_fw.training_data import TrainingSource
from pusa_fw_wan.train.cache import LatentCache
from pusa_fw_wan.train.prepare import PrepareConfig, load_wan_encoders, prepare_dataset

BROKEN_MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8


def moving_frames(num_frames: int, height: int, width: int, phase: float = 0.0) -> np.ndarray:
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    channels = [128 + 90 * np.sin(0.2 * x + 0.1 * y + 0.4 * t + phase + shift) for shift in (0, 1, 2)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


@pytest.fixture(scope="module")
def encoders(tiny, one_thread):
    return load_wan_encoders(tiny.root, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, encoders) -> dict:
    """The dataset and the summary, cache folder and clip mtimes of its first `prepare_dataset`."""
    data = tmp_path_factory.mktemp("prepare") / "data"
    data.mkdir()
    write_video(data / "walk.mp4", moving_frames(20, 48, 64), fps=16)
    write_video(data / "pan.mp4", moving_frames(30, 80, 24), fps=24)
    write_video(data / "short.mp4", moving_frames(3, 48, 64), fps=16)
    write_video(data / "latin1.mp4", moving_frames(12, 48, 64), fps=16)
    (data / "broken.mp4").write_bytes(BROKEN_MP4)
    save_image(data / "still.png", torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    rows = [
        b"file_name,text",
        b"walk.mp4,a cat walks on the street",
        b"pan.mp4,camera pan over the sea",
        b"short.mp4,a dog runs",
        b"broken.mp4,a bird flies",
        b"still.png,a red house at night",
        b"latin1.mp4,caf\xe9 at night",
    ]
    (data / "metadata.csv").write_bytes(b"\n".join(rows) + b"\n")
    summary, cache = prepare(data, encoders)
    return {"data": data, "summary": summary, "cache": cache, "mtimes": mtimes(cache)}


def prepare(data: Path, encoders):
    config = PrepareConfig(
        data=data,
        out=data.parent / "cache",
        height=32,
        width=32,
        num_frames=(5,),
        extraction="chunk",
        clips_per_video=2,
    )
    return prepare_dataset(config, *encoders), config.out


def mtimes(cache: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in (cache / "clips").iterdir()}


def test_cache_reads_back_as_a_training_source(first_run: dict, encoders) -> None:
    cache = LatentCache(first_run["cache"], expect_codec=encoders[0].identity)
    assert isinstance(cache, TrainingSource) and len(cache) == 5
    walk, pan, still = cache.load(0), cache.load(2), cache.load(4)
    assert walk.caption == "a cat walks on the street" and walk.latents.dtype == torch.float32
    # buckets of area 32x32 on the 16-grid: 64x16, 32x32, 16x48, 16x64;
    # landscape 64x48 -> 32x32, portrait 24x80 -> 64x16
    assert cache.bucket(0) == (16, 2, 4, 4, 512, 32) == cache.bucket(1)
    assert cache.bucket(2) == (16, 2, 8, 2, 512, 32) and (pan.meta["height"], pan.meta["width"]) == (
        "64",
        "16",
    )
    assert json.loads(pan.meta["frame_indices"]) == [0, 1, 3, 4, 6]  # 24 -> 16 fps
    assert json.loads(cache.load(3).meta["frame_indices"]) == [7, 9, 10, 12, 13]
    assert pan.meta["fps"] == "16" and pan.meta["source_fps"] == "24"
    assert json.loads(walk.meta["frame_indices"]) == list(range(5))
    assert json.loads(cache.load(1).meta["frame_indices"]) == list(range(5, 10))
    real = int(json.loads(walk.meta["context_shape"])[0])
    assert walk.context.shape == (512, 32) and walk.context[real:].abs().sum() == 0
    assert walk.context[:real].abs().amax(dim=1).gt(0).all()
    empty = cache.empty_context()  # cached for caption dropout: the encoder's embedding of ""
    assert empty.shape == (512, 32) and torch.equal(empty, torch.nn.functional.pad(
        encoders[1].encode([""])[0].float().cpu(), (0, 0, 0, 512 - encoders[1].encode([""])[0].shape[0])))

    # prepare stores 8-bit frames: the shared fit (`fit_frames`) rounded to 8 bits, as `resize_image` gives it
    fitted = resize_image(read_image(first_run["data"] / "still.png"), (32, 32), "center-crop")
    image = uint8_to_image(np.asarray(fitted))
    expected = encoders[0].encode(image[None, :, None])[0]
    torch.testing.assert_close(still.latents, expected, rtol=1e-5, atol=1e-5)
    assert still.meta["kind"] == "image" and still.latents.shape == (16, 1, 4, 4)


def test_prepare_names_bad_items_resumes_and_re_encodes_a_changed_source(first_run: dict, encoders) -> None:
    summary, cache = first_run["summary"], first_run["cache"]
    assert summary.encoded == ["walk.mp4", "pan.mp4", "still.png"] and summary.clips == 5
    reasons = {item.source: item.reason for item in summary.skipped}
    assert reasons == {"short.mp4": "too short", "broken.mp4": "corrupt", "latin1.mp4": "unreadable caption"}
    text = "\n".join(summary.lines())
    assert all(f"skipped {name}: {reason}" in text for name, reason in reasons.items())
    assert json.loads((cache / "summary.json").read_text())["encoded"] == summary.encoded

    again, _ = prepare(first_run["data"], encoders)
    assert again.encoded == [] and again.reused == summary.encoded and again.clips == 5
    assert {item.source for item in again.skipped} == set(reasons)
    assert mtimes(cache) == first_run["mtimes"]

    write_video(first_run["data"] / "walk.mp4", moving_frames(7, 48, 64, phase=1.0), fps=16)  # now one clip
    changed, _ = prepare(first_run["data"], encoders)
    assert changed.encoded == ["walk.mp4"] and changed.reused == ["pan.mp4", "still.png"]
    assert changed.clips == 4 and len(list((cache / "clips").iterdir())) == 4
    after = mtimes(cache)
    rewritten = {name for name in after if after[name] != first_run["mtimes"].get(name)}
    assert rewritten == {name for name in after if name.startswith("walk-")} and len(rewritten) == 1


def test_cli_prepares_and_rejects_bad_frame_counts(
    tmp_path: Path, tiny, capsys: pytest.CaptureFixture
) -> None:
    save_image(tmp_path / "still.png", torch.zeros(3, 16, 16))
    (tmp_path / "broken.mp4").write_bytes(BROKEN_MP4)
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "still.png", "text": "a dark room"}\n'
        '{"file_name": "broken.mp4", "text": "a bird"}\nnot json\n'
        '{"file_name": "still.png", "text": "again"}\n'
    )
    args = [
        "prepare",
        str(tmp_path),
        "--out",
        str(tmp_path / "cache"),
        "--model",
        str(tiny.root),
        "--height",
        "16",
        "--width",
        "16",
        "--device",
        "cpu",
        "--num-frames",
    ]
    assert cli_main([*args, "5"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("1 clips") and "skipped broken.mp4: corrupt" in printed
    assert "skipped metadata.jsonl line 3: unreadable caption (line is not JSON" in printed
    assert "skipped still.png: duplicate" in printed
    assert cli_main([*args, "8"]) == 2
    error = capsys.readouterr().err.strip()
    assert "num_frames=8" in error and len(error.splitlines()) == 1


class InterruptingCodec:
    """The tiny Wan codec, interrupted (Ctrl-C) at its first encode."""

    def __init__(self, codec) -> None:
        self.geometry, self.identity = codec.geometry, codec.identity

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise KeyboardInterrupt


def test_an_interrupted_run_keeps_the_prepared_items_in_the_index(first_run: dict, encoders) -> None:
    data, cache = first_run["data"], first_run["cache"]
    write_video(data / "pan.mp4", moving_frames(30, 80, 24, phase=2.0), fps=24)  # pan must be re-encoded
    config = PrepareConfig(
        data=data, out=cache, height=32, width=32, num_frames=(5,), extraction="chunk", clips_per_video=2
    )
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(config, InterruptingCodec(encoders[0]), encoders[1])
    listed = [entry["source"] for entry in json.loads((cache / "index.json").read_text())["clips"]]
    assert sorted(listed) == ["still.png", "walk.mp4"]  # walk visited, still not yet: both kept; pan stale
    resumed = prepare_dataset(config, *encoders)
    assert resumed.encoded == ["pan.mp4"] and resumed.clips == 4
    # same size and mtime: trusted without reading the file; --rehash reads it and sees the change
    pan = data / "pan.mp4"
    status, raw = pan.stat(), bytearray(pan.read_bytes())
    raw[-1] ^= 0xFF
    pan.write_bytes(bytes(raw))
    os.utime(pan, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert "pan.mp4" in prepare_dataset(config, *encoders).reused
    assert "pan.mp4" not in prepare_dataset(config.model_copy(update={"rehash": True}), *encoders).reused
