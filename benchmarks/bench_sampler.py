"""The sampler's own cost per step at the Wan 14B 480p latent size (1x16x21x60x104), CPU, null backbone.

Measures plan lookup + policy handling + the update rule for Euler and UniPC on i2v (one held frame with
Pusa's multiplier) and on a pyramid plan, with a backbone that returns zeros instantly.

    python benchmarks/bench_sampler.py [--json] [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from pusa_fw import get_task
from pusa_fw.sampling import sample
from pusa_fw.seeding import draw_noise
from pusa_fw.testing.fakes import NullBackbone

SHAPE = (1, 16, 21, 60, 104)
TARGET_MS = 10.0


def measure(task: str, params: dict, sampler: str, num_steps: int, repeats: int) -> float:
    """Median milliseconds per step over `repeats` full runs (after one warm-up run)."""
    plan = get_task(task, **params).plan(num_frames=81, num_steps=num_steps)
    noise = draw_noise(SHAPE, 0)
    source = draw_noise(SHAPE, 1)
    backbone = NullBackbone()
    sample(backbone, plan, noise, sampler=sampler, source=source)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample(backbone, plan, noise, sampler=sampler, source=source)
        times.append((time.perf_counter() - start) * 1000 / plan.num_steps)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", "--steps", dest="num_steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cases = [
        ("i2v", {}, "euler"), ("i2v", {}, "unipc"),
        ("t2v", {"schedule": "pyramid", "schedule_params": {"ar_step": 2, "causal_block_size": 3}}, "unipc"),
    ]
    rows = []
    for task, params, sampler in cases:
        label = task if not params else f"{task}+{params['schedule']}"
        ms = measure(task, params, sampler, args.num_steps, args.repeats)
        rows.append({"plan": label, "sampler": sampler, "ms_per_step": round(ms, 3), "target_ms": TARGET_MS,
                     "ok": ms < TARGET_MS})
    if args.json:
        print(json.dumps({"shape": SHAPE, "threads": torch.get_num_threads(), "rows": rows}))
        return 0
    print(f"sampler cost per step, latents {'x'.join(map(str, SHAPE))}, CPU threads {torch.get_num_threads()}")
    print(f"{'plan':<14}{'sampler':<9}{'ms/step':>9}  target < {TARGET_MS} ms")
    for row in rows:
        print(f"{row['plan']:<14}{row['sampler']:<9}{row['ms_per_step']:>9.2f}  {'ok' if row['ok'] else 'SLOW'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
