"""The core and the plugin hooks import and work without transformers, peft, av, diffusers or matplotlib."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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
