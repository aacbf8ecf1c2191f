"""Features users of musubi-tuner and diffusion-pipe expect: save on SIGTERM, a LoRA export every N steps."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pusa_fw.errors import InputError
from pusa_fw_train import Trainer
from pusa_fw_wan.testing.train import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sigterm_saves_after_the_current_step_and_the_run_resumes_bit_exact(tmp_path):
    Trainer(tiny_config(tmp_path / "straight", max_steps=5)).run()
    trainer = Trainer(tiny_config(tmp_path / "killed", max_steps=5))
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_at_step_2(record):
        if record["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    result = trainer.run(progress=terminate_at_step_2)
    assert signal.getsignal(signal.SIGTERM) is previous, "the previous SIGTERM handler is back"
    assert result.step == 2 and result.checkpoint is not None and result.checkpoint.name == "step-0000002"
    Trainer.resume(tmp_path / "killed").run()
    straight = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000005" / "adapter.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "checkpoints" / "step-0000005" / "adapter.safetensors"))
    assert all(torch.equal(resumed[name], tensor) for name, tensor in straight.items())


def test_a_lora_is_exported_every_n_steps_in_the_adapters_layout(tmp_path):
    config = tiny_config(tmp_path / "run", max_steps=4, ema_decay=0.9,
                         **{"checkpoint.export_lora_every": 2, "checkpoint.export_ema": True})
    Trainer(config).run()
    exports = sorted((tmp_path / "run" / "exports").iterdir())
    assert [path.name for path in exports] == ["lora-step-0000002.safetensors", "lora-step-0000004.safetensors"]
    with safe_open(str(exports[-1]), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert keys and all(key.startswith("diffusion_model.") for key in keys)
    assert metadata["step"] == "4" and metadata["ema"] == "true"


def test_exports_of_a_full_fine_tune_are_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match="export_lora_every") as caught:
        tiny_config(tmp_path, mode="full", **{"checkpoint.export_lora_every": 2})
    assert "\n" not in str(caught.value)


def test_several_datasets_mix_by_their_repeats():
    from pusa_fw.training_data import InMemorySource
    from pusa_fw_train.mixing import MixedSource

    small = InMemorySource.random(2, (4, 1, 2, 2), (3, 8), seed=1)
    large = InMemorySource.random(3, (4, 1, 2, 2), (3, 8), seed=2)
    mixed = MixedSource([small, large], [3, 1])
    assert len(mixed) == 2 * 3 + 3
    located = [mixed.locate(index) for index in range(len(mixed))]
    assert located == [(0, 0), (0, 1)] * 3 + [(1, 0), (1, 1), (1, 2)]
    assert mixed.load(7).meta["dataset"] == 1 and torch.equal(mixed.load(7).latents, large.load(1).latents)


def test_a_run_trains_on_several_datasets_from_its_config(tmp_path):
    random = {"latent_shape": [16, 3, 4, 4], "context_shape": [4, 16]}
    config = tiny_config(tmp_path / "run", max_steps=2, data={
        "batch_size": 2,
        "datasets": [
            {"source": "random", "options": {"count": 2, "seed": 5, **random}, "repeats": 2},
            {"source": "random", "options": {"count": 3, "seed": 6, **random}},
        ],
    })
    trainer = Trainer(config)
    assert len(trainer.source) == 7
    assert trainer.run().step == 2
    with pytest.raises(InputError, match="exactly one of data.source or data.datasets"):
        tiny_config(tmp_path, **{"data.datasets": [{"source": "random"}]})


def test_caption_dropout_trains_on_the_cached_empty_prompt(tmp_path):
    from safetensors.torch import save_file

    from pusa_fw.training_data import InMemorySource, TrainingSample
    from pusa_fw_train.mixing import caption_dropped

    rate = sum(caption_dropped(0, 3, 0, index, 0.25) for index in range(4000)) / 4000
    assert abs(rate - 0.25) < 0.03
    empty = torch.randn(4, 16, generator=torch.Generator().manual_seed(9))
    save_file({"context": empty}, str(tmp_path / "empty.safetensors"))
    source = InMemorySource.random(5, (16, 3, 4, 4), (4, 16), seed=2)
    blank = InMemorySource([TrainingSample(source.load(i).latents, empty) for i in range(5)])
    dropped = Trainer(tiny_config(tmp_path / "dropped", max_steps=3, **{
        "data.caption_dropout": 1.0, "data.empty_context": str(tmp_path / "empty.safetensors")}), source=source)
    dropped.run()
    reference = Trainer(tiny_config(tmp_path / "blank", max_steps=3), source=blank)
    reference.run()
    assert all(torch.equal(dropped.tensors[name], tensor) for name, tensor in reference.tensors.items())
    with pytest.raises(InputError, match="data.caption_dropout needs the empty prompt"):
        Trainer(tiny_config(tmp_path / "none", **{"data.caption_dropout": 0.1}))


def _signal_at(monkeypatch, signum: int, at: tuple[int, int]) -> None:
    """Send `signum` to this process while micro-step ``at = (step, micro_step)`` draws its noise."""
    import pusa_fw_train.trainer_loop as loop

    draw = loop.draw_for_batch

    def drawing(*args, **kwargs):
        step, micro_step = args[4], args[5]
        if (step, micro_step) == at:
            os.kill(os.getpid(), signum)
        return draw(*args, **kwargs)

    monkeypatch.setattr(loop, "draw_for_batch", drawing)


def test_sigusr1_mid_step_drops_the_unfinished_step_and_the_resumed_run_is_bit_exact(tmp_path, monkeypatch):
    """grad_accumulation 2, SIGUSR1 during micro-step 0 of step index 2: the stop is taken before micro-step
    1, the half step is dropped, the checkpoint is step 2 with the data position of step 2's start, and the
    resumed run replays step index 2 and ends where the uninterrupted run ends."""
    overrides = {"optimizer.grad_accumulation": 2, "checkpoint.stop_signal": "SIGUSR1"}
    Trainer(tiny_config(tmp_path / "straight", max_steps=5, **overrides)).run(stop_at=2)
    step_2 = tmp_path / "straight" / "checkpoints" / "step-0000002"
    straight_state = json.loads((step_2 / "trainer_state.json").read_text())
    Trainer.resume(tmp_path / "straight").run()
    trainer = Trainer(tiny_config(tmp_path / "stopped", max_steps=5, **overrides))
    previous = signal.getsignal(signal.SIGUSR1)
    with monkeypatch.context() as patch:
        _signal_at(patch, signal.SIGUSR1, (2, 0))
        result = trainer.run()
    assert signal.getsignal(signal.SIGUSR1) is previous, "the previous SIGUSR1 handler is back"
    assert result.step == 2 and result.checkpoint is not None and result.checkpoint.name == "step-0000002"
    stopped_state = json.loads((result.checkpoint / "trainer_state.json").read_text())
    position = (stopped_state["epoch"], stopped_state["batch"])
    assert position == (straight_state["epoch"], straight_state["batch"])
    assert all(parameter.grad is None for parameter in trainer.tensors.values()), "the half step's grads"
    Trainer.resume(tmp_path / "stopped").run()
    for file in ("adapter.safetensors", "optimizer.safetensors"):
        straight = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000005" / file))
        resumed = load_file(str(tmp_path / "stopped" / "checkpoints" / "step-0000005" / file))
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(resumed[name], tensor) for name, tensor in straight.items()), file


def test_stop_signal_none_installs_no_handler_and_bad_names_are_one_line(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path / "run", max_steps=1, **{"checkpoint.stop_signal": "none"}))
    seen = []
    with monkeypatch.context() as patch:
        patch.setattr(signal, "signal", lambda *args: seen.append(args))
        trainer.run()
    assert seen == []
    with pytest.raises(InputError, match="checkpoint.stop_signal") as caught:
        tiny_config(tmp_path / "bad", **{"checkpoint.stop_signal": "SIGKILL"})
    assert "\n" not in str(caught.value) and "SIGUSR1" in str(caught.value)


def test_the_old_save_on_sigterm_key_still_reads():
    from pusa_fw_train.config_sections import CheckpointSection

    assert CheckpointSection(save_on_sigterm=False).stop_signal == "none"
    assert CheckpointSection(save_on_sigterm=True).stop_signal == "SIGTERM"
    assert "save_on_sigterm" not in CheckpointSection().model_dump()


def test_single_file_checkpoints_of_a_sharded_full_run_are_refused_in_one_line():
    from pusa_fw_train.trainer_checkpoints import check_checkpoint_format

    with pytest.raises(InputError, match="checkpoint.format='safetensors'.*'dcp'") as caught:
        check_checkpoint_format("safetensors", "full", "fsdp", 2)
    assert "\n" not in str(caught.value)
    for allowed in (("safetensors", "lora", "fsdp", 2), ("safetensors", "full", "fsdp", 1),
                    ("safetensors", "full", "ddp", 2), ("auto", "full", "fsdp", 2),
                    ("dcp", "full", "fsdp", 2)):
        check_checkpoint_format(*allowed)
