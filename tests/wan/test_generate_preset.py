"""``pusa-fw generate --preset lightx2v``: LightX2V's 4-step recipe, exact sigmas, explicit values win."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw.geometry import WAN21_GEOMETRY
from pusa_fw.registry_lookup import lookup
from pusa_fw_wan.cli.commands import GenerateCommand, config_from_args
from pusa_fw_wan.cli.generate_config import GenerateConfig, validate_config
from pusa_fw_wan.cli.presets import PRESETS

LIGHTX2V_TIMESTEPS = [1000, 750, 500, 250]
"""LightX2V's ``denoising_step_list`` for its Wan2.1 4-step distill LoRA (warped with shift 5)."""
LIGHTX2V_SIGMAS = [1.0, 0.9375, 2.5 / 3, 0.625, 0.0]
"""5 t / (1 + 4 t) at t = 1, .75, .5, .25, then 0: the issue's list 1.0, 0.9375, 0.8333, 0.625, 0."""


def _parse(argv: list[str]) -> GenerateConfig:
    parser = argparse.ArgumentParser()
    GenerateCommand().add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize(("name", "sampler"), [("lightx2v", "euler"), ("lightx2v-lcm", "lcm")])
def test_preset_values(name: str, sampler: str) -> None:
    config = _parse(["--preset", name])
    assert (config.preset, config.num_steps, config.shift, config.cfg, config.sampler) == (name, 4, 5.0, 1.0,
                                                                                             sampler)
    assert config.guidance().cfg_scale == 1.0
    lookup("samplers", config.sampler)  # both samplers exist


def test_explicit_flags_override_the_preset() -> None:
    config = _parse(["--preset", "lightx2v", "--steps", "8", "--sampler", "unipc"])
    assert (config.num_steps, config.sampler, config.shift, config.cfg) == (8, "unipc", 5.0, 1.0)


def test_run_file_key_and_its_explicit_values(tmp_path: Path) -> None:
    run = tmp_path / "run.toml"
    run.write_text('prompt = "a cat"\npreset = "lightx2v"\ncfg = 2.0\n')
    from_file = _parse(["--config", str(run)])
    assert (from_file.num_steps, from_file.shift, from_file.cfg, from_file.sampler) == (4, 5.0, 2.0, "euler")
    flag_wins = _parse(["--config", str(run), "--cfg", "1.5", "--preset", "lightx2v-lcm"])
    assert (flag_wins.cfg, flag_wins.sampler, flag_wins.num_steps) == (1.5, "lcm", 4)


def test_no_preset_keeps_the_defaults() -> None:
    config = validate_config({}, "option")
    assert config.preset is None and (config.num_steps, config.cfg) == (10, 3.0)


def test_unknown_preset_is_one_line_naming_the_choices() -> None:
    with pytest.raises(InputError) as error:
        validate_config({"preset": "turbo", "prompt": "x"}, "option")
    message = str(error.value)
    assert "--preset" in message and "'turbo'" in message and "lightx2v" in message and "\n" not in message


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_preset_gives_lightx2v_sigmas_exactly(task: str) -> None:
    config = validate_config({"preset": "lightx2v"}, "option")
    plan = lookup("tasks", task)().plan(81, config.num_steps, config.shift, WAN21_GEOMETRY)
    expected = torch.tensor(LIGHTX2V_SIGMAS, dtype=torch.float64)
    generated = plan.sigmas[:, -1]  # the last latent frame is generated in every task
    assert torch.equal(generated, expected), generated.tolist()
    warped = [5 * (t / 1000) / (1 + 4 * (t / 1000)) for t in LIGHTX2V_TIMESTEPS] + [0.0]
    assert torch.equal(generated, torch.tensor(warped, dtype=torch.float64))
    assert [round(float(s), 4) for s in generated] == [1.0, 0.9375, 0.8333, 0.625, 0.0]


def test_every_preset_names_only_config_fields() -> None:
    for preset in PRESETS.values():
        assert set(preset.values) <= set(GenerateConfig.model_fields), preset.name
        assert preset.summary


@pytest.mark.usefixtures("one_thread")
def test_generate_with_the_lcm_preset_is_reproducible_by_seed(tiny, tmp_path: Path) -> None:
    """End to end on the tiny Wan set: the sidecar records the recipe, and the lcm noise follows the seed."""
    import json

    from pusa_fw.cli import main
    from safetensors.torch import load_file

    def run(seed: int, name: str) -> torch.Tensor:
        out = tmp_path / f"{name}.mp4"
        latents = tmp_path / f"{name}.safetensors"
        code = main(["generate", *tiny.cli_args(), "--prompt", "a cat", "--height", "32", "--width", "48",
                     "--num-frames", "5", "--preset", "lightx2v-lcm", "--seed", str(seed), "--out", str(out),
                     "--save-latents", str(latents), "--no-progress"])
        assert code == 0
        sampling = json.loads(out.with_suffix(".json").read_text())["sampling"]
        assert sampling == {"preset": "lightx2v-lcm", "sampler": "lcm", "num_steps": 4, "shift": 5.0, "cfg": 1.0,
                            "history_guidance": 1.0}
        return load_file(str(latents))["latents"]

    first, again, other = run(3, "a"), run(3, "b"), run(4, "c")
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
