"""mp4 round trips, atomic writes and frame-rate resampling of `pusa_fw.io.video`."""

from __future__ import annotations

import os
import stat
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw.io.atomic import atomic_path, atomic_write_bytes
from pusa_fw.io.video import load_video, probe_video, read_video, save_video, write_video

# Measured on the smooth test video below (libx264, yuv420p, BT.709): crf 18 gives max 19 / mean 1.84
# levels, crf 0 max 6 / mean 0.48 (the chroma subsampling floor). The bounds leave a small margin.
CRF18_MAX_ERROR, CRF18_MEAN_ERROR = 24, 2.5
CRF0_MAX_ERROR, CRF0_MEAN_ERROR = 8, 0.75


def smooth_frames(num_frames: int = 9, height: int = 48, width: int = 64) -> np.ndarray:
    """Moving sinusoidal colour gradients, uint8 [T, H, W, 3]."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    channels = [
        128 + 90 * np.sin(0.09 * x + 0.05 * y + 0.3 * t),
        128 + 90 * np.sin(0.04 * x + 0.10 * y + 0.2 * t + 1),
        128 + 90 * np.sin(0.07 * x - 0.06 * y + 0.25 * t + 2),
    ]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def flat_frames(levels: np.ndarray, height: int = 32, width: int = 48) -> np.ndarray:
    """One flat grey frame per level: frame k has value levels[k] everywhere, uint8 [T, H, W, 3]."""
    return np.broadcast_to(levels[:, None, None, None], (len(levels), height, width, 3)).astype(np.uint8)


def pixel_errors(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    difference = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return int(difference.max()), float(difference.mean())


def test_round_trip_keeps_count_size_and_fps(tmp_path: Path) -> None:
    frames = smooth_frames()
    path = write_video(tmp_path / "clip.mp4", frames)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (9, 48, 64)
    assert info.fps == 16 and isinstance(info.fps, Fraction)
    decoded = read_video(path)
    assert decoded.frames.shape == frames.shape and decoded.frames.dtype == np.uint8
    assert decoded.fps == 16
    assert decoded.source_indices.tolist() == list(range(9))
    max_error, mean_error = pixel_errors(decoded.frames, frames)
    assert max_error <= CRF18_MAX_ERROR and mean_error <= CRF18_MEAN_ERROR


def test_lossless_crf_reaches_the_colour_conversion_floor(tmp_path: Path) -> None:
    frames = smooth_frames()
    decoded = read_video(write_video(tmp_path / "clip.mp4", frames, crf=0, preset="ultrafast"))
    max_error, mean_error = pixel_errors(decoded.frames, frames)
    assert max_error <= CRF0_MAX_ERROR and mean_error <= CRF0_MEAN_ERROR


def test_lossless_mode_returns_the_frames_bit_for_bit(tmp_path: Path) -> None:
    frames = smooth_frames(num_frames=5, height=16, width=16)
    frames[:, :4, :4] = [255, 0, 0]  # a saturated patch that 4:2:0 chroma would smear
    decoded = read_video(write_video(tmp_path / "clip.mp4", frames, fps=8, lossless=True))
    assert np.array_equal(decoded.frames, frames)
    lossy = read_video(write_video(tmp_path / "lossy.mp4", frames, fps=8, crf=0))
    assert not np.array_equal(lossy.frames, frames), "the default 4:2:0 path is not lossless"
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    back = load_video(save_video(tmp_path / "tensor.mp4", video, lossless=True))
    assert torch.equal(back, video)


def test_fractional_fps_is_exact(tmp_path: Path) -> None:
    ntsc = Fraction(30000, 1001)
    path = write_video(tmp_path / "ntsc.mp4", smooth_frames(num_frames=5), fps=ntsc, preset="ultrafast")
    info = probe_video(path)
    assert info.fps == ntsc and info.num_frames == 5


def test_tensor_round_trip(tmp_path: Path) -> None:
    frames = smooth_frames(num_frames=5, height=32, width=48)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # [3, T, H, W]
    path = save_video(tmp_path / "tensor.mp4", video[None])  # [1, 3, T, H, W] is accepted too
    loaded = load_video(path)
    assert loaded.shape == video.shape and loaded.dtype == torch.float32
    assert float(loaded.min()) >= -1 and float(loaded.max()) <= 1
    assert float((loaded - video).abs().max()) <= CRF18_MAX_ERROR / 127.5
    resized = load_video(path, size=(16, 20), policy="letterbox")
    assert resized.shape == (3, 5, 16, 20)


def test_failing_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "broken.mp4"

    def frames_then_a_bad_one():
        yield from smooth_frames(num_frames=3)
        yield np.zeros((48, 66, 3), dtype=np.uint8)  # wrong size, found after encoding started

    with pytest.raises(InputError, match="frame 3"):
        write_video(target, frames_then_a_bad_one())
    assert list(tmp_path.iterdir()) == []


def test_failing_write_keeps_the_existing_file(tmp_path: Path) -> None:
    target = write_video(tmp_path / "keep.mp4", smooth_frames(num_frames=3), preset="ultrafast")
    original = target.read_bytes()
    with pytest.raises(InputError, match="even"):
        write_video(target, smooth_frames(num_frames=3, height=47))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        save_video(target, torch.full((3, 2, 8, 8), 3.0))
    assert target.read_bytes() == original
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keep.mp4"]


@pytest.mark.parametrize(
    ("bad_target", "message"),
    [("missing_dir/clip.mp4", "does not exist"), ("folder.mp4", "is a directory"), ("clip.avi", ".mp4")],
)
def test_unwritable_targets_are_input_errors(tmp_path: Path, bad_target: str, message: str) -> None:
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(InputError, match=message):
        write_video(tmp_path / bad_target, smooth_frames(num_frames=2))
    assert [path.name for path in tmp_path.iterdir()] == ["folder.mp4"]
    assert list((tmp_path / "folder.mp4").iterdir()) == []


def test_bad_settings_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="crf"):
        write_video(tmp_path / "a.mp4", smooth_frames(num_frames=2), crf=60)
    with pytest.raises(InputError, match="fps"):
        write_video(tmp_path / "a.mp4", smooth_frames(num_frames=2), fps=0)
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "a.mp4", [])
    with pytest.raises(InputError, match="uint8"):
        write_video(tmp_path / "a.mp4", smooth_frames(num_frames=2).astype(np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def counting_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """24 frames at 24 fps; frame k is flat grey at level 5 + 10 k, so each decoded frame names its index."""
    levels = 5 + 10 * np.arange(24)
    path = tmp_path_factory.mktemp("video") / "counting.mp4"
    write_video(path, flat_frames(levels), fps=24, preset="ultrafast")
    return path, levels


def decoded_indices(frames: np.ndarray, levels: np.ndarray) -> list[int]:
    """Which source frame each decoded frame is, from its mean grey level."""
    means = frames.reshape(len(frames), -1).mean(axis=1)
    return [int(np.argmin(np.abs(levels - mean))) for mean in means]


@pytest.mark.parametrize(("fps", "expected_count"), [(16, 16), (8, 8), (24, 24), (12.5, 13)])
def test_downsampling_picks_the_frame_on_screen(
    counting_video: tuple[Path, np.ndarray], fps: float, expected_count: int
) -> None:
    path, levels = counting_video
    decoded = read_video(path, fps=fps)
    expected = [int(np.floor(i * 24 / fps)) for i in range(expected_count)]
    assert decoded.fps == Fraction(fps)
    assert decoded.source_indices.tolist() == expected
    assert decoded_indices(decoded.frames, levels) == expected


def test_upsampling_repeats_frames_and_num_frames_cuts(counting_video: tuple[Path, np.ndarray]) -> None:
    path, levels = counting_video
    decoded = read_video(path, fps=30, num_frames=10)
    expected = [int(np.floor(i * 24 / 30)) for i in range(10)]
    assert decoded.frames.shape[0] == 10
    assert decoded.source_indices.tolist() == expected == decoded_indices(decoded.frames, levels)
    assert len(set(expected)) < len(expected)  # some frames repeat
    with pytest.raises(InputError, match="17"):
        read_video(path, fps=16, num_frames=17)


def test_unreadable_videos_are_input_errors(tmp_path: Path, counting_video: tuple[Path, np.ndarray]) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all " * 64)
    with pytest.raises(InputError, match=r"garbage\.mp4"):
        read_video(garbage)
    with pytest.raises(InputError, match=r"garbage\.mp4"):
        probe_video(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(counting_video[0].read_bytes()[:2000])
    with pytest.raises(InputError, match="truncated"):
        read_video(truncated)


def test_atomic_path_removes_the_partial_file_and_sets_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(target) as temp_path:
        assert temp_path.parent == tmp_path and temp_path.suffix == ".bin"
        temp_path.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    atomic_write_bytes(target, b"complete")
    assert target.read_bytes() == b"complete"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_clip_of_another_size_is_fitted_unrounded_by_the_packs_rule(tmp_path: Path) -> None:
    """`pusa-fw generate` fits a clip as the ComfyUI pack fits an IMAGE batch: `fit_frames` on uint8 / 255."""
    from pusa_fw.io.resize import fit_frames
    from pusa_fw_wan.pipeline.media import _to_tensor

    frames = smooth_frames(num_frames=3, height=40, width=60)
    comfy_image = torch.from_numpy(frames).float() / 255.0  # ComfyUI's IMAGE: [T, H, W, 3] in [0, 1]
    pack = fit_frames(comfy_image.permute(0, 3, 1, 2), (32, 48), "center-crop") * 2 - 1  # [T, 3, H, W]
    ours = _to_tensor(frames, (32, 48), "center-crop")  # [3, T, H, W]
    assert ours.shape == (3, 3, 32, 48)
    assert torch.equal(ours, pack.permute(1, 0, 2, 3))
    # Rounding the fitted frames to 8 bits (the old path) is visibly different.
    rounded = torch.round((pack + 1) * 127.5) / 127.5 - 1
    assert float((rounded - pack).abs().max()) > 1e-4
    with pytest.raises(InputError, match="resize policy 'stretch' is unknown"):
        _to_tensor(frames, (32, 48), "stretch")
