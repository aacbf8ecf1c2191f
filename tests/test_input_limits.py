"""Out-of-range inputs are refused with one line before anything is allocated (CLI exit 2, no traceback):
plan sizes, seeds beyond 64 bits, oversized and degenerate images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pusa_fw.cli import main
from pusa_fw.errors import InputError, PlanError
from pusa_fw.io.image import MAX_IMAGE_PIXELS, read_image
from pusa_fw.schedule import MAX_NUM_STEPS, MAX_PLAN_CELLS, check_plan_size
from pusa_fw.seeding import MAX_SEED, make_generator

CASES = [
    (["plan", "t2v", "--num-steps", str(10**12)], f"is more than {MAX_NUM_STEPS}"),
    (["plan", "t2v", "--num-frames", str(4 * 10**15 + 1)], f"more than {MAX_PLAN_CELLS} cells"),
    (["plan", "rolling", "--num-frames", "100001"], "use fewer steps"),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=["steps", "frames", "rolling-frames"])
def test_huge_plans_are_one_line_errors(argv: list[str], expected: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pusa-fw: error: ") and expected in lines[0], lines


def test_plan_size_limits_are_inclusive() -> None:
    check_plan_size(MAX_NUM_STEPS, MAX_PLAN_CELLS // MAX_NUM_STEPS)
    with pytest.raises(PlanError, match="steps"):
        check_plan_size(MAX_NUM_STEPS + 1, 1)
    with pytest.raises(PlanError, match="cells"):
        check_plan_size(MAX_NUM_STEPS, MAX_PLAN_CELLS // MAX_NUM_STEPS + 1)


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**70, 1.5, "3", True])
def test_seeds_outside_64_bits_are_input_errors(seed: object) -> None:
    with pytest.raises(InputError, match=r"must be an integer in \[0, 2\*\*64 - 1\]"):
        make_generator(seed)  # type: ignore[arg-type]


def test_every_64_bit_seed_is_accepted() -> None:
    assert make_generator(MAX_SEED).initial_seed() == MAX_SEED
    assert make_generator(np.int64(7)).initial_seed() == 7


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims `width` x `height` (no pixel data): what a reader sees before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    ("size", "expected"),
    [((20000, 20000), "larger than 128 MP"), ((12000, 12000), "more than 128 MP"), ((1, 1), "is 1x1 pixels"),
     ((4000, 1), "is 4000x1 pixels")],
)
def test_oversized_and_degenerate_images_are_refused_before_decoding(
    tmp_path: Path, size: tuple[int, int], expected: str
) -> None:
    path = tmp_path / "image.png"
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        png_header_only(path, *size)
    else:
        Image.new("RGB", size).save(path)
    with pytest.raises(InputError, match=expected) as error:
        read_image(path)
    assert "\n" not in str(error.value)
