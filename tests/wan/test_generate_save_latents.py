"""``pusa-fw generate --save-latents PATH``: the final latents as safetensors (the ComfyUI parity check reads
them), written atomically, and a bad path is one line before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pusa_fw.cli import main
from pusa_fw_wan.cli.generate_config import validate_config
from pusa_fw_wan.cli.generate_run import run_generate
from pusa_fw_wan.testing.tiny import TinyWan

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = [
    "--prompt",
    "a cat on the beach",
    "--height",
    "32",
    "--width",
    "48",
    "--num-frames",
    "5",
    "--steps",
    "2",
    "--cfg",
    "1",
    "--seed",
    "3",
]


def _read(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        assert list(handle.keys()) == ["latents"]
        return handle.get_tensor("latents"), handle.metadata()


def test_saved_latents_are_the_runs_final_latents(tiny: TinyWan, tmp_path: Path) -> None:
    target = tmp_path / "final.safetensors"
    values = {
        "model": tiny.root,
        "vae": tiny.vae,
        "text_encoder": tiny.text_encoder,
        "tokenizer": tiny.tokenizer,
        "prompt": "a cat on the beach",
        "height": 32,
        "width": 48,
        "num_frames": 5,
        "num_steps": 2,
        "cfg": 1.0,
        "seed": 3,
        "out": tmp_path / "video.mp4",
        "save_latents": target,
    }
    outcome = run_generate(validate_config(values, "option"))
    latents, metadata = _read(target)
    assert latents.shape == (1, 16, 2, 4, 6)
    assert torch.equal(latents, outcome.result.latents)
    assert metadata["seed"] == "3"
    assert sorted(item.name for item in tmp_path.iterdir()) == [
        "final.safetensors",
        "video.json",
        "video.mp4",
    ]


def test_run_file_path_is_relative_to_the_run_file(tiny: TinyWan, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.toml").write_text('save_latents = "latents.safetensors"\nout = "video.mp4"\n')
    assert main(["generate", *tiny.cli_args(), *FAST, "--config", str(run_dir / "run.toml")]) == 0
    latents, _ = _read(run_dir / "latents.safetensors")
    assert latents.shape == (1, 16, 2, 4, 6) and bool(torch.isfinite(latents).all())


@pytest.mark.parametrize(
    "name, expected",
    [
        ("no/such/dir/latents.safetensors", "--save-latents: cannot write"),
        ("latents.pt", "must end in .safetensors"),
        ("taken.safetensors", "is a directory"),
    ],
)
def test_bad_path_is_one_line_and_writes_nothing(
    name: str, expected: str, tiny: TinyWan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken.safetensors").mkdir()
    out = tmp_path / "video.mp4"
    status = main(
        ["generate", *tiny.cli_args(), *FAST, "--out", str(out), "--save-latents", str(tmp_path / name)]
    )
    lines = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("pusa-fw: error: ") and expected in lines[0], lines
    assert sorted(item.name for item in tmp_path.iterdir()) == ["taken.safetensors"]
