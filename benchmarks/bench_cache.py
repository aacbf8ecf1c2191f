"""Step caches measured (issue 23): DiT work done, toy quality gates, and wall time at Wan width, one table.

Three parts, each a markdown table (``--json FILE`` writes everything):

(a) **toy quality** through eval-toy's own code path (`pusa_fw_toy.evaluate.evaluate`, the shipped base model
    and its VTA LoRAs; i2v, start-end, extension, t2v; ``--seeds`` held-out seeds, default 128) for ``none``,
    ``teacache`` and ``framecache`` at several thresholds: the DiT work done (token-block evaluations and
    FLOPs, as a fraction of no cache), every gate (t2v base gates, VTA gates), the errors after the given
    frames (and their change against no cache), and whether the issue's goal holds (work <= 0.5, every gate
    passing, errors after the given frames within 10% of no cache);
(b) **wall time at Wan width**: the B2 setting of ``bench_backbone.py`` (1.3B-width blocks, 2 layers,
    5 latent frames of 30x52, 1950 tokens, a 512-row context; random weights, float32) and one 14B-width
    point (1 layer), each plan sampled with no cache and with each cache in the same process, so the ratio
    is real time;
(c) **rolling and pyramid plans**, where idle frames dominate: on the toy model (work, the t2v metrics, and
    the mean pixel deviation from the no-cache video) and in (b)'s wall table.

A cache that needs ``velocity_partial`` on a DiT without it is refused in one line, and the row says so.

    python benchmarks/bench_cache.py [--seeds 128] [--parts a,b,c] [--wall-steps 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import torch

from pusa_fw.api import get_cache
from pusa_fw.caches import CachedBackbone, WorkStats
from pusa_fw.errors import InputError

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("none", {}),
    ("teacache", {"threshold": 0.1}),
    ("teacache", {"threshold": 0.2}),
    ("teacache", {"threshold": 0.4}),
    ("teacache", {"threshold": 0.8}),
    ("framecache", {"threshold": 0.2, "clean_threshold": 0.1}),
    ("framecache", {}),
    ("framecache", {"threshold": 0.6, "clean_threshold": 0.3}),
    ("framecache", {"threshold": 1.0, "clean_threshold": 0.5, "max_skips": 3}),
]
"""(cache, params) rows of every part; ``framecache`` with ``{}`` is its defaults."""
GOAL_WORK, GOAL_ERROR = 0.5, 0.10
ERROR_TASKS = ("i2v", "start-end", "extension")


def _label(name: str, params: dict[str, Any]) -> str:
    return name + ("" if not params else " " + ",".join(f"{k}={v}" for k, v in params.items()))


def _fraction(rows: list[dict[str, Any]], key: str) -> float:
    done = sum(row["work"][key] for row in rows if "work" in row)
    reference = sum(row["work"][f"{key}_reference"] for row in rows if "work" in row)
    return done / reference if reference else float("nan")


# ---------------------------------------------------------------------------------------------- (a) toy


def quality(seeds: int, configs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Part (a): one eval-toy run (gated rows only) per cache configuration."""
    from pusa_fw_toy.evaluate import EvalConfig, evaluate
    from pusa_fw_toy.shipped import shipped_lora, shipped_model_dir

    base, loras = shipped_model_dir(), [shipped_lora(0), shipped_lora(1)]
    results = []
    for name, params in configs:
        config = EvalConfig(base=base, loras=loras, num_seeds=seeds, cache=name, cache_params=params,
                            methods=["base", "VTA + noise 0.2"])
        started = time.perf_counter()
        try:
            report = evaluate(config)
        except InputError as error:
            results.append({"cache": _label(name, params), "refused": str(error)})
            continue
        rows = report["rows"]
        metric = {(row["task"], row["method"]): row["metrics"] for row in rows}
        vta = "VTA + noise 0.2"
        errors = {task: metric[(task, vta)]["error_after_px"]["max"] for task in ERROR_TASKS}
        results.append({
            "cache": _label(name, params), "seconds": time.perf_counter() - started,
            "token_block_fraction": _fraction(rows, "token_blocks"), "flop_fraction": _fraction(rows, "flops"),
            "gates": report["gates"]["passed"], "vta_gates": report["vta_gates"]["passed"],
            "gate_values": {metric_name: result["value"]
                            for metric_name, result in report["gates"]["results"].items()},
            "vta_values": {f"{r['task']}.{r['metric']}": r["per_model"] for r in report["vta_gates"]["results"]},
            "error_after_px": errors, "report": report,
        })
    baseline = next((r for r in results if r["cache"] == "none" and "refused" not in r), None)
    for result in results:
        if "refused" in result or baseline is None:
            continue
        change = {task: result["error_after_px"][task] / baseline["error_after_px"][task] - 1.0
                  for task in ERROR_TASKS}
        result["error_change"] = change
        result["goal"] = (result["token_block_fraction"] <= GOAL_WORK and result["gates"] and result["vta_gates"]
                          and all(value <= GOAL_ERROR for value in change.values()))
    return results


