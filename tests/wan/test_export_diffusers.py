"""``export-lora`` files loaded by the real diffusers (0.42, the test extra), as a diffusers user loads them.

Each test exports a LoRA (rank 4, alpha 6: scale 1.5, so an ignored alpha shows) from a checkpoint in the
training contract, loads it into a diffusers ``WanTransformer3DModel`` holding the same base weights as
our tiny `WanDiT`, through ``WanPipeline.load_lora_weights`` or ``WanTransformer3DModel.load_lora_adapter``,
and checks that

- diffusers injected a LoRA layer into exactly the exported modules (none dropped, none invented), and
  logged no warning and raised no warning (unexpected or missing LoRA keys are warnings in diffusers);
- after ``fuse_lora()`` every weight equals our own merge (`apply_loras(..., merge=True)`) mapped to the
  diffusers names: the untouched ones bit for bit, the patched ones within the fp32 rounding bound below,
  and both equal to ``W + alpha / rank * B @ A`` written out here.

Rounding bound: both sides compute ``W + s * (B @ A)`` in fp32 (diffusers' ComfyUI-layout converter folds
``s`` into A first). A rank-r dot product, a scaling and an addition each round with a relative error of at
most ``eps`` per operation on the magnitudes involved, so either side is within ``(r + 3) * eps * (|W| + s *
|B| @ |A|)`` of the exact value, and the two within twice that: ``2 * (4 + 3) = 14 <= 16`` eps.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import diffusers
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pusa_fw_wan.dit.config import WanConfig
from pusa_fw_wan.dit.key_mapping import official_to_diffusers
from pusa_fw_wan.dit.model import WanDiT
from pusa_fw_wan.lora import LoraSpec, apply_loras
from pusa_fw_wan.lora.formats import load_lora_state
from pusa_fw_wan.lora.names import original_to_diffusers
from pusa_fw_wan.lora.targets import base_layer
from pusa_fw_wan.testing.tiny import randomise_parameters
from pusa_fw_wan.train.export import export_lora

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = WanConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, freq_dim=32, text_dim=32)
RANK, ALPHA = 4, 6.0
ADAPTER = "exported"
BOUND_EPS = 16
BLOCK_TARGETS = tuple(
    f"blocks.{block}.{attention}.{projection}"
    for block in range(CONFIG.num_layers)
    for attention in ("self_attn", "cross_attn")
    for projection in "qkvo"
) + tuple(f"blocks.{block}.ffn.{index}" for block in range(CONFIG.num_layers) for index in (0, 2))
"""Pusa's default targets (every attention projection and both FFN linears of every block)."""
TOP_LEVEL_TARGETS = (
    "head.head",
    "time_projection.1",
    "text_embedding.0",
    "text_embedding.2",
    "time_embedding.0",
    "time_embedding.2",
)
"""Every other Linear of the DiT: a LoRA may adapt them too (``lora.targets``)."""


def base_dit() -> WanDiT:
    return randomise_parameters(WanDiT(CONFIG), torch.Generator().manual_seed(0)).eval()


def write_run(
    directory: Path, modules: tuple[str, ...]
) -> tuple[Path, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """A run directory with one checkpoint (training contract) whose adapter adapts `modules`."""
    model, generator = base_dit(), torch.Generator().manual_seed(5)
    pairs, tensors = {}, {}
    for name in modules:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)
        down = 0.3 * torch.randn(RANK, layer.in_features, generator=generator)
        up = 0.3 * torch.randn(layer.out_features, RANK, generator=generator)
        pairs[name] = (down, up)
        tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = down, up
    checkpoint = directory / "checkpoints" / "step-0000007"
    checkpoint.mkdir(parents=True)
    metadata = {"format": "pusa-fw-lora", "rank": str(RANK), "alpha": str(ALPHA), "targets": "[]"}
    save_file(tensors, str(checkpoint / "adapter.safetensors"), metadata=metadata)
    (directory / "checkpoints" / "latest").write_text(checkpoint.name)
    return directory, pairs


def our_merge(path: Path) -> dict[str, torch.Tensor]:
    """Our loader's merged DiT weights under their diffusers names."""
    model = base_dit()
    apply_loras(model, [LoraSpec(path, name="ours")], merge=True)
    merged = {}
    for key in base_dit().state_dict():
        module_path, _, attribute = key.rpartition(".")
        merged[official_to_diffusers(key)] = getattr(base_layer(model.get_submodule(module_path)), attribute)
    return merged


def diffusers_transformer() -> diffusers.WanTransformer3DModel:
    transformer = diffusers.WanTransformer3DModel(**CONFIG.to_diffusers_kwargs())
    base = {official_to_diffusers(key): value for key, value in base_dit().state_dict().items()}
    transformer.load_state_dict(base, strict=True)
    return transformer.eval()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_with_diffusers(path: Path, entry: str) -> tuple[diffusers.WanTransformer3DModel, object]:
    """Load `path` the way a diffusers user does; any diffusers warning (logged or raised) fails the test."""
    transformer = diffusers_transformer()
    pipeline = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None,
                                     transformer=transformer)
    records, logger = _Records(), logging.getLogger("diffusers")  # diffusers' loggers do not propagate
    logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            if entry == "pipeline":
                pipeline.load_lora_weights(str(path), adapter_name=ADAPTER)
            else:
                transformer.load_lora_adapter(str(path), prefix="transformer", adapter_name=ADAPTER)
    finally:
        logger.removeHandler(records)
    assert not records.messages, f"diffusers warned while loading: {records.messages}"
    assert not [str(w.message) for w in raised], f"warnings while loading: {[str(w.message) for w in raised]}"
    return transformer, pipeline


