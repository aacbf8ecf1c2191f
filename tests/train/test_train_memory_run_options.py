"""``activation_offload`` and ``token_chunks`` as run options: the trainer attaches the offload and sets the
checkpointed chunks from the config, a run with them trains like one without (bit-identical for the offload,
within fp32 rounding for the chunks), and what cannot work is refused in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pusa_fw.errors import InputError
from pusa_fw_train import Trainer, activation_offload
from pusa_fw_train.build import set_up_trainable
from pusa_fw_wan.testing.train import tiny_config
from pusa_fw_wan.train.adapter import WanTrainAdapter

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(tmp_path, name: str, **options):
    config = tiny_config(
        tmp_path / name, max_steps=3, gradient_checkpointing=True, **{"validation.every": 0}, **options
    )
    trainer = Trainer(config)
    trainer.run()
    return trainer


def test_an_offload_run_moves_the_block_inputs_and_ends_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(activation_offload, "DEFAULT_MIN_BYTES", 1)  # the tiny model's inputs are small
    plain = _run(tmp_path, "plain")
    offloaded = _run(tmp_path, "offloaded", activation_offload=True)
    assert plain.activation_offload is None
    offload = offloaded.activation_offload
    assert offload is not None and offload.packed > 0 and offload.unpacked > 0
    for name, tensor in plain.tensors.items():
        assert torch.equal(offloaded.tensors[name], tensor), name


def test_token_chunks_reach_every_block_and_train_like_one_pass(tmp_path):
    plain = _run(tmp_path, "plain")
    chunked = _run(tmp_path, "chunked", token_chunks=3)
    assert [block.token_chunks for block in chunked.model.blocks] == [3] * len(chunked.model.blocks)
    for name, tensor in plain.tensors.items():
        torch.testing.assert_close(chunked.tensors[name], tensor, rtol=1e-5, atol=1e-6)


def test_offload_can_be_switched_on_when_a_run_resumes(tmp_path):
    straight = _run(tmp_path, "straight")
    paused = tiny_config(tmp_path / "paused", max_steps=3, gradient_checkpointing=True)
    Trainer(paused).run(stop_at=2)
    resumed = Trainer.resume(tmp_path / "paused", paused.model_copy(update={"activation_offload": True}))
    assert resumed.activation_offload is not None
    resumed.run()
    for name, tensor in straight.tensors.items():
        assert torch.equal(resumed.tensors[name], tensor), name


def test_token_chunks_without_checkpointing_is_one_line(tmp_path):
    with pytest.raises(InputError, match="token_chunks = 4 .* gradient_checkpointing = true or token_chunks = 1"):
        tiny_config(tmp_path, gradient_checkpointing=False, token_chunks=4)


class _NoChunks(nn.Module):
    """A model that checkpoints but has no token chunks."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.checkpointing = False

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.checkpointing = enabled


class _NoCheckpointing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)


@pytest.mark.parametrize(
    ("model", "overrides", "message"),
    [
        (_NoChunks(), {"token_chunks": 2}, "enable_gradient_checkpointing takes no token_chunks; set token_chunks = 1"),
        (_NoCheckpointing(), {"activation_offload": True}, "activation_offload needs gradient checkpointing.*"
                                                            "set activation_offload = false"),
        (_NoCheckpointing(), {"token_chunks": 2}, "token_chunks needs gradient checkpointing.*set token_chunks = 1"),
    ],
)
def test_options_a_model_cannot_honour_are_refused_naming_the_field(tmp_path, model, overrides, message):
    config = tiny_config(tmp_path, mode="full", gradient_checkpointing=True, **overrides)
    with pytest.raises(InputError, match=message) as raised:
        set_up_trainable(model, config, WanTrainAdapter())
    assert "\n" not in str(raised.value)
