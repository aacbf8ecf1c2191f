"""The toy plugin reaches the Wan backbone only through pusa-fw's registries.

No toy module imports (or names) ``pusa_fw_wan``: the toy DiT is built by the registered training adapter,
saved, loaded and given LoRAs by the registered backbone factory (`pusa_fw.backbone.backbone_factory`), and
the generic helpers (conditioning media, file hashes, safetensors headers) come from the core.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import pusa_fw_toy
from pusa_fw.backbone import BACKBONE_CAPABILITIES, backbone_factory
from pusa_fw.errors import CheckpointError, InputError
from pusa_fw.io.files import file_sha256, tensor_shapes

from import_walk import imported_modules, package_modules

TEXT_SUFFIXES = {".py", ".toml", ".sh", ".json", ".md"}


def _wan_imports(files: list[tuple[Path, str]]) -> list[str]:
    return [f"{path.name}:{line} imports {name}" for path, dotted in files
            for line, name in imported_modules(path, dotted) if name.split(".")[0] == "pusa_fw_wan"]


def test_no_toy_module_imports_the_wan_plugin() -> None:
    modules = package_modules(pusa_fw_toy)
    assert len(modules) > 15, "the walk must see the whole toy plugin"
    offending = _wan_imports(modules)
    assert not offending, "pusa_fw_toy must reach Wan through the registries only:\n" + "\n".join(offending)


def test_the_walk_flags_a_lazy_wan_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def load():\n    from pusa_fw_wan.lora.apply import apply_loras\n"
                     "    from ..dit import model\n")
    assert _wan_imports([(probe, "pusa_fw_wan.pipeline")]) == [
        "probe.py:2 imports pusa_fw_wan.lora.apply", "probe.py:3 imports pusa_fw_wan.dit"]
    assert _wan_imports([(probe, "pusa_fw_toy")]) == ["probe.py:2 imports pusa_fw_wan.lora.apply"]


def test_no_toy_file_names_the_wan_package() -> None:
    """No string, lazy ``module:factory`` spec, recipe or script of the toy plugin names ``pusa_fw_wan``."""
    root = Path(pusa_fw_toy.__file__).parent
    files = [path for path in root.rglob("*") if path.suffix in TEXT_SUFFIXES]
    assert any(path.suffix == ".toml" for path in files) and any(path.suffix == ".sh" for path in files)
    named = [str(path.relative_to(root)) for path in files
             if "pusa_fw_wan" in path.read_text(encoding="utf-8")]
    assert not named, f"pusa_fw_toy names pusa_fw_wan in {named}"


def test_the_toy_backbone_offers_every_capability_through_the_registry() -> None:
    from pusa_fw_toy.model_dir import BACKBONE

    factory = backbone_factory(BACKBONE, needs=list(BACKBONE_CAPABILITIES))
    assert factory.name == BACKBONE


def test_a_missing_or_unknown_capability_is_a_clear_error() -> None:
    with pytest.raises(InputError, match=r"'wan2.2-a14b' \(plugin 'wan'\) has no save"):
        backbone_factory("wan2.2-a14b", needs=["save"])
    with pytest.raises(InputError, match="unknown backbone capabilities"):
        backbone_factory("wan2.1-t2v", needs=["fly"])


def test_save_and_load_round_trip_through_the_factory(toy_dir: Path, tmp_path: Path) -> None:
    from pusa_fw_toy.model_dir import BACKBONE, load_toy_models

    dit = load_toy_models(toy_dir).dit
    factory = backbone_factory(BACKBONE, needs=["save"])
    assert factory.save(dit, tmp_path / "copy") == tmp_path / "copy"
    again = factory.load(tmp_path / "copy").state_dict()
    state = dit.state_dict()
    assert set(again) == set(state) and all(torch.equal(again[key], state[key]) for key in state)
    assert tensor_shapes(tmp_path / "copy" / "diffusion_pytorch_model.safetensors") == {
        key: tuple(value.shape) for key, value in state.items()}


def test_apply_loras_through_the_factory_merges_scale_up_down(toy_dir: Path, toy_loras: list[Path]) -> None:
    """A merged LoRA of alpha = rank changes a target weight by `strength * up @ down`."""
    from pusa_fw_toy.model_dir import BACKBONE, load_toy_models

    dit = load_toy_models(toy_dir).dit
    base = {key: value.clone() for key, value in dit.state_dict().items()}
    path = toy_loras[0]
    pairs = load_file(str(path))
    backbone_factory(BACKBONE, needs=["apply_loras"]).apply_loras(dit, [(path, 0.5)], merge=True)
    merged = dict(dit.named_parameters())
    module = "blocks.0.self_attn.q"
    weight = merged.get(f"{module}.base_layer.weight", merged.get(f"{module}.weight"))  # peft wraps the layer
    delta = pairs[f"{module}.lora_B.weight"] @ pairs[f"{module}.lora_A.weight"]
    expected = base[f"{module}.weight"] + 0.5 * delta
    torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(weight, base[f"{module}.weight"])


def test_the_adapter_builds_default_or_random_init() -> None:
    from pusa_fw_train.adapter import get_train_adapter

    from pusa_fw_toy.model_dir import BACKBONE, ToyModelSpec, toy_architecture

    adapter = get_train_adapter(BACKBONE)
    architecture = toy_architecture(ToyModelSpec(), dim=16, num_layers=1)
    default = adapter.build_model(None, architecture, 5, init="default").state_dict()
    again = adapter.build_model(None, architecture, 5, init="default").state_dict()
    assert all(torch.equal(default[key], again[key]) for key in default), "the default init is seeded"
    random = adapter.build_model(None, architecture, 5).state_dict()
    bound = 1 / architecture["dim"] ** 0.5  # PyTorch's Linear init: uniform within +-1/sqrt(fan_in)
    assert default["blocks.0.ffn.0.weight"].abs().max() <= bound < random["blocks.0.ffn.0.weight"].abs().max()
    with pytest.raises(InputError, match="'gaussian'"):
        adapter.build_model(None, architecture, 5, init="gaussian")


def test_bad_toy_sizes_name_the_sizes_and_write_nothing(tmp_path: Path) -> None:
    from pusa_fw_toy.model_dir import build_toy_dir

    with pytest.raises(InputError, match=r"toy DiT sizes do not fit .*divisible.*--dim"):
        build_toy_dir(tmp_path / "toy", dim=7)
    assert not (tmp_path / "toy").exists()


def test_core_file_helpers(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4)}, str(path), metadata={"format": "pt"})
    assert tensor_shapes(path) == {"a": (2, 3), "b": (4,)}
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(CheckpointError, match="bad JSON header"):
        tensor_shapes(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="cannot read checkpoint file"):
        tensor_shapes(tmp_path / "missing.safetensors")


def test_wan_keeps_its_media_names_as_the_core_ones() -> None:
    import pusa_fw.conditioning_media as core
    from pusa_fw_wan.pipeline import media

    for name in core.__all__:
        assert getattr(media, name) is getattr(core, name), name
