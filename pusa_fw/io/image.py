"""Image loading with an explicit resize policy, image saving, and PNG contact sheets of video frames.

Sizes are `(height, width)` tuples, in the order of tensor shapes. Model tensors are float, channels
first, values in [-1, 1]; see `pusa_fw.io.pixels`.

Resize policies (`ResizePolicy`):

- `"center-crop"`: scale so the image *covers* the target (the smaller scale factor that fills both
  sides), then cut the overflow equally from both ends of the long side. Nothing is distorted; the
  borders of the long side are lost.
- `"letterbox"`: scale so the image *fits inside* the target, then pad equally on both ends of the short
  side with `fill`. Nothing is lost or distorted; bars appear top/bottom (a wider image) or left/right
  (a taller image).

Both follow `pusa_fw.io.resize.fit_frames` (bicubic with antialiasing, in torch): the ComfyUI pack fits its
``IMAGE`` inputs with the same function, so an image of another size gives the same pixels (and latents)
through ``pusa-fw generate`` and ComfyUI. `load_image` resizes in float and keeps the result unrounded (as
ComfyUI does); `resize_image` returns a Pillow image, so its pixels are that result rounded to 8 bits. Pillow
is imported here, so import this module only when images are used.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from .atomic import atomic_path
from .pixels import image_to_uint8, uint8_to_image, video_to_uint8
from .resize import FIT_POLICIES, fit_frames

__all__ = [
    "ResizePolicy",
    "load_image",
    "read_image",
    "resize_image",
    "save_contact_sheet",
    "save_image",
]

ResizePolicy = Literal["center-crop", "letterbox"]
RESIZE_POLICIES: tuple[str, ...] = FIT_POLICIES
RGB = tuple[int, int, int]


MAX_IMAGE_PIXELS = 128_000_000
"""Largest image read (a 108 MP phone photo fits; a 20000x20000 one, 1.2 GB decoded, does not)."""
MIN_IMAGE_SIDE = 2
"""Smallest image side read: a one-pixel line or dot is a degenerate image, not a picture to condition on."""


def _check_image_size(file: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"image {str(file)!r} is {width}x{height} pixels, more than {MAX_IMAGE_PIXELS // 1_000_000} MP; "
            "downscale it first (the model works at 480p/720p)"
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(
            f"image {str(file)!r} is {width}x{height} pixels; give an image at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} (ideally the video's size)"
        )


def read_image(path: str | os.PathLike[str], *, background: RGB = (0, 0, 0)) -> Image.Image:
    """Open an image file as an RGB Pillow image.

    The EXIF orientation is applied (a portrait phone photo comes out upright), and transparency is
    composited onto `background`.

    Args:
        path: an image file in any format Pillow reads (PNG, JPEG, WebP, ...).
        background: RGB colour under transparent pixels.

    Returns:
        A fully loaded RGB image (the file is closed).

    Raises:
        InputError: the file is missing, cannot be decoded as an image, is larger than
            `MAX_IMAGE_PIXELS` or has a side shorter than `MIN_IMAGE_SIDE`.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"image file {str(file)!r} does not exist; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            opened = Image.open(file)
        with opened:
            _check_image_size(file, *opened.size)  # from the header, before decoding anything
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except InputError:
        raise
    except Image.DecompressionBombError as error:  # Pillow refuses it in the header, before our check
        raise InputError(
            f"image {str(file)!r} is larger than {MAX_IMAGE_PIXELS // 1_000_000} MP ({error}); "
            "downscale it first"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(
            f"cannot decode image {str(file)!r} ({error}); the file is corrupt or not an image: "
            "re-export it as PNG or JPEG"
        ) from error
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flattened = Image.new("RGBA", rgba.size, (*background, 255))
        flattened.alpha_composite(rgba)
        return flattened.convert("RGB")
    return image.convert("RGB")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)
    ):
        raise InputError(
            f"size={size!r} must be a (height, width) pair of positive integers, e.g. (480, 832)"
        )
    return int(size[0]), int(size[1])


def check_policy(policy: str) -> None:
    """Raise `InputError` (one line) unless `policy` is one of `RESIZE_POLICIES`."""
    if policy not in RESIZE_POLICIES:
        raise InputError(f"resize policy {policy!r} is unknown; use one of {', '.join(RESIZE_POLICIES)}")


def _fitted(pixels: np.ndarray, size: tuple[int, int], policy: ResizePolicy, fill: RGB) -> torch.Tensor:
    """uint8 `[H, W, 3]` or `[T, H, W, 3]` -> `[T, 3, height, width]` float in [0, 1] (T = 1 for an image),
    fitted by the shared torch rule and not rounded (what ComfyUI's pack does to an ``IMAGE``)."""
    height, width = _check_size(size)
    check_policy(policy)
    frames = torch.from_numpy(np.require(pixels, requirements=["C", "W"]))
    frames = rearrange(frames if frames.dim() == 4 else frames[None], "t h w c -> t c h w")
    return fit_frames(frames.to(torch.float32) / 255.0, (height, width), policy, fill=tuple(fill))


