"""Pusa Sampler vs ComfyUI's stock KSampler on one tiny Wan model, in one ComfyUI process (issue 16 item 5).

Run with the interpreter of ComfyUI's venv (``make test-comfyui`` builds it under ``~/.cache/pusa-fw``),
pusa-fw installed there::

    ~/.cache/pusa-fw/comfyui-venv-<hash>/bin/python benchmarks/bench_comfy_sampler.py --comfy COMFYUI_DIR

``COMFYUI_DIR`` is an unpacked ComfyUI (holds ``main.py``). The tiny random Wan2.1 T2V DiT (dim 128, one
head, 2 layers, text dim 4096) goes through ComfyUI's own loader (``comfy.sd.load_diffusion_model``); the
stock side is ``nodes.common_ksampler`` (what KSampler runs) with euler, the Pusa side is
``PusaSampler.execute`` on a t2v plan with euler, both at the same steps, cfg 3 and latent size, on the
same `MODEL`; an i2v row shows the per-frame path (frame 0 at its own sigma). Runs alternate (the order
flips each round); the table gives medians and the median of the per-round ratios Pusa / stock (goal
<= 1.02 for t2v).
``--profile`` adds a cProfile of one run of each.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

GOAL = 1.02


def _load_comfy(source: Path) -> None:
    sys.path.insert(0, str(source))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.utils

    comfy.utils.set_progress_bar_enabled(False)


def _tiny_model(folder: Path) -> Any:
    import comfy.sd

    from pusa_fw_wan.dit.config import WanConfig
    from pusa_fw_wan.dit.model import WanDiT
    from pusa_fw_wan.testing.tiny import randomise_parameters
    from pusa_fw_wan.weights import write_tensor_file

    config = WanConfig(dim=128, num_heads=1, num_layers=2, ffn_dim=256, freq_dim=256, text_dim=4096)
    dit = randomise_parameters(WanDiT(config), torch.Generator().manual_seed(0))
    path = write_tensor_file(folder / "tiny_wan.safetensors", dict(dit.state_dict()))
    return comfy.sd.load_diffusion_model(str(path))


def _runners(model: Any, frames: int, size: int, steps: int, cfg: float) -> dict[str, Any]:
    import nodes

    from pusa_fw_comfy.nodes import PusaSampler, PusaTask

    generator = torch.Generator().manual_seed(3)
    positive = [[torch.randn(1, 512, 4096, generator=generator), {}]]
    negative = [[torch.randn(1, 512, 4096, generator=generator), {}]]
    latent_frames = (frames - 1) // 4 + 1
    empty = {"samples": torch.zeros(1, 16, latent_frames, size // 8, size // 8)}
    plan = PusaTask.execute(
        task="t2v",
        num_frames=frames,
        num_steps=steps,
        shift=5.0,
        strengths="",
        positions="",
        params="{}",
        schedule="(task default)",
        schedule_params="{}",
        policy="(task default)",
        policy_params="{}",
    ).result[0]

    def stock() -> torch.Tensor:
        return nodes.common_ksampler(model, 0, steps, cfg, "euler", "simple", positive, negative, empty)[0][
            "samples"
        ]

    def pusa(spec: Any) -> Any:
        def run() -> torch.Tensor:
            return PusaSampler.execute(
                model=model,
                positive=positive,
                negative=negative,
                plan=spec,
                given=empty,
                seed=0,
                sampler="euler",
                cfg=cfg,
                history_guidance=1.0,
            ).result[0]["samples"]

        return run

    i2v = PusaTask.execute(
        task="i2v",
        num_frames=frames,
        num_steps=steps,
        shift=5.0,
        strengths="0.8",
        positions="",
        params="{}",
        schedule="(task default)",
        schedule_params="{}",
        policy="(task default)",
        policy_params="{}",
    ).result[0]
    return {
        "stock KSampler (euler)": stock,
        "Pusa Sampler (t2v, euler)": pusa(plan),
        "Pusa Sampler (i2v, euler)": pusa(i2v),
    }


def _time(run: Any) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        run()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", type=Path, required=True, help="unpacked ComfyUI folder (holds main.py)")
    parser.add_argument("--frames", type=int, default=33, help="pixel frames (4n + 1)")
    parser.add_argument("--size", type=int, default=128, help="height = width in pixels (multiple of 16)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (each runs both samplers)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: steady timings on a shared machine; 0: torch's default)",
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run of each sampler")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    _load_comfy(options.comfy.resolve())
    with tempfile.TemporaryDirectory() as scratch:
        model = _tiny_model(Path(scratch))
    runners = _runners(model, options.frames, options.size, options.steps, options.cfg)
    names = list(runners)
    for name in names:  # warm-up: model load, first-call allocations
        _time(runners[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(options.repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            seconds[name].append(_time(runners[name]))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    latent_frames, side = (options.frames - 1) // 4 + 1, options.size // 8
    print(
        f"tiny Wan2.1 T2V (dim 128, 2 layers, text 4096) through comfy.sd.load_diffusion_model, CPU, "
        f"{torch.get_num_threads()} threads; latent 1x16x{latent_frames}x{side}x{side}, "
        f"{options.steps} steps, cfg {options.cfg}, {options.repeats} alternating rounds"
    )
    # The ratio of each round's pair, then the median: slow changes of machine load cancel within a round.
    baseline = seconds[names[0]]
    paired = {name: statistics.median(a / b for a, b in zip(seconds[name], baseline)) for name in names}
    print(f"{'sampler':<28}{'median s':>10}{'min s':>10}{'max s':>10}{'ms/step':>10}{'/ stock':>10}")
    for name in names:
        values = seconds[name]
        print(
            f"{name:<28}{medians[name]:>10.3f}{min(values):>10.3f}{max(values):>10.3f}"
            f"{1000 * medians[name] / options.steps:>10.1f}{paired[name]:>10.3f}"
        )
    ratio = paired[names[1]]
    print(
        f"ratio Pusa t2v / stock: {ratio:.3f} (goal <= {GOAL}) -> {'met' if ratio <= GOAL else 'NOT met'}; "
        "i2v holds frame 0 at another sigma, so ComfyUI's Wan model repeats the time modulation per token"
    )
    if options.profile:
        for name in names:
            profiler = cProfile.Profile()
            profiler.enable()
            _time(runners[name])
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
            print(f"--- cProfile of one {name} run (by own time) ---\n{text.getvalue()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