def quality_table(results: list[dict[str, Any]]) -> str:
    head = ("| cache | token-blocks | FLOPs | t2v gates (valid, fit<=1px, speed, dir) | VTA gates | "
            "error after given px, worst LoRA (change vs none): i2v / start-end / extension | goal |")
    lines = [head, "|" + "---|" * 7]
    for r in results:
        if "refused" in r:
            lines.append(f"| {r['cache']} | refused: {r['refused']} |||||")
            continue
        g = r["gate_values"]
        gates = (f"{'pass' if r['gates'] else 'FAIL'} ({g['valid']:.2f}, {g['fit_within_1px']:.2f}, "
                 f"{g['speed_ratio']:.2f}, {g['direction_acc']:.2f})")
        errors = " / ".join(f"{r['error_after_px'][t]:.3f} ({100 * r.get('error_change', {}).get(t, 0.0):+.0f}%)"
                            for t in ERROR_TASKS)
        lines.append(f"| {r['cache']} | {r['token_block_fraction']:.3f} | {r['flop_fraction']:.3f} | {gates} | "
                     f"{'pass' if r['vta_gates'] else 'FAIL'} | {errors} | {'yes' if r.get('goal') else 'no'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- (c) toy long plans


def toy_long_plans(seeds: int, configs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Part (c) on the toy: pyramid t2v and rolling t2v, work and t2v metrics, deviation from no cache."""
    from pusa_fw.registry_lookup import lookup
    from pusa_fw_toy.evaluate import _aggregate
    from pusa_fw_toy.generation import generate_batch
    from pusa_fw_toy.metrics import score_video
    from pusa_fw_toy.model_dir import load_toy_models
    from pusa_fw_toy.shipped import shipped_model_dir
    from pusa_fw_toy.world import HELD_OUT_SEED_BASE, render_clip

    models = load_toy_models(shipped_model_dir())
    world = models.spec.world
    clips = [render_clip(world, HELD_OUT_SEED_BASE + seed) for seed in range(seeds)]
    seed_list = [HELD_OUT_SEED_BASE + seed for seed in range(seeds)]
    plans = {
        "pyramid (ar_step 3)": lookup("tasks", "t2v")(schedule={"name": "pyramid", "ar_step": 3}),
        "rolling (window 5, overlap 2)": lookup("tasks", "rolling")(window=5, overlap=2),
    }
    results = []
    for plan_name, task in plans.items():
        reference = None
        for name, params in configs:
            work = WorkStats()
            try:
                model = CachedBackbone(models.dit, get_cache(name, **params), work=work)
            except InputError as error:
                results.append({"plan": plan_name, "cache": _label(name, params), "refused": str(error)})
                continue
            videos = torch.cat([generate_batch(model, models.codec, models.text_encoder, task, "t2v",
                                               clips[i:i + 32], world, seeds=seed_list[i:i + 32])
                                for i in range(0, seeds, 32)])
            reference = videos if reference is None else reference
            scores = [score_video(video, clip, world, [], reference="heading") for video, clip in zip(videos, clips)]
            metrics = _aggregate(scores, world)
            results.append({"plan": plan_name, "cache": _label(name, params),
                            "token_block_fraction": work.token_block_fraction, "flop_fraction": work.flop_fraction,
                            "deviation": float((videos - reference).abs().mean()),
                            **{key: metrics[key] for key in ("valid", "fit_within_1px", "speed_ratio",
                                                             "direction_acc")}})
    return results


def long_table(results: list[dict[str, Any]]) -> str:
    lines = ["| plan | cache | token-blocks | FLOPs | valid | fit<=1px | speed | dir | mean abs dev vs none |",
             "|" + "---|" * 9]
    for r in results:
        if "refused" in r:
            lines.append(f"| {r['plan']} | {r['cache']} | refused: {r['refused']} ||||||")
            continue
        lines.append(f"| {r['plan']} | {r['cache']} | {r['token_block_fraction']:.3f} | {r['flop_fraction']:.3f} | "
                     f"{r['valid']:.2f} | {r['fit_within_1px']:.2f} | {r['speed_ratio']:.2f} | "
                     f"{r['direction_acc']:.2f} | {r['deviation']:.4f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ (b) wall time


def wall(steps: int, configs: list[tuple[str, dict[str, Any]]], wide: bool) -> list[dict[str, Any]]:
    """Part (b) (and (c)'s wall rows): each plan with every cache, timed in this process."""
    from pusa_fw import sample
    from pusa_fw.registry_lookup import lookup
    from pusa_fw.seeding import draw_noise, make_generator
    from pusa_fw_wan import WanConfig, WanDiT

    widths = {"1.3B width, 2 blocks": WanConfig(dim=1536, ffn_dim=8960, num_heads=12, freq_dim=256,
                                                text_dim=4096, num_layers=2)}
    if wide:
        widths["14B width, 1 block"] = WanConfig(dim=5120, ffn_dim=13824, num_heads=40, freq_dim=256,
                                                 text_dim=4096, num_layers=1)
    plans = {
        "i2v": (lookup("tasks", "i2v")(), 17),
        "t2v": (lookup("tasks", "t2v")(), 17),
        "pyramid (ar_step 2)": (lookup("tasks", "t2v")(schedule={"name": "pyramid", "ar_step": 2}), 17),
        "rolling (5 of 9 latents)": (lookup("tasks", "rolling")(window=17, overlap=5), 33),
    }
    results = []
    for width_name, config in widths.items():
        torch.manual_seed(0)
        dit = WanDiT(config).eval().requires_grad_(False)
        context = torch.randn(1, 512, config.text_dim, generator=torch.Generator().manual_seed(1))
        for plan_name, (task, frames) in plans.items():
            if width_name.startswith("14B") and plan_name != "i2v":
                continue
            plan = task.plan(num_frames=frames, num_steps=steps)
            shape = (1, 16, plan.num_latent_frames, 30, 52)
            noise, source = draw_noise(shape, make_generator(0)), draw_noise(shape, make_generator(1))
            baseline_seconds = None
            for name, params in configs:
                work = WorkStats()
                row = {"width": width_name, "plan": plan_name, "cache": _label(name, params)}
                try:
                    model = CachedBackbone(dit, get_cache(name, **params), work=work)
                except InputError as error:
                    results.append({**row, "refused": str(error)})
                    continue
                started = time.perf_counter()
                with torch.no_grad():
                    sample(model, plan, noise, source=source, context=context)
                seconds = time.perf_counter() - started
                baseline_seconds = seconds if baseline_seconds is None else baseline_seconds
                results.append({**row, "seconds": seconds, "speedup": baseline_seconds / seconds,
                                "token_block_fraction": work.token_block_fraction,
                                "flop_fraction": work.flop_fraction})
    return results


def wall_table(results: list[dict[str, Any]]) -> str:
    lines = ["| width | plan | cache | seconds | speed-up vs none | token-blocks | FLOPs |", "|" + "---|" * 7]
    for r in results:
        if "refused" in r:
            lines.append(f"| {r['width']} | {r['plan']} | {r['cache']} | refused: {r['refused']} ||||")
            continue
        lines.append(f"| {r['width']} | {r['plan']} | {r['cache']} | {r['seconds']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['token_block_fraction']:.3f} | {r['flop_fraction']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=128, help="held-out toy seeds per task (default 128)")
    parser.add_argument("--parts", default="a,b,c", help="which parts to run: a, b, c (default all)")
    parser.add_argument("--wall-steps", type=int, default=8, help="sampling steps of the wall-time plans")
    parser.add_argument("--no-14b", action="store_true", help="skip the 14B-width wall point")
    parser.add_argument("--configs", type=int, nargs="*", default=None, help="indices into CONFIGS (default all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = CONFIGS if args.configs is None else [CONFIGS[index] for index in args.configs]
    parts = set(args.parts.split(","))
    out: dict[str, Any] = {"seeds": args.seeds, "wall_steps": args.wall_steps, "threads": torch.get_num_threads()}
    if "a" in parts:
        out["quality"] = quality(args.seeds, configs)
        print("(a) toy quality, eval-toy path, %d seeds per task\n" % args.seeds + quality_table(out["quality"]) + "\n")
    if "c" in parts:
        out["long_plans"] = toy_long_plans(args.seeds, configs)
        print("(c) toy rolling and pyramid plans (t2v metrics)\n" + long_table(out["long_plans"]) + "\n")
    if "b" in parts:
        out["wall"] = wall(args.wall_steps, configs, wide=not args.no_14b)
        print(f"(b) wall time, float32, {torch.get_num_threads()} threads, {args.wall_steps} steps\n"
              + wall_table(out["wall"]) + "\n")
    if args.json:
        for result in out.get("quality", []):
            result.pop("report", None)
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=1, default=lambda value: None if isinstance(value, float)
                      and not math.isfinite(value) else str(value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