def resize_image(
    image: Image.Image,
    size: tuple[int, int],
    policy: ResizePolicy = "center-crop",
    *,
    fill: RGB = (0, 0, 0),
) -> Image.Image:
    """Resize an image to exactly `size` with the given policy (see the module docstring).

    The pixels are `pusa_fw.io.resize.fit_frames`'s, rounded to 8 bits.

    Args:
        image: a Pillow image.
        size: target `(height, width)`.
        policy: `"center-crop"` or `"letterbox"`.
        fill: RGB colour of the letterbox bars.

    Returns:
        A new RGB image of width `size[1]` and height `size[0]`.
    """
    fitted = _fitted(np.asarray(image.convert("RGB"), dtype=np.uint8), size, policy, fill)
    pixels = (fitted[0] * 255.0).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(rearrange(pixels, "c h w -> h w c").numpy())


def load_image(
    path: str | os.PathLike[str],
    size: tuple[int, int] | None = None,
    policy: ResizePolicy = "center-crop",
    *,
    fill: RGB = (0, 0, 0),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Load an image file as a model-range tensor, optionally resized to `size`.

    Args:
        path: the image file.
        size: target `(height, width)`; `None` keeps the file's size.
        policy: `"center-crop"` or `"letterbox"` (used only when `size` is given).
        fill: RGB colour of letterbox bars (and under transparent pixels).
        dtype: floating dtype of the result.

    Returns:
        `[3, H, W]` tensor, values in [-1, 1].

    Raises:
        InputError: missing or undecodable file, bad size or policy.
    """
    pixels = np.asarray(read_image(path, background=fill), dtype=np.uint8)
    if size is None or tuple(pixels.shape[:2]) == tuple(_check_size(size)):
        if size is not None:
            check_policy(policy)
        return uint8_to_image(pixels, dtype=dtype)
    # Unrounded, as the ComfyUI pack gets it from the same rule: the two give the same pixels.
    return (_fitted(pixels, size, policy, fill)[0] * 2.0 - 1.0).to(dtype)


def save_image(path: str | os.PathLike[str], image: torch.Tensor) -> Path:
    """Write a model-range image tensor `[3, H, W]` atomically; the format follows the suffix (.png, .jpg).

    Returns:
        The written path.
    """
    target = Path(path).expanduser()
    picture = Image.fromarray(image_to_uint8(image))
    image_format = Image.registered_extensions().get(target.suffix.lower())
    if image_format is None:
        raise InputError(
            f"cannot tell the image format of {str(target)!r}; use a suffix such as .png or .jpg"
        )
    with atomic_path(target) as temp_path:
        picture.save(temp_path, format=image_format)
    return target


def save_contact_sheet(
    path: str | os.PathLike[str],
    video: torch.Tensor,
    *,
    columns: int | None = None,
    padding: int = 2,
    background: RGB = (0, 0, 0),
) -> Path:
    """Write the frames of a video as one PNG grid, row by row in time order, atomically.

    With `T` frames of `H x W`, `C` columns (default `ceil(sqrt(T))`) and `R = ceil(T / C)` rows, the
    sheet is `R * H + (R + 1) * padding` pixels high and `C * W + (C + 1) * padding` wide; `padding`
    pixels of `background` surround every frame, and unused cells of the last row stay `background`.

    Args:
        path: output file; must end in `.png`.
        video: `[3, T, H, W]` or `[1, 3, T, H, W]`, float, values in [-1, 1].
        columns: frames per row.
        padding: gap in pixels around and between frames.
        background: RGB colour of the gaps.

    Returns:
        The written path.
    """
    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise InputError(f"contact sheet path {str(target)!r} must end in .png")
    frames = video_to_uint8(video)
    num_frames, height, width, _ = frames.shape
    if columns is None:
        columns = math.ceil(math.sqrt(num_frames))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise InputError(f"columns={columns!r} must be a positive integer")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InputError(f"padding={padding!r} must be a non-negative integer")
    rows = math.ceil(num_frames / columns)
    cells = np.empty((rows * columns, height, width, 3), dtype=np.uint8)
    cells[...] = np.asarray(background, dtype=np.uint8)
    cells[:num_frames] = frames
    grid = rearrange(cells, "(r c) h w ch -> r c h w ch", c=columns)
    padded = np.empty((rows, columns, height + padding, width + padding, 3), dtype=np.uint8)
    padded[...] = np.asarray(background, dtype=np.uint8)
    padded[:, :, padding:, padding:] = grid
    sheet = rearrange(padded, "r c h w ch -> (r h) (c w) ch")
    full = np.empty((sheet.shape[0] + padding, sheet.shape[1] + padding, 3), dtype=np.uint8)
    full[...] = np.asarray(background, dtype=np.uint8)
    full[: sheet.shape[0], : sheet.shape[1]] = sheet
    with atomic_path(target) as temp_path:
        Image.fromarray(full).save(temp_path, format="PNG")
    return target
