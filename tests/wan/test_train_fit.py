"""The training step fits: a tiny Wan overfits one fixed batch (LoRA and full), and gradient
checkpointing leaves the trained gradients unchanged."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.fafm import masked_frame_mean
from pusa_fw.ptss import PTSS
from pusa_fw.training_data import InMemorySource
from pusa_fw_wan.testing.train import tiny_config
from pusa_fw_train.lora import trainable_tensors
from pusa_fw_wan.train.adapter import WanTrainAdapter
from pusa_fw_train.build import build_model, build_optimizer
from pusa_fw_train.step import collate, draw_for_batch, frame_loss_terms

pytestmark = pytest.mark.usefixtures("one_thread")


def _fixed_batch(config):
    source = InMemorySource.random(2, (16, 3, 4, 4), (4, 16), seed=7)
    batch = collate([source.load(0), source.load(1)], [0, 1], torch.device("cpu"))
    draws = draw_for_batch(
        PTSS(p_async=1.0, held_probability=0.5, held_frames=1),
        batch.latents.shape,
        batch.indices,
        seed=0,
        step=0,
        micro_step=0,
        device=torch.device("cpu"),
    )
    return batch, draws


# The LoRA run also adapts the output linear (head.head): with Pusa's targets only, the frozen head's
# non-affine LayerNorm fixes every token's output norm, so a random base can only get ~4.5x closer to an
# arbitrary fixed target (measured 3.29 -> 0.73), whatever the rank or learning rate.
@pytest.mark.parametrize(("mode", "lr"), [("lora", 2e-2), ("full", 1e-2)])
def test_tiny_wan_overfits_one_fixed_batch(tmp_path, mode, lr):
    config = tiny_config(
        tmp_path,
        mode=mode,
        **{
            "lora.rank": 8,
            "lora.alpha": 8.0,
            "lora.targets": ["q", "k", "v", "o", "ffn.0", "ffn.2", "head.head"],
            "model.architecture.dim": 64,
            "model.architecture.ffn_dim": 128,
        },
    )
    model, _ = build_model(config, WanTrainAdapter())
    optimizer, _ = build_optimizer(model, config.optimizer)
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = 0.0
    batch, draws = _fixed_batch(config)
    losses = []
    for _ in range(40):
        terms, _ = frame_loss_terms(model, batch, draws)
        loss = masked_frame_mean(terms, None, draws.loss_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 10, f"{mode}: loss went from {losses[0]:.4f} to {losses[-1]:.4f}"


def test_lora_starts_as_the_base_and_trains_only_the_factors(tmp_path):
    config = tiny_config(tmp_path)
    model, targets = build_model(config, WanTrainAdapter())
    assert len(targets) == 2 * 10 and "blocks.1.ffn.2" in targets and "blocks.0.cross_attn.o" in targets
    tensors = trainable_tensors(model)
    assert set(tensors) == {f"{t}.lora_{half}.weight" for t in targets for half in "AB"}
    assert all(t.dtype == torch.float32 for t in tensors.values())
    assert all(
        float(tensors[f"{t}.lora_B.weight"].detach().abs().max()) == 0 for t in targets
    )  # B = 0: base model


def _gradients(config, checkpointing: bool) -> dict[str, torch.Tensor]:
    model, _ = build_model(config, WanTrainAdapter())
    model.enable_gradient_checkpointing(checkpointing)
    with torch.no_grad():  # non-zero B so that the A factors get gradients too
        for name, tensor in trainable_tensors(model).items():
            if name.endswith("lora_B.weight"):
                tensor.normal_(generator=torch.Generator().manual_seed(len(name)))
    batch, draws = _fixed_batch(config)
    terms, _ = frame_loss_terms(model, batch, draws)
    masked_frame_mean(terms, None, draws.loss_mask).backward()
    return {name: tensor.grad.clone() for name, tensor in trainable_tensors(model).items()}


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_gradient_checkpointing_gives_the_same_trained_gradients(tmp_path, mode):
    config = tiny_config(tmp_path, mode=mode)
    plain = _gradients(config, checkpointing=False)
    checkpointed = _gradients(config, checkpointing=True)
    assert plain.keys() == checkpointed.keys()
    for name, gradient in plain.items():
        assert float(gradient.abs().max()) > 0, f"{name} got no gradient"
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_training_loss_and_validation_noise_through_the_core_fafm_forward(tmp_path, monkeypatch):
    """One noising function in the project: the trainer's loss and its validation call `noise_latents`."""
    import pusa_fw.fafm as fafm
    from pusa_fw_train.trainer import Trainer

    calls = []
    original = fafm.noise_latents

    def counting(x0, eps, sigmas):
        calls.append(tuple(x0.shape))
        return original(x0, eps, sigmas)

    monkeypatch.setattr(fafm, "noise_latents", counting)
    config = tiny_config(tmp_path / "run", max_steps=1, **{"validation.every": 1, "validation.num_samples": 1,
                                                            "validation.plans": ["t2v"]})
    Trainer(config).run()
    # one training forward of the global batch (2 samples), then one per validation level (5 sigma bins)
    assert calls[0] == (2, 16, 3, 4, 4)
    assert calls[1:] == [(1, 16, 3, 4, 4)] * 5
