"""Memory options of a training run: a low-precision frozen base (``weights_dtype``) with float32 LoRA
factors, block swap of frozen block weights (gradients identical to no swap), ``device = "auto"``, and the
combinations refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pusa_fw.cli import main
from pusa_fw.errors import InputError
from pusa_fw.fafm import masked_frame_mean
from pusa_fw.ptss import PTSS
from pusa_fw.training_data import InMemorySource
from pusa_fw_train import Trainer
from pusa_fw_train.block_swap import BlockSwap
from pusa_fw_train.build import build_model, build_optimizer
from pusa_fw_train.lora import trainable_tensors
from pusa_fw_train.memory import resolve_device, resolve_weights_dtype
from pusa_fw_train.step import collate, draw_for_batch, frame_loss_terms
from pusa_fw_wan.dit.storage import LowPrecisionLinear
from pusa_fw_wan.testing.train import tiny_config
from pusa_fw_wan.train.adapter import PUSA_LORA_TARGETS, WanTrainAdapter

pytestmark = pytest.mark.usefixtures("one_thread")

LOW_PRECISION = ("bfloat16", "float8_e4m3fn")


def _fixed_batch(layers_seed: int = 7):
    source = InMemorySource.random(2, (16, 3, 4, 4), (4, 16), seed=layers_seed)
    batch = collate([source.load(0), source.load(1)], [0, 1], torch.device("cpu"))
    draws = draw_for_batch(
        PTSS(p_async=1.0), batch.latents.shape, batch.indices, seed=0, step=0, micro_step=0,
        device=torch.device("cpu"),
    )
    return batch, draws


def _base_linears(model: torch.nn.Module) -> list[LowPrecisionLinear]:
    return [module for module in model.modules() if isinstance(module, LowPrecisionLinear)]


@pytest.mark.parametrize("weights_dtype", LOW_PRECISION)
def test_a_low_precision_base_keeps_its_storage_and_the_lora_loss_falls(tmp_path, weights_dtype):
    config = tiny_config(
        tmp_path, weights_dtype=weights_dtype,
        **{"lora.rank": 8, "lora.alpha": 8.0, "lora.targets": [*PUSA_LORA_TARGETS, "head.head"]},
    )
    model, targets = build_model(config, WanTrainAdapter())
    linears = _base_linears(model)
    assert len(linears) == 2 * 10, "q, k, v, o of both attentions and ffn.0, ffn.2 of each block"
    assert {linear.weight.dtype for linear in linears} == {getattr(torch, weights_dtype)}
    assert not any(linear.weight.requires_grad for linear in linears)
    tensors = trainable_tensors(model)
    assert set(tensors) == {f"{t}.lora_{half}.weight" for t in targets for half in "AB"}
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())
    optimizer, _ = build_optimizer(model, config.optimizer)
    for group in optimizer.param_groups:
        group["lr"], group["weight_decay"] = 2e-2, 0.0
    batch, draws = _fixed_batch()
    losses = []
    for _ in range(25):
        terms, _ = frame_loss_terms(model, batch, draws)
        loss = masked_frame_mean(terms, None, draws.loss_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 3, f"{weights_dtype}: loss went from {losses[0]:.4f} to {losses[-1]:.4f}"
    moments = [state[key] for state in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq")]
    assert moments and all(moment.dtype == torch.float32 for moment in moments)
    assert {linear.weight.dtype for linear in _base_linears(model)} == {getattr(torch, weights_dtype)}


def _export_keys(run: Path, out: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    path = WanTrainAdapter().export_lora(run, out)
    with safe_open(str(path), "pt") as handle:
        return {key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype())
                for key in handle.keys()}


def test_a_bf16_base_run_exports_the_same_keys_as_a_float32_base(tmp_path):
    keys = {}
    for weights_dtype in ("float32", "bfloat16"):
        run = tmp_path / weights_dtype
        config = tiny_config(run, weights_dtype=weights_dtype, max_steps=2, precision="bf16")
        trainer = Trainer(config)
        assert resolve_weights_dtype(config, trainer.adapter) == weights_dtype
        result = trainer.run()
        assert result.checkpoint is not None
        keys[weights_dtype] = _export_keys(run, tmp_path / f"{weights_dtype}.safetensors")
    assert keys["bfloat16"] == keys["float32"] and len(keys["float32"]) > 0


def test_auto_weights_dtype_is_bf16_for_a_lora_under_bf16_and_float32_otherwise(tmp_path):
    adapter = WanTrainAdapter()
    assert resolve_weights_dtype(tiny_config(tmp_path, precision="bf16"), adapter) == "bfloat16"
    assert resolve_weights_dtype(tiny_config(tmp_path, precision="fp32"), adapter) == "float32"
    assert resolve_weights_dtype(tiny_config(tmp_path, precision="bf16", mode="full"), adapter) == "float32"


def _swap_model(weights_dtype: str, swap: int, tmp_path: Path):
    config = tiny_config(
        tmp_path,
        weights_dtype=weights_dtype,
        gradient_checkpointing=True,
        **{"model.architecture.num_layers": 3},
    )
    model, _ = build_model(config, WanTrainAdapter())
    with torch.no_grad():  # B = 0 at init would leave A without gradient: give both a value
        for tensor in trainable_tensors(model).values():
            generator = torch.Generator().manual_seed(tensor.numel())
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    block_swap = BlockSwap(model, swap, "cpu") if swap else None
    return model.to("cpu"), block_swap


@pytest.mark.parametrize("weights_dtype", ["float32", "float8_e4m3fn"])
@pytest.mark.parametrize("autocast", [False, True])
def test_block_swap_gradients_equal_no_swap(tmp_path, weights_dtype, autocast):
    batch, draws = _fixed_batch()
    grads = []
    for swap in (0, 2):
        model, block_swap = _swap_model(weights_dtype, swap, tmp_path)
        terms, _ = frame_loss_terms(model, batch, draws, autocast_dtype=torch.bfloat16 if autocast else None)
        masked_frame_mean(terms, None, draws.loss_mask).backward()
        grads.append({name: tensor.grad.clone() for name, tensor in trainable_tensors(model).items()})
        if block_swap is not None:
            # each swapped block is copied for its forward and again for its recomputation in the backward
            assert block_swap.copies == 2 * 2
            assert block_swap.host_bytes() > 0
            # never more than two swapped blocks' weights on the device, and none once the step is done
            per_block = block_swap.host_bytes() // 2
            assert per_block < block_swap.peak_live_bytes <= 2 * per_block
            model.zero_grad(set_to_none=True)
            del terms
            assert block_swap.live_bytes == 0
            for index in (1, 2):  # the last two blocks' frozen tensors are the host masters again
                base = model.blocks[index].ffn[0].base_layer
                assert base.weight.device.type == "cpu" and not base.weight.requires_grad
            assert not model.blocks[0].ffn[0].base_layer.weight.is_pinned()
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def test_a_block_swap_run_trains_and_validates_exactly_like_no_swap(tmp_path):
    weights, validations = [], []
    for swap in (0, 1):
        run = tmp_path / f"swap{swap}"
        config = tiny_config(
            run, max_steps=3, gradient_checkpointing=True, block_swap=swap,
            **{"validation.every": 2, "validation.num_samples": 1},
        )
        trainer = Trainer(config)
        assert (trainer.block_swap is None) == (swap == 0)
        trainer.run()
        weights.append({name: tensor.detach().clone() for name, tensor in trainer.tensors.items()})
        validations.append(trainer.validate())  # an eval forward without gradients through the swap
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert validations[0] == validations[1] and validations[0]


def test_block_swap_keeps_its_masters_where_to_leaves_them(tmp_path):
    model, block_swap = _swap_model("float32", 1, tmp_path)
    master = model.blocks[2].self_attn.q.base_layer.weight
    model.to(torch.float64)  # would convert every tensor; the swapped masters stay as they are
    assert model.blocks[2].self_attn.q.base_layer.weight is master and master.dtype == torch.float32
    assert model.blocks[1].self_attn.q.base_layer.weight.dtype == torch.float64


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"block_swap": 1, "mode": "full", "gradient_checkpointing": True}, "moves frozen weights only"),
        ({"block_swap": 1, "gradient_checkpointing": False}, "block_swap needs gradient_checkpointing"),
        ({"block_swap": 1, "gradient_checkpointing": True, "distributed": "fsdp"}, "cannot be combined"),
        ({"weights_dtype": "bfloat16", "mode": "full"}, "mode = 'full' trains every weight"),
        ({"weights_dtype": "float8_e4m3fn", "distributed": "fsdp"}, "FSDP2 sharding of fp8"),
        ({"weights_dtype": "int8"}, "weights_dtype"),
    ],
)
def test_combinations_that_cannot_work_are_refused_in_one_line(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message) as error:
        tiny_config(tmp_path, **overrides)
    assert "\n" not in str(error.value)


def test_block_swap_of_more_blocks_than_the_model_has_is_refused(tmp_path):
    config = tiny_config(tmp_path, gradient_checkpointing=True, block_swap=3)
    with pytest.raises(InputError, match="block_swap = 3 but the model has 2 blocks"):
        Trainer(config)


def test_device_auto_is_the_cpu_without_cuda_and_a_bad_device_is_one_line():
    expected = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="'gpu0' is not a torch device"):
        resolve_device("gpu0")


def test_cli_weights_dtype_flag_sets_the_run_field(tmp_path):
    from pusa_fw_train.config import apply_overrides

    run_file = tmp_path / "run.json"
    values = tiny_config(tmp_path / "run", max_steps=1).model_dump(mode="json")
    run_file.write_text(json.dumps(apply_overrides(values, {"precision": "bf16"})))
    assert main(["train", "--config", str(run_file), "--weights-dtype", "bfloat16", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["weights_dtype"] == "bfloat16"
    refused = ["train", "--config", str(run_file), "--weights-dtype", "float8_e5m2", "--set", 'mode="full"']
    assert main(refused) == 2


def test_the_defaults_fit_a_gpu(tmp_path):
    from pusa_fw_train.config import validate_train_config
    from pusa_fw_wan.testing.train import TINY_ARCHITECTURE

    values = {
        "output_dir": str(tmp_path),
        "max_steps": 1,
        "model": {"architecture": TINY_ARCHITECTURE},
        "lora": {"rank": 4, "alpha": 4.0},
        "data": {"source": "random"},
    }
    config = validate_train_config(values)
    assert (config.precision, config.device, config.weights_dtype) == ("bf16", "auto", "auto")
    model, _ = build_model(config, WanTrainAdapter())
    assert model.gradient_checkpointing is True, "a LoRA checkpoints by default"
    assert {linear.weight.dtype for linear in _base_linears(model)} == {torch.bfloat16}
    full, _ = build_model(validate_train_config({**values, "mode": "full"}), WanTrainAdapter())
    assert full.gradient_checkpointing is False and not _base_linears(full)
    assert all(parameter.dtype == torch.float32 for parameter in full.parameters())


@pytest.mark.slow  # ~60 s: one 2-process torchrun launch of three 3-step runs, one reference run
def test_fsdp_keeps_a_shard_per_rank_with_bf16_params_and_fp32_reduce(tmp_path):
    import subprocess

    import train_memory_worker as worker

    from pusa_fw_wan.parallel.launch import run_torchrun

    try:
        launched = run_torchrun([str(Path(worker.__file__)), str(tmp_path)], nproc=2, timeout=300,
                                env={"PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun did not finish within 300 s (a hang)")
    assert launched.returncode == 0, launched.stderr[-3000:]
    for name in worker.SCENARIOS:
        reports = [json.loads((tmp_path / f"{name}-rank{rank}.json").read_text()) for rank in (0, 1)]
        for report in reports:
            assert report["sharded"] and report["param_dtype"] == "torch.bfloat16"
            assert report["reduce_dtype"] == "torch.float32"
            assert report["trained_dtypes"] == report["moment_dtypes"] == ["torch.float32"]
            assert report["loss"] is not None and report["loss"] == report["loss"]  # finite, logged
        full = reports[0]["block_weight_full"]
        assert [report["block_weight_local"] for report in reports] == [full // 2, full // 2], name
        expected = "torch.bfloat16" if worker.SCENARIOS[name] == "lora" else "torch.float32"
        assert {report["block_weight_dtype"] for report in reports} == {expected}
    # DDP with block swap on two ranks ends where one process without swap ends (DDP's float tolerance)
    from safetensors.torch import load_file

    reference = Trainer(worker.swap_config(tmp_path, "none", block_swap=0)).run().checkpoint
    swapped = tmp_path / f"{worker.SWAP_SCENARIO}-ddp" / "checkpoints" / "step-0000003"
    expected_tensors = load_file(str(reference / "adapter.safetensors"))
    got = load_file(str(swapped / "adapter.safetensors"))
    assert got.keys() == expected_tensors.keys()
    for key, tensor in expected_tensors.items():
        torch.testing.assert_close(got[key], tensor, rtol=1e-5, atol=1e-5)


def test_a_run_resumes_with_another_block_swap_bit_identically(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "straight", max_steps=3, gradient_checkpointing=True))
    straight.run()
    paused = tiny_config(tmp_path / "paused", max_steps=3, gradient_checkpointing=True)
    Trainer(paused).run(stop_at=2)
    swapped = tiny_config(tmp_path / "paused", max_steps=3, gradient_checkpointing=True, block_swap=2)
    resumed = Trainer.resume(tmp_path / "paused", swapped)
    assert resumed.block_swap is not None and resumed.step == 2
    resumed.run()
    for name, tensor in straight.tensors.items():
        assert torch.equal(resumed.tensors[name], tensor), name


def test_block_swap_with_token_chunks_and_offload_is_accepted(tmp_path):
    """The README's low-memory recipe: block swap keeps the swapped block's device copies in place until
    the nested token-chunk checkpoints have been recomputed (tests/train/test_block_swap_token_chunks.py)."""
    config = tiny_config(tmp_path, gradient_checkpointing=True, block_swap=1, token_chunks=2,
                         activation_offload=True)
    assert (config.block_swap, config.token_chunks, config.activation_offload) == (1, 2, True)
