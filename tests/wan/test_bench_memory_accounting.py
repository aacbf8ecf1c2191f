"""The memory model's accounting on the meta device equals the same accounting on real CPU tensors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pusa_fw_wan import WanConfig

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench_memory():
    spec = importlib.util.spec_from_file_location("bench_memory_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


CONFIG = WanConfig(dim=256, ffn_dim=512, num_heads=2, text_dim=64, text_len=16, num_layers=2)


@pytest.mark.parametrize(
    ("mode", "weights_dtype", "rank"),
    [
        ("inference", "bfloat16", None),
        ("inference", "float8_e4m3fn", None),
        ("train", "bfloat16", 4),
        ("train_ckpt", "float8_e4m3fn", 4),
    ],
)
def test_meta_accounting_equals_real_tensors(bench_memory, mode, weights_dtype, rank) -> None:
    meta = bench_memory.build(2, weights_dtype, rank, config=CONFIG)
    real = bench_memory.build(2, weights_dtype, rank, config=CONFIG, device="cpu")
    on_meta = bench_memory.run_blocks(meta, (4, 6), mode, frames=3)
    on_cpu = bench_memory.run_blocks(real, (4, 6), mode, frames=3)
    assert on_meta == on_cpu and on_meta["peak"] > 0


def test_fit_is_exact_on_a_line_and_reports_its_residual(bench_memory) -> None:
    exact = bench_memory.fit([10, 20, 40], [3.0 + 2.0 * n for n in (10, 20, 40)])
    assert exact["a"] == pytest.approx(3.0) and exact["b"] == pytest.approx(2.0) and exact["fit_error"] < 1e-9
    bent = bench_memory.fit([10, 20, 40], [10.0, 20.0, 80.0])
    assert bent["fit_error"] > 0.05


def test_activation_offload_keeps_no_block_input_on_the_device(bench_memory, monkeypatch) -> None:
    monkeypatch.setattr(bench_memory, "OFFLOAD_MIN_BYTES", 0)  # the tiny model's tensors are all small
    frames, grid = 3, (4, 6)
    tokens = frames * grid[0] * grid[1]
    passes = {}
    # 2 and 3 blocks: the text, RoPE and time tensors given to every block are saved more than once in both,
    # so they stay on the device in both passes and only the per-block terms differ.
    for layers in (2, 3):
        config = CONFIG.model_copy(update={"num_layers": layers})
        model = bench_memory.build(layers, "bfloat16", 4, config=config)
        passes[layers] = {
            mode: bench_memory.run_blocks(model, grid, mode, frames=frames)
            for mode in ("train_ckpt", "train_ckpt_offload")
        }
    kept = {mode: passes[3][mode]["kept"] - passes[2][mode]["kept"] for mode in passes[2]}
    assert kept["train_ckpt"] == tokens * CONFIG.dim * 4  # each checkpointed block keeps its fp32 input
    assert kept["train_ckpt_offload"] == 0  # ... which offload moves to the host
    host = passes[3]["train_ckpt_offload"]["host_peak"] - passes[2]["train_ckpt_offload"]["host_peak"]
    assert host == tokens * CONFIG.dim * 4
    assert passes[2]["train_ckpt"]["host_peak"] == 0


def test_goals_say_met_or_missed_by_how_much(bench_memory) -> None:
    gib = 2**30
    rows = [
        {"what": "LoRA r512", "resolution": "480p", "base": "bfloat16", "setup": "ckpt, 1 GPU",
         "bytes": 90 * gib, "host_bytes": 0},
        {"what": "LoRA r512", "resolution": "480p", "base": "float8_e4m3fn", "setup": "ckpt, block swap 38",
         "bytes": 70 * gib, "host_bytes": 40 * gib},
        {"what": "LoRA r512", "resolution": "480p", "base": "bfloat16", "setup": "ckpt, 8-GPU FSDP2",
         "bytes": 20 * gib, "host_bytes": 0},
        {"what": "LoRA r64", "resolution": "480p", "base": "float8_e4m3fn", "setup": "ckpt, block swap 38",
         "bytes": 26.5 * gib, "host_bytes": 13 * gib},
        {"what": "LoRA r64", "resolution": "512sq", "base": "float8_e4m3fn", "setup": "ckpt, block swap 38",
         "bytes": 10 * gib, "host_bytes": 13 * gib},
    ]
    r512, r64 = bench_memory.goals(rows)
    assert r512.startswith("LoRA r512 on one 80 GB GPU: met") and "block swap 38: 70.0 GiB" in r512
    assert r64.startswith("LoRA r64 on one 24 GB GPU: missed by 2.5 GiB")


def test_token_chunks_lower_the_backward_peak_of_a_checkpointed_block(bench_memory, monkeypatch) -> None:
    monkeypatch.setattr(bench_memory, "OFFLOAD_MIN_BYTES", 0)
    peaks = []
    for chunks in (1, 3):
        model = bench_memory.build(2, "bfloat16", 4, config=CONFIG, token_chunks=chunks)
        passes = bench_memory.run_blocks(model, (4, 6), "train_ckpt_offload", frames=3)
        peaks.append(passes["peak"])
    assert peaks[1] < peaks[0]


# ---------------------------------------------------------------- Wan2.2 TI2V-5B


def test_5b_size_is_the_released_ti2v_at_720p_x_121(bench_memory) -> None:
    from pusa_fw_wan.hooks import WAN22_TI2V_GEOMETRY

    size = bench_memory.SIZE_5B
    config = size.config(30)
    assert config.is_ti2v and (config.dim, config.num_heads, config.ffn_dim, config.text_dim) == (3072, 24, 14336, 4096)
    assert (config.in_dim, config.out_dim, config.patch_size, size.num_blocks) == (48, 48, (1, 2, 2), 30)
    # 121 frames at 704x1280 through the Wan2.2 VAE (/16) and the 2x2 patch: 31 x 22 x 40 = 27,280 tokens
    channels, latent_frames, height, width = WAN22_TI2V_GEOMETRY.latent_shape(*size.clip["720p"])
    assert (channels, latent_frames) == (48, size.frames)
    assert (height // 2, width // 2) == size.resolutions["720p"]
    assert size.frames * size.resolutions["720p"][0] * size.resolutions["720p"][1] == 27_280
    assert -(-size.frames // size.token_chunks) == 3  # groups of 3 latent frames, as the 14B's 7 of 21


TI2V_TINY = WanConfig(model_type="ti2v", in_dim=48, out_dim=48, dim=256, ffn_dim=512, num_heads=2, text_dim=64,
                      text_len=16, num_layers=2)


@pytest.mark.parametrize(("mode", "rank"), [("inference", None), ("train_ckpt", 4)])
def test_meta_accounting_equals_real_tensors_for_a_48_channel_dit(bench_memory, mode, rank) -> None:
    meta = bench_memory.build(2, "bfloat16", rank, config=TI2V_TINY)
    real = bench_memory.build(2, "bfloat16", rank, config=TI2V_TINY, device="cpu")
    assert bench_memory.run_blocks(meta, (4, 6), mode, frames=3) == bench_memory.run_blocks(real, (4, 6), mode, frames=3)


def test_pusa_lora_targets_cover_every_5b_block_linear(bench_memory) -> None:
    one = bench_memory.build(1, "bfloat16", 512, config=bench_memory.config_5b(1))
    trainable = sum(p.numel() for p in one.blocks[0].parameters() if p.requires_grad)
    # q, k, v, o of self- and cross-attention (3072 -> 3072) and ffn.0 / ffn.2 (3072 <-> 14336), rank 512
    assert trainable == 512 * (8 * (3072 + 3072) + 2 * (3072 + 14336)) == 42_991_616


def test_5b_vae_decode_at_720p_x_121_is_tiled_under_the_budget(bench_memory) -> None:
    vae = bench_memory.wan22_vae()
    decode = bench_memory.decode_terms(bench_memory.SIZE_5B, vae)
    at720, at480 = decode["720p"], decode["480p"]
    assert at720["video"] == 3 * 121 * 704 * 1280 * 4
    assert at720["untiled"] > at720["budget"] and at720["tiles"] is not None  # 18.3 GiB untiled: tiled
    count, tile_height, tile_width = at720["tiles"]
    assert count >= 2 and tile_height % 16 == 0 and tile_width % 16 == 0
    assert vae.estimate_bytes(tile_height, tile_width) <= at720["budget"] < at720["untiled"]
    assert at480["tiles"] is None and at480["working"] == at480["untiled"] <= at480["budget"]


def _synthetic_5b_results() -> dict:
    """Round-number terms: 1 GB per block, 0.5 GB non-block, 1 kB/token of inference activations."""
    gb = 1e9
    line = {"a": 0.0, "b": 0.0, "fit_error": 0.0}
    return {
        "weights": {storage: {"block": gb, "non_block": 0.5 * gb} for storage in ("bfloat16", "float8_e4m3fn")},
        "inference": {storage: {"a": 0.0, "b": 1e3} for storage in ("bfloat16", "float8_e4m3fn")},
        "lora": {512: {"param_bytes_per_block": 0}, 64: {"param_bytes_per_block": 0}},
        "train": {f"{storage}/r{rank}/{mode}": {"kept_per_block": line, "peak_extra": line, "host_per_block": line,
                                                 "host_shared": line}
                  for storage in ("bfloat16", "float8_e4m3fn") for rank in (512, 64)
                  for mode in ("train", "train_ckpt", "train_ckpt_offload", "train_ckpt_offload+chunks11")},
        "pipeline": {"text_encoder": 11 * gb, "vae": 3 * gb,
                     "decode": {name: {"working": 6 * gb, "video": 1 * gb} for name in ("720p", "480p")}},
    }


def test_5b_inference_rows_take_the_peak_phase_of_each_placement(bench_memory) -> None:
    gb, context = 1e9, bench_memory.CUDA_CONTEXT
    rows = bench_memory.project(_synthetic_5b_results(), bench_memory.SIZE_5B)
    inference = {row["setup"].split(" (")[0]: row for row in rows
                 if row["what"] == "inference" and row["resolution"] == "720p" and row["base"] == "bfloat16"}
    activations = 27_280 * 1e3
    dit = 0.5 * gb + 30 * gb
    # resident: DiT + umT5 + VAE always there; the decode (6 + 1 GB) outweighs the activations (27 MB)
    assert inference["resident"]["bytes"] == dit + 14 * gb + 7 * gb + context
    assert inference["resident"]["peak_phase"] == "decode"
    # model offload: the whole DiT only while denoising, the umT5 only for the prompt, the VAE to decode
    assert inference["model offload"]["phases"] == {"text": 11 * gb + context,
                                                    "denoise": dit + activations + context,
                                                    "decode": 10 * gb + context}
    # block offload: 3 blocks + the rest while denoising; the umT5 phase is then the peak
    assert inference["block offload"]["bytes"] == 11 * gb + context
    assert inference["block offload"]["phases"]["denoise"] == 3.5 * gb + activations + context


def test_5b_goals_name_the_first_setup_that_fits_or_how_much_is_missing(bench_memory) -> None:
    gib = 2**30
    rows = [
        {"what": "inference", "resolution": "720p", "base": "bfloat16", "setup": "resident", "bytes": 30 * gib},
        {"what": "inference", "resolution": "720p", "base": "bfloat16", "setup": "model offload", "bytes": 14 * gib},
        {"what": "inference", "resolution": "720p", "base": "bfloat16", "setup": "block offload", "bytes": 12 * gib},
    ]
    for rank in (512, 64):
        for resolution in ("720p", "480p"):
            rows += [
                {"what": f"LoRA r{rank}", "resolution": resolution, "base": "bfloat16", "setup": "ckpt, 1 GPU",
                 "bytes": (40 if rank == 512 else 20) * gib, "host_bytes": 0},
                {"what": f"LoRA r{rank}", "resolution": resolution, "base": "float8_e4m3fn",
                 "setup": "ckpt + offload, swap 28", "bytes": (30 if rank == 512 else 10) * gib,
                 "host_bytes": 9 * gib},
            ]
    lines = bench_memory.goals_5b(rows)
    assert lines[0] == ("inference 720p x 121 on 24 GB: fits with bfloat16, model offload: 14.0 GiB device "
                        "(least: bfloat16, block offload: 12.0 GiB)")
    assert lines[1].startswith("inference 720p x 121 on 48 GB: fits with bfloat16, resident: 30.0 GiB device (least")
    assert lines[2] == ("LoRA r512 720p x 121 on 24 GB: missed by 6.0 GiB with float8_e4m3fn, ckpt + offload, "
                        "swap 28: 30.0 GiB device, 9.0 GiB host")
    assert lines[3].startswith("LoRA r512 720p x 121 on 48 GB: fits with bfloat16, ckpt, 1 GPU: 40.0 GiB device, "
                               "0.0 GiB host (least: float8_e4m3fn")
    assert lines[4].startswith("LoRA r64 720p x 121 on 24 GB: fits with bfloat16, ckpt, 1 GPU: 20.0 GiB")
