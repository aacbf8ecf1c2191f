"""The Wan backbone is registered through the plugin hook and loads a checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from pusa_fw.backbone import Backbone


def test_register_backbones_registers_a_loadable_factory(wan_reference_dir: Path) -> None:
    from pusa_fw_wan import WanDiT, hooks

    registered: list[tuple[object, str]] = []
    hooks.register_backbones(lambda component, name=None, aliases=(): registered.append((component, name)))
    assert [name for _, name in registered] == ["wan2.1-t2v", "wan2.2-ti2v-5b", "wan2.2-a14b"]
    factory = registered[0][0]
    assert factory.name == "wan2.1-t2v" and "\n" not in factory.summary and factory.summary
    model = factory.load(wan_reference_dir / "dit" / "single", dtype=torch.float32, device="cpu")
    assert isinstance(model, WanDiT) and isinstance(model, Backbone) and isinstance(model, torch.nn.Module)


def test_registry_lookup_finds_the_backbone() -> None:
    from pusa_fw.registry_lookup import lookup

    assert lookup("backbones", "wan2.1-t2v").name == "wan2.1-t2v"


def test_hooks_module_imports_nothing_heavy() -> None:
    code = (
        "import sys; import pusa_fw_wan.hooks; "
        "heavy = [m for m in ('transformers', 'peft', 'diffusers', 'pusa_fw_wan.dit.model') if m in sys.modules]; "
        "print(heavy)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"