def injected_modules(transformer: nn.Module) -> set[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {
        name
        for name, module in transformer.named_modules()
        if isinstance(module, BaseTunerLayer) and ADAPTER in getattr(module, "lora_A", {})
    }


def fused_weights(transformer: nn.Module) -> dict[str, torch.Tensor]:
    """The transformer's weights after fusing, under plain diffusers names (peft's wrappers peeled off)."""
    return {
        key.replace(".base_layer.", "."): value
        for key, value in transformer.state_dict().items()
        if ".lora_" not in key
    }


def check_fused_against_ours(
    fused: dict[str, torch.Tensor], exported: Path, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> None:
    ours = our_merge(exported)
    base = {official_to_diffusers(key): value for key, value in base_dit().state_dict().items()}
    assert set(fused) == set(ours)
    patched = {original_to_diffusers(name): name for name in pairs}
    eps = torch.finfo(torch.float32).eps
    for key, value in fused.items():
        module = key.rpartition(".")[0]
        if module not in patched or not key.endswith(".weight"):
            assert torch.equal(value, base[key]) and torch.equal(ours[key], base[key]), key
            continue
        down, up = pairs[patched[module]]
        by_hand = base[key] + ALPHA / RANK * (up @ down)
        bound = BOUND_EPS * eps * (base[key].abs() + ALPHA / RANK * (up.abs() @ down.abs()))
        assert (value - base[key]).abs().max() > 1e-2, f"{key} was not patched"
        assert ((value - ours[key]).abs() <= bound).all(), f"{key}: {(value - ours[key]).abs().max()}"
        assert ((by_hand - ours[key]).abs() <= bound).all(), f"{key}: ours vs W + alpha/r B A"


CASES = [
    pytest.param("diffusers", "pipeline", BLOCK_TARGETS + TOP_LEVEL_TARGETS, id="diffusers-pipeline"),
    pytest.param("diffusers", "model", BLOCK_TARGETS + TOP_LEVEL_TARGETS, id="diffusers-load_lora_adapter"),
    pytest.param("comfyui", "pipeline", BLOCK_TARGETS, id="comfyui-pipeline"),
]


@pytest.mark.parametrize(("layout", "entry", "targets"), CASES)
def test_diffusers_loads_every_tensor_and_fuses_to_our_merge(tmp_path, layout, entry, targets):
    run, pairs = write_run(tmp_path / "run", targets)
    exported = export_lora(run, tmp_path / f"{layout}.safetensors", layout=layout)
    assert exported.modules == len(targets)
    transformer, pipeline = load_with_diffusers(exported.path, entry)
    assert injected_modules(transformer) == {original_to_diffusers(name) for name in targets}
    if entry == "pipeline":
        pipeline.fuse_lora(components=["transformer"])
    else:
        transformer.fuse_lora()
    check_fused_against_ours(fused_weights(transformer), exported.path, pairs)


def test_diffusers_refuses_comfyui_layout_with_top_level_targets_instead_of_dropping_them(tmp_path):
    """diffusers 0.42's ComfyUI-layout converter leaves the ``.alpha`` of non-block Linears behind and raises:
    such a LoRA must be exported with ``--layout diffusers`` for diffusers (README). It must never load
    with those modules silently missing."""
    run, _ = write_run(tmp_path / "run", BLOCK_TARGETS[:2] + ("head.head",))
    exported = export_lora(run, tmp_path / "comfyui.safetensors", layout="comfyui")
    pipeline = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None,
                                     transformer=diffusers_transformer())
    with pytest.raises(ValueError, match=r"head\.head\.alpha"):
        pipeline.load_lora_weights(str(exported.path), adapter_name=ADAPTER)


def test_lora_saved_by_diffusers_reads_with_its_alpha(tmp_path):
    """A LoRA trained and saved the diffusers way (peft ``LoraConfig`` on the transformer, then
    ``WanPipeline.save_lora_weights`` with the config as metadata: keys ``transformer.lora_alpha``, ...)
    applies in our loader with scale alpha / rank, and merges to what diffusers fuses."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    from pusa_fw_wan.lora.names import diffusers_to_original

    modules = ["blocks.0.attn1.to_q", "blocks.1.attn2.to_out.0", "blocks.1.ffn.net.0.proj", "proj_out",
               "condition_embedder.time_proj"]
    transformer = diffusers_transformer()
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=modules)
    transformer.add_adapter(config, adapter_name=ADAPTER)
    generator, pairs = torch.Generator().manual_seed(9), {}
    with torch.no_grad():
        for name in modules:
            layer = transformer.get_submodule(name)
            down, up = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            down.copy_(0.3 * torch.randn(down.shape, generator=generator))
            up.copy_(0.3 * torch.randn(up.shape, generator=generator))
            pairs[diffusers_to_original(name)] = (down.detach().clone(), up.detach().clone())
    diffusers.WanPipeline.save_lora_weights(
        tmp_path,
        transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=ADAPTER),
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER].to_dict(),
    )
    saved = tmp_path / "pytorch_lora_weights.safetensors"
    with safe_open(str(saved), framework="pt") as handle:
        header = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert header["transformer.lora_alpha"] == ALPHA and "lora_alpha" not in header  # diffusers' own layout
    state = load_lora_state(saved)
    assert {diffusers_to_original(name) for name in modules} == set(state.modules)
    assert {entry.scale for entry in state.modules.values()} == {ALPHA / RANK}
    transformer.fuse_lora()
    check_fused_against_ours(fused_weights(transformer), saved, pairs)
