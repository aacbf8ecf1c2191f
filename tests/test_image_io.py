"""Image loading with resize policies, corrupt files, saving and contact sheets (`pusa_fw.io.image`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pusa_fw.errors import InputError
from pusa_fw.io.image import load_image, read_image, save_contact_sheet, save_image

RED, GREEN, BLUE, MAGENTA = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 0, 255)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> uint8 [H, W, 3]."""
    return ((image.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


def striped(height: int, width: int, *, vertical: bool) -> Image.Image:
    """Three equal stripes red | green | blue, side by side (vertical=True) or stacked."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    length = width if vertical else height
    for index, colour in enumerate((RED, GREEN, BLUE)):
        band = slice(index * length // 3, (index + 1) * length // 3)
        if vertical:
            pixels[:, band] = colour
        else:
            pixels[band, :] = colour
    return Image.fromarray(pixels)


def is_colour(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 8) -> bool:
    return bool((np.abs(pixels.astype(np.int32) - np.asarray(colour)) <= tolerance).all())


def test_center_crop_keeps_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    striped(60, 180, vertical=True).save(path)  # stripes 60 px wide; a 60x60 crop is the green one
    image = load_image(path, size=(30, 30), policy="center-crop")
    assert image.shape == (3, 30, 30) and image.dtype == torch.float32
    pixels = to_uint8(image)
    assert is_colour(pixels[:, 2:-2], GREEN)
    tall = tmp_path / "tall.png"
    striped(180, 60, vertical=False).save(tall)
    pixels = to_uint8(load_image(tall, size=(20, 40), policy="center-crop"))
    assert pixels.shape == (20, 40, 3) and is_colour(pixels[2:-2], GREEN)


def test_letterbox_puts_bars_on_the_short_side(tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    striped(50, 200, vertical=True).save(wide)
    pixels = to_uint8(load_image(wide, size=(64, 64), policy="letterbox", fill=MAGENTA))
    # 200x50 fitted into 64x64 is 64x16: bars of 24 rows above and below, the whole image in between
    assert pixels.shape == (64, 64, 3)
    assert is_colour(pixels[:24], MAGENTA, 0) and is_colour(pixels[40:], MAGENTA, 0)
    image_rows = pixels[24:40]
    assert is_colour(image_rows[:, :18], RED) and is_colour(image_rows[:, 24:40], GREEN)
    assert is_colour(image_rows[:, 46:], BLUE)
    tall = tmp_path / "tall.png"
    striped(120, 40, vertical=False).save(tall)
    pixels = to_uint8(load_image(tall, size=(60, 60), policy="letterbox"))
    # 40x120 fitted into 60x60 is 20x60: black bars of 20 columns left and right
    assert is_colour(pixels[:, :20], (0, 0, 0), 0) and is_colour(pixels[:, 40:], (0, 0, 0), 0)
    assert is_colour(pixels[:18, 20:40], RED) and is_colour(pixels[42:, 20:40], BLUE)


def test_no_size_keeps_pixels_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(13, 17, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    image = load_image(path)
    assert image.shape == (3, 13, 17)
    assert np.array_equal(to_uint8(image), pixels)
    saved = save_image(tmp_path / "copy.png", image)
    assert np.array_equal(np.asarray(Image.open(saved)), pixels)


def test_transparency_and_exif_orientation(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[:, :3] = (255, 0, 0, 255)  # opaque red on the left, fully transparent on the right
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    pixels = np.asarray(read_image(path, background=BLUE))
    assert is_colour(pixels[:, :3], RED, 0) and is_colour(pixels[:, 3:], BLUE, 0)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (40, 20), GREEN).save(rotated, exif=exif)
    assert read_image(rotated).size == (20, 40)


def test_bad_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(InputError, match=r"corrupt\.png"):
        load_image(corrupt)
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(tmp_path / "whole.jpg")
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    with pytest.raises(InputError, match=r"truncated\.jpg"):
        load_image(truncated)
    good = tmp_path / "whole.jpg"
    with pytest.raises(InputError, match="size"):
        load_image(good, size=(0, 10))
    with pytest.raises(InputError, match="policy"):
        load_image(good, size=(10, 10), policy="stretch")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("num_frames", "columns", "grid"), [(7, None, (3, 3)), (5, 5, (1, 5)), (6, 4, (2, 4))]
)
def test_contact_sheet_grid(
    tmp_path: Path, num_frames: int, columns: int | None, grid: tuple[int, int]
) -> None:
    height, width, padding = 10, 14, 3
    levels = torch.linspace(-0.9, 0.9, num_frames)
    video = levels[None, :, None, None].expand(3, num_frames, height, width)  # frame k flat at levels[k]
    path = save_contact_sheet(tmp_path / "sheet.png", video, columns=columns, padding=padding)
    sheet = np.asarray(Image.open(path))
    rows, cols = grid
    assert sheet.shape == (rows * height + (rows + 1) * padding, cols * width + (cols + 1) * padding, 3)
    expected_levels = to_uint8(levels[None, :, None].expand(3, num_frames, 1))[:, 0, 0]
    for index in range(rows * cols):
        row, col = divmod(index, cols)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        cell = sheet[top : top + height, left : left + width]
        expected = int(expected_levels[index]) if index < num_frames else 0
        assert (cell == expected).all(), f"cell {index}"
    assert (sheet[:padding] == 0).all() and (sheet[:, :padding] == 0).all()


def test_contact_sheet_rejects_bad_input(tmp_path: Path) -> None:
    video = torch.zeros(3, 2, 8, 8)
    with pytest.raises(InputError, match=r"\.png"):
        save_contact_sheet(tmp_path / "sheet.jpg", video)
    with pytest.raises(InputError, match="shape"):
        save_contact_sheet(tmp_path / "sheet.png", torch.zeros(2, 8, 8))
    with pytest.raises(InputError, match="batch"):
        save_contact_sheet(tmp_path / "sheet.png", torch.zeros(2, 3, 2, 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_load_and_resize_follow_the_shared_torch_rule(tmp_path: Path) -> None:
    """`load_image` and `resize_image` fit with `pusa_fw.io.resize.fit_frames` (the ComfyUI pack's rule too)."""
    from pusa_fw.io.image import resize_image
    from pusa_fw.io.resize import fit_frames

    pixels = np.asarray(torch.randint(0, 256, (40, 60, 3), generator=torch.Generator().manual_seed(3)),
                        dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    frames = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    for policy in ("center-crop", "letterbox"):
        expected = fit_frames(frames, (32, 36), policy, fill=MAGENTA)[0]
        loaded = load_image(path, size=(32, 36), policy=policy, fill=MAGENTA)
        assert torch.equal(loaded, expected * 2.0 - 1.0)  # unrounded, as ComfyUI gets it
        resized = np.asarray(resize_image(Image.fromarray(pixels), (32, 36), policy, fill=MAGENTA))
        assert np.array_equal(resized, (expected * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    # At the target size nothing is resampled: the file's pixels exactly.
    assert np.array_equal(to_uint8(load_image(path, size=(40, 60))), pixels)


def test_fit_frames_crops_the_centre_then_resizes() -> None:
    from pusa_fw.io.resize import fit_frames

    # 40x60 -> 32x32: the centre 40x40 (columns 10..49), then 40 -> 32; a crop of the target size is exact.
    frames = torch.rand(2, 3, 40, 60, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fit_frames(frames, (40, 40)), frames[:, :, :, 10:50])
    fitted = fit_frames(frames, (32, 32))
    assert fitted.shape == (2, 3, 32, 32) and 0 <= float(fitted.min()) and float(fitted.max()) <= 1
    assert torch.equal(fit_frames(frames[:1], (32, 32)), fitted[:1])  # frames are fitted one by one
    with pytest.raises(InputError, match="stretch"):
        fit_frames(frames, (32, 32), "stretch")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="size="):
        fit_frames(frames, (0, 32))
