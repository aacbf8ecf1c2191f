"""Validation renders during training: files at the right steps, decodable, from EMA weights when EMA is on,
and a run with renders ends bit-identical to one without."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pusa_fw.errors import InputError
from pusa_fw.io.video_read import read_video
from pusa_fw_toy.source import WorldSource
from pusa_fw_train import Trainer
from pusa_fw_train.config import validate_train_config


def _config(run: Path, model: Path | None, **validation: object):
    values = {
        "output_dir": str(run),
        "max_steps": 4,
        "seed": 5,
        "model": {"path": str(model)}
        if model is not None
        else {
            "architecture": {
                "in_dim": 4,
                "out_dim": 4,
                "dim": 32,
                "ffn_dim": 64,
                "freq_dim": 32,
                "text_dim": 16,
                "text_len": 8,
                "num_heads": 2,
                "num_layers": 1,
            }
        },
        "data": {"source": "unused", "batch_size": 1},
        "lora": {"rank": 2, "alpha": 2.0},
        "optimizer": {"lr": 1e-2},
        "ema_decay": 0.5,
        "logging": {"tensorboard": False},
        "validation": {"every": 2, "num_samples": 1, "plans": ["t2v"], **validation},
    }
    return validate_train_config(values)


def _source(toy_dir: Path) -> WorldSource:
    return WorldSource.from_model_dir(toy_dir, length=4)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}


def test_renders_are_written_and_leave_training_bit_identical(toy_dir: Path, tmp_path: Path) -> None:
    source = _source(toy_dir)
    plain = Trainer(_config(tmp_path / "plain", toy_dir), source=source)
    plain.run()
    rendering = Trainer(
        _config(
            tmp_path / "renders", toy_dir, render_tasks=["t2v", "i2v"], render_every=3, render_num_steps=2
        ),
        source=source,
    )
    rendering.run()
    expected, got = _weights(plain), _weights(rendering)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert all(torch.equal(plain.ema.shadow[name], rendering.ema.shadow[name]) for name in plain.ema.shadow)
    assert rendering.model.training
    renders = tmp_path / "renders" / "renders"
    assert sorted(path.name for path in renders.iterdir()) == ["step-0000003"]  # every 3 of 4 steps
    step = renders / "step-0000003"
    num_frames = source.codec.geometry.num_frames(int(source.load(0).latents.shape[1]))
    assert num_frames > 1
    for task in ("t2v", "i2v"):
        video = read_video(step / f"{task}.mp4")
        assert video.frames.shape[0] == num_frames
        assert (step / f"{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((step / "renders.json").read_text())
    assert record["weights"] == "ema" and record["step"] == 3 and record["num_frames"] == num_frames
    assert not list(step.glob("*.tmp*"))


def test_render_uses_current_weights_without_ema_and_restores_train_mode(
    toy_dir: Path, tmp_path: Path
) -> None:
    values = _config(tmp_path / "run", toy_dir, render_tasks=["t2v"], render_num_steps=2).model_dump()
    values["ema_decay"] = None
    trainer = Trainer(validate_train_config(values), source=_source(toy_dir))
    before = _weights(trainer)
    state = torch.random.get_rng_state()
    files = trainer.render()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert trainer.model.training
    assert all(torch.equal(before[name], tensor) for name, tensor in _weights(trainer).items())
    record = json.loads(files[-1].read_text())
    assert record["weights"] == "current" and files[0].name == "t2v.mp4"


def test_bad_render_task_is_one_line(toy_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="render_tasks.*'nope'") as error:
        Trainer(_config(tmp_path, toy_dir, render_tasks=["nope"]), source=_source(toy_dir))
    assert "\n" not in str(error.value)


def test_renders_without_a_codec_are_one_line(toy_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs a codec") as error:
        Trainer(_config(tmp_path, None, render_tasks=["t2v"]), source=_source(toy_dir))
    assert "\n" not in str(error.value)


def test_renders_need_an_interval(toy_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="render_every"):
        _config(tmp_path, toy_dir, render_tasks=["t2v"], every=0)


def test_render_settings_may_change_on_resume(toy_dir: Path, tmp_path: Path) -> None:
    from pusa_fw_train.config import config_differences

    saved = _config(tmp_path, toy_dir)
    given = _config(tmp_path, toy_dir, render_tasks=["t2v"], render_num_steps=2)
    assert config_differences(saved, given) == []
    assert config_differences(saved, _config(tmp_path, toy_dir, every=3)) == [
        "validation.every: run has 2, given 3"
    ]


def test_sample_prompts_render_through_the_real_text_encoder_with_cfg(toy_dir: Path, tmp_path: Path) -> None:
    """``validation.render_prompts``: one render per task and prompt, each prompt (and the negative prompt of
    classifier-free guidance) encoded by the model's own text encoder; CFG changes the render."""
    from pusa_fw_toy.model_dir import load_toy_models

    prompts = ["a red ball moves left", "a blue ball moves up"]
    config = _config(tmp_path / "run", toy_dir, render_tasks=["t2v"], render_num_steps=2, render_prompts=prompts,
                     render_cfg_scale=3.0, render_negative_prompt="blurry")
    trainer = Trainer(config, source=_source(toy_dir))
    encoder = load_toy_models(toy_dir).text_encoder
    for (prompt, context), expected in zip(trainer._renders.prompts, prompts, strict=True):
        assert prompt == expected and torch.equal(context, encoder.encode([expected]).float().cpu())
    assert torch.equal(trainer._renders.negative_context, encoder.encode(["blurry"]).float().cpu())
    files = trainer.render()
    assert [file.name for file in files if file.suffix == ".mp4"] == ["t2v-p0.mp4", "t2v-p1.mp4"]
    record = json.loads(files[-1].read_text())
    assert record["prompts"] == prompts and record["cfg_scale"] == 3.0
    plain = Trainer(_config(tmp_path / "plain", toy_dir, render_tasks=["t2v"], render_num_steps=2,
                            render_prompts=prompts[:1]), source=_source(toy_dir))
    with_cfg, without = (read_video(path).frames for path in (files[0], plain.render()[0]))
    assert not (with_cfg == without).all(), "guidance at scale 3 changes the render"


def test_renders_compute_under_the_training_autocast_sampler_and_decode(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """precision bf16: the sampler and the codec's decode run under CPU autocast to bf16, like the training
    step (the fp32 master weights would otherwise make every render GEMM fp32); fp32: no autocast."""
    import pusa_fw.sampling as sampling

    seen: list[tuple[str, bool, torch.dtype]] = []
    real_sample = sampling.sample

    def recording_sample(*args, **kwargs):
        seen.append(("sample", torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample", recording_sample)
    for precision in ("bf16", "fp32"):
        values = _config(tmp_path / precision, toy_dir, render_tasks=["t2v"], render_num_steps=1).model_dump()
        values["precision"] = precision
        trainer = Trainer(validate_train_config(values), source=_source(toy_dir))
        codec = trainer._renders.codec
        real_decode = codec.decode

        def recording_decode(latents, real_decode=real_decode):
            seen.append(("decode", torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return real_decode(latents)

        monkeypatch.setattr(codec, "decode", recording_decode)
        trainer.render()
    assert seen[:2] == [("sample", True, torch.bfloat16), ("decode", True, torch.bfloat16)]
    assert [(where, enabled) for where, enabled, _ in seen[2:]] == [("sample", False), ("decode", False)]
