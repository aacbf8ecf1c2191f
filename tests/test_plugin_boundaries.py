"""Plugin boundaries: the Wan plugin names no other plugin, the core imports no plugin, and the trainer
plugin imports no backbone plugin.

The toy plugin reaches the Wan loader only through registered model formats and training sources; the
trainer reaches Wan only through its registered training adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pusa_fw
import pusa_fw_train
import pusa_fw_wan
from pusa_fw.model_formats import detect_model_format
from pusa_fw.plugins import get_registry

from import_walk import imported_modules, package_modules


def _offending(package: object, forbidden: set[str]) -> list[str]:
    return [f"{path.name}:{line} imports {name}" for path, dotted in package_modules(package)
            for line, name in imported_modules(path, dotted) if name.split(".")[0] in forbidden]


def test_wan_plugin_imports_no_toy_module() -> None:
    assert len(package_modules(pusa_fw_wan)) > 40, "the walk must see the whole Wan plugin"
    offending = _offending(pusa_fw_wan, {"pusa_fw_toy"})
    assert not offending, "pusa_fw_wan must not import pusa_fw_toy:\n" + "\n".join(offending)


def test_wan_plugin_does_not_even_name_the_toy_plugin() -> None:
    """No string, lazy ``module:factory`` spec or comment of the Wan plugin names the toy package."""
    named = [str(path) for path, _ in package_modules(pusa_fw_wan)
             if "pusa_fw_toy" in path.read_text(encoding="utf-8")]
    assert not named, f"pusa_fw_wan names pusa_fw_toy in {named}"


def test_wan_plugin_imports_the_trainer_only_in_its_testing_helpers_and_export() -> None:
    """Besides hooks, Wan reads the trainer's checkpoints (export-lora of DCP shards) and builds configs."""
    allowed = ("train.py:", "export.py:")
    offending = [line for line in _offending(pusa_fw_wan, {"pusa_fw_train"}) if not line.startswith(allowed)]
    assert not offending, "pusa_fw_wan must reach the trainer only through hooks:\n" + "\n".join(offending)


def test_trainer_plugin_imports_no_backbone_plugin() -> None:
    assert len(package_modules(pusa_fw_train)) > 15, "the walk must see the whole trainer plugin"
    offending = _offending(pusa_fw_train, {"pusa_fw_wan", "pusa_fw_toy"})
    assert not offending, "pusa_fw_train must reach backbones only through adapters:\n" + "\n".join(offending)


def test_the_wan_training_adapter_is_registered_by_the_wan_plugin() -> None:
    from pusa_fw_train.adapter import TrainAdapter, get_train_adapter

    assert get_registry().entry("train_adapters", "wan2.1-t2v").plugin == "wan"
    assert isinstance(get_train_adapter("wan2.1-t2v"), TrainAdapter)


def test_core_imports_neither_plugin() -> None:
    offending = _offending(pusa_fw, {"pusa_fw_wan", "pusa_fw_toy", "pusa_fw_train"})
    assert not offending, "the core must not import a plugin:\n" + "\n".join(offending)


def test_the_walk_catches_a_lazy_toy_import(tmp_path: Path) -> None:
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from pusa_fw_toy.model_dir import read_spec\n")
    assert [name for _, name in imported_modules(fake, "pusa_fw_wan.pipeline")] == ["pusa_fw_toy.model_dir"]


def test_the_toy_plugin_registers_its_format_and_source(tmp_path: Path) -> None:
    registry = get_registry()
    assert registry.entry("model_formats", "pusa-fw-toy").plugin == "toy"
    assert registry.entry("training_sources", "toy-world").plugin == "toy"
    formats = registry.model_formats()
    assert detect_model_format(tmp_path, formats) is None, "an empty directory is no registered format"
    (tmp_path / "toy.json").write_text("{}")
    assert detect_model_format(tmp_path, formats).name == "pusa-fw-toy"


def test_a_toy_dir_resolves_through_the_registered_format(tmp_path: Path) -> None:
    from pusa_fw.errors import InputError
    from pusa_fw_wan.pipeline.loading import model_geometry, resolve_model_paths

    from pusa_fw_toy.model_dir import ToyModelSpec

    (tmp_path / "toy.json").write_text(ToyModelSpec().model_dump_json())
    paths = resolve_model_paths(tmp_path, None, None, None)
    assert paths.format == "pusa-fw-toy" and paths.vae == tmp_path
    assert model_geometry(paths) == ToyModelSpec().codec.geometry()
    with pytest.raises(InputError, match="drop --vae"):
        resolve_model_paths(tmp_path, tmp_path / "vae.pth", None, None)
