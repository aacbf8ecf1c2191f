"""The core stands alone: it names no plugin, and it works without transformers, peft, av, diffusers, matplotlib."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pusa_fw
from import_walk import imported_modules

PLUGIN_PACKAGES = ("pusa_fw_schedules", "pusa_fw_wan")


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(Path(pusa_fw.__file__).parent.parent).with_suffix("").parts[:-1])


def test_no_core_module_imports_a_plugin() -> None:
    modules = sorted(Path(pusa_fw.__file__).parent.rglob("*.py"))
    assert len(modules) > 30, "the walk must see the whole core package"
    offending = [
        f"{path.relative_to(Path(pusa_fw.__file__).parent.parent)}:{line} imports {name}"
        for path in modules
        for line, name in imported_modules(path, _package_of(path))
        if name.split(".")[0] in PLUGIN_PACKAGES
    ]
    assert not offending, "the core must not import a plugin:\n" + "\n".join(offending)


def test_the_import_walk_catches_plugin_imports(tmp_path: Path) -> None:
    probe = Path(pusa_fw.__file__).parent / "samplers" / "base.py"
    names = [name for _, name in imported_modules(probe, _package_of(probe))]
    assert "pusa_fw.plan" in names, "relative imports are resolved against the package"
    fake = tmp_path / "probe.py"
    fake.write_text("import pusa_fw_wan.dit\ndef f():\n    from pusa_fw_schedules import grids\n")
    assert [name for _, name in imported_modules(fake, "pusa_fw")] == ["pusa_fw_wan.dit", "pusa_fw_schedules"]


def test_core_works_with_heavy_packages_blocked() -> None:
    script = textwrap.dedent(
        """
        import sys
        BLOCKED = {"transformers", "peft", "av", "diffusers", "matplotlib", "PIL"}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked in this test")
                return None

        sys.meta_path.insert(0, Blocker())
        import torch
        import pusa_fw
        from pusa_fw.plugins import get_registry
        from pusa_fw.registry_lookup import lookup
        from pusa_fw.testing.fakes import ExactVelocityBackbone, FrameTargets

        registry = get_registry()
        assert "wan2.1-t2v" in registry.names("backbones")
        plan = lookup("tasks", "keyframes")(positions=[0, 8]).plan(num_frames=9, num_steps=3)
        x0 = torch.randn(1, 2, plan.num_latent_frames, 2, 2)
        out = pusa_fw.sample(ExactVelocityBackbone(), plan, torch.randn_like(x0), sampler="unipc",
                             source=x0, context=FrameTargets(x0))
        assert float((out - x0).abs().max()) < 1e-4
        print("ok", sorted(m for m in BLOCKED if m in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"
