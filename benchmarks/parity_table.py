"""Parity with the official Wan2.1 / Wan2.2 / Pusa code on the reference fixtures, as one table.

    .venv/bin/python benchmarks/parity_table.py [--json]

The fixtures (`tests/fixtures/wan_reference/`, see its README) hold tiny random-weight checkpoints in the
official key layouts and the outputs the official modules produced for fixed inputs, in fp32 on the CPU.
Each row loads our module from the fixture files and reports the max-abs difference with the official
output (the fp32 floor of the official code against itself is ~1.4e-6 .. 2.2e-6). The tests hold the same
comparisons to their bounds (`tests/wan/test_dit_parity_official.py`, `tests/wan/test_vae_parity.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "wan_reference"


def _max_abs(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.double() - theirs.double()).abs().max())


def dit_rows() -> list[tuple[str, float]]:
    """DiT: scalar timesteps against Wan2.1; per-frame timesteps against Wan2.2 and Pusa; through sigmas."""
    from pusa_fw_wan import WanDiT

    dit = WanDiT.from_pretrained(FIXTURES / "dit" / "single").eval()
    scalar = load_file(FIXTURES / "dit" / "dit_t2v_io.safetensors")
    vector = load_file(FIXTURES / "dit" / "dit_vectorized_io.safetensors")
    rows = []
    with torch.no_grad():
        errors = [_max_abs(dit.forward_timesteps(scalar["x"][None], timestep[None], scalar["context"][None])[0],
                           scalar["out"][index]) for index, timestep in enumerate(scalar["timesteps"])]
        rows.append(("DiT, scalar timesteps vs Wan2.1 WanModel", max(errors)))
        wan22, pusa, sigmas = [], [], []
        for index, frame_timesteps in enumerate(vector["frame_timesteps"]):
            out = dit.forward_timesteps(vector["x"][None], frame_timesteps[None], vector["context"][None])[0]
            wan22.append(_max_abs(out, vector["out"][index]))
            pusa.append(_max_abs(out, vector["out_pusa"][index]))
            via_plan = dit.velocity(vector["x"][None], (frame_timesteps.double() / 1000.0)[None],
                                    vector["context"][None])[0]
            sigmas.append(_max_abs(via_plan, vector["out"][index]))
        rows += [("DiT, one timestep per frame vs Wan2.2 per-token path", max(wan22)),
                 ("DiT, one timestep per frame vs Pusa WanModelPusa", max(pusa)),
                 ("DiT through float64 plan sigmas (velocity) vs Wan2.2", max(sigmas))]
    return rows


def vae_rows() -> list[tuple[str, float]]:
    """VAE: encode (mu, normalised latent) and decode (unclamped, clamped) against the official VAE."""
    from pusa_fw_wan.vae import WanVAE

    vae = WanVAE.from_pretrained(FIXTURES / "vae" / "wan_vae_tiny.safetensors", dim=8)
    io = load_file(str(FIXTURES / "vae" / "vae_io.safetensors"))
    with torch.no_grad():
        return [
            ("VAE encode, mu", _max_abs(vae.encode(io["video"], normalize=False, tiled=False), io["mu"])),
            ("VAE encode, normalised latent", _max_abs(vae.encode(io["video"], tiled=False), io["latent"])),
            ("VAE decode, unclamped", _max_abs(vae.decode(io["latent"], clamp=False, tiled=False),
                                               io["recon_unclamped"])),
            ("VAE decode", _max_abs(vae.decode(io["latent"], tiled=False), io["recon"])),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = dit_rows() + vae_rows()
    if args.json:
        sys.stdout.write(json.dumps(dict(rows), indent=2) + "\n")
        return 0
    lines = ["| case (fp32, CPU) | max-abs vs official |", "|---|---|"]
    lines += [f"| {name} | {value:.2e} |" for name, value in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
