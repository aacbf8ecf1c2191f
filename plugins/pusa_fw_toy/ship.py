"""Assemble the shipped toy weights from the runs of ``recipes/reproduce.sh``, with their manifest.

    python -m pusa_fw_toy.ship RUNS plugins/pusa_fw_toy/weights --docs docs

reads ``RUNS/base-model`` (the packed base), ``RUNS/vta-s<N>.safetensors`` (exported VTA LoRAs), each run's
``config.json`` and ``log.jsonl``, ``RUNS/stages.jsonl`` (commands and wall times), ``RUNS/gates`` and
``RUNS/eval`` (eval-toy reports), ``RUNS/long`` (the eval-toy ``--long`` report, when that stage ran), and
writes the shipped folder (see `pusa_fw_toy.shipped`) in one swap:
it is built beside the target and renamed over it, so a reader never sees half of it. With ``--docs`` the
eval table and plot are copied there too (``toy_eval.md``, ``.json``, ``.png``) for the README, and the
long-video report as ``toy_long_video.md``, ``.json``, ``.png``.

No machine path is shipped: every path under RUNS in a command, config or report is written as
``$RUNS/...`` and every path in the repository relative to its root, so the manifest reads the same on any
machine (and says how to rerun each stage there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from pusa_fw.errors import InputError
from pusa_fw.io.atomic import atomic_write_bytes

from pusa_fw_toy.shipped import MANIFEST, file_sha256

__all__ = ["build_manifest", "ship"]

BASE_FILES = ("config.json", "toy.json", "diffusion_pytorch_model.safetensors", "text_encoder.safetensors")


REPOSITORY = Path(__file__).resolve().parents[2]


def portable(value: Any, runs: Path) -> Any:
    """`value` (JSON data) with each path under `runs` written as ``$RUNS/...`` and each path in the
    repository made relative to its root."""
    if isinstance(value, dict):
        return {key: portable(item, runs) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, runs) for item in value]
    if not isinstance(value, str):
        return value
    for root, name in ((runs.resolve(), "$RUNS"), (runs.absolute(), "$RUNS"), (REPOSITORY, "")):
        for spelling in dict.fromkeys((str(root), os.path.normpath(str(root)))):
            value = value.replace(spelling + "/", f"{name}/" if name else "").replace(spelling, name or ".")
    return value


def _stages(runs: Path) -> dict[str, dict[str, Any]]:
    path = runs / "stages.jsonl"
    if not path.is_file():
        raise InputError(f"{str(path)!r} is missing; run plugins/pusa_fw_toy/recipes/reproduce.sh first")
    return {row["stage"]: row for row in map(json.loads, path.read_text().splitlines()) if row}


def _train_time(train_rows: list[dict[str, Any]]) -> float:
    """Seconds spent in training steps over every session of a run (its log's step times; no validation)."""
    total, previous = 0.0, 0
    for row in train_rows:
        if "step_time_s" in row:
            total += row["step_time_s"] * (row["step"] - previous)
        previous = row["step"]
    return total


def _training(run: Path, stage: dict[str, Any]) -> dict[str, Any]:
    """What one training run was: its config, data seed, steps, loss at the end, command and wall time."""
    config = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    train_rows = [row for row in rows if "loss" in row and "step" in row]
    val_rows = [row for row in rows if "val/all" in row]
    last = train_rows[-50:]
    return {
        "command": stage["command"],
        "wall_time_s": round(stage["wall_time_s"], 1),  # of the invocation that finished the stage
        "train_time_s": round(_train_time(train_rows), 3),  # a tiny test run trains in milliseconds
        "steps": train_rows[-1]["step"] if train_rows else 0,
        "training_seed": config["seed"],
        "data": config["data"],
        "final_train_loss_mean_last_50_logs": sum(row["loss"] for row in last) / max(1, len(last)),
        "validation": [{key: value for key, value in row.items() if key == "step" or key.startswith("val/")}
                       for row in val_rows],
        "config": config,
    }


def _carried_base(runs: Path, out: Path, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The base's training records carried from the committed manifest a run started from, once the
    weights are checked to be the ones that manifest describes.

    With ``BASE_FROM=shipped`` (no base stage ran) every base record is carried and every shipped base file
    must be the committed one. With ``BASE1_FROM=shipped`` (only the bounce-world stages ``base2`` and
    ``base3`` ran) the committed base is stage 1: its record is carried as ``base``, its weights (copied verbatim to
    ``RUNS/base0-model``) must be the ones the manifest describes, and the ``base1-pack`` stage that wrote
    them into the bounce world (``RUNS/base1-model``, where ``base2`` started) is recorded with it.
    """
    path = runs / "base-manifest.json"
    if not path.is_file():
        raise InputError(f"{str(runs / 'stages.jsonl')!r} records no base stage and {str(path)!r} is missing; "
                         "rerun reproduce.sh (with BASE_FROM=shipped to start from the committed base)")
    previous = json.loads(path.read_text())
    if "base2" in stages:
        recorded = previous["files"].get("base/diffusion_pytorch_model.safetensors", {}).get("sha256")
        copied = runs / "base0-model" / "diffusion_pytorch_model.safetensors"
        if not copied.is_file() or recorded != file_sha256(copied) or "base1-pack" not in stages:
            raise InputError(f"{str(runs / 'base0-model')!r} does not hold the weights {str(path)!r} describes, or "
                             "no base1-pack stage wrote them into the bounce world; rerun reproduce.sh with "
                             "BASE1_FROM=shipped in a fresh RUNS")
        carried = {"base": {**previous["training"]["base"],
                            "bounce_world_pack": {"command": stages["base1-pack"]["command"]}}}
        how = "the committed MANIFEST.json that BASE1_FROM=shipped started from (stage 1, without walls)"
    else:
        for name in BASE_FILES:
            recorded = previous["files"].get(f"base/{name}", {}).get("sha256")
            if recorded != file_sha256(out / "base" / name):
                raise InputError(f"base/{name} is not the file {str(path)!r} describes; rerun the base stages "
                                 "(reproduce.sh without BASE_FROM)")
        carried = {name: record for name, record in previous["training"].items() if name.startswith("base")}
        how = "the committed MANIFEST.json that BASE_FROM=shipped started from"
    for record in carried.values():
        record["carried_from"] = how
    return carried


def _long_video(runs: Path, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The long-video record: the recommended ``generate --task rolling`` arguments, gates and rows."""
    report = json.loads((runs / "long" / "long_video.json").read_text())
    return {
        "command": stages["long"]["command"],
        "wall_time_s": round(stages["long"]["wall_time_s"], 1),
        "best_schedule": report["best_schedule"],
        "generate_args": report["generate_args"],
        "gates": report["gates"],
        "settings": report["settings"],
        "rows": [{key: row[key] for key in ("task", "frames", "schedule", "metrics", "seconds") if key in row}
                 for row in report["rows"]],
    }


def _machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "device": "cpu"}


def build_manifest(runs: Path, out: Path, seeds: list[int]) -> dict[str, Any]:
    """The manifest of a shipped folder `out` built from `runs` (hashes the files already in `out`)."""
    stages = _stages(runs)
    gates = json.loads((runs / "gates" / "eval_toy.json").read_text())["gates"]
    vta_gates = json.loads((runs / "eval" / "eval_toy.json").read_text()).get("vta_gates", {})
    files = sorted(path for path in out.rglob("*") if path.is_file() and path.name != MANIFEST)
    training = _carried_base(runs, out, stages) if "base" not in stages else {}
    for name in (name for name in ("base", "base2", "base3") if name in stages):  # base2, base3: continuations
        training[name] = _training(runs / name, stages[name])
        packed = stages[f"{name}-pack"]["command"]
        training[name]["packed"] = {"command": packed, "weights": "EMA" if " --ema" in packed else "raw"}
        curve = runs / f"gate_curve_{name}.jsonl"  # written by recipes/gate_curve.sh when it was run
        if curve.is_file():
            training[name]["gate_curve"] = [json.loads(line) for line in curve.read_text().splitlines() if line]
    for seed in seeds:
        training[f"vta-s{seed}"] = _training(runs / f"vta-s{seed}", stages[f"vta-s{seed}"])
        training[f"vta-s{seed}"]["exported"] = {"command": stages[f"vta-s{seed}-export"]["command"]}
    extra = {"long_video": _long_video(runs, stages)} if "long" in stages else {}
    return portable({
        "format": "pusa-fw-toy-weights",
        "version": 1,
        "how": ("plugins/pusa_fw_toy/recipes/reproduce.sh WALLS=bounce (base.toml without walls, base-continue.toml "
                "and base-held.toml in the bounce world, then vta.toml per training seed)" if "base2" in training else
                "plugins/pusa_fw_toy/recipes/reproduce.sh (base.toml, then vta.toml per training seed)"),
        "machine": _machine(),
        "training": training,
        "gates": {"command": stages["gates"]["command"], **gates},
        "vta_gates": {"command": stages["eval"]["command"], **vta_gates},
        **extra,
        "files": {str(path.relative_to(out)): {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
                  for path in files},
    }, runs)


def ship(runs: Path, out: Path, *, seeds: list[int], docs: Path | None = None) -> Path:
    """Build the shipped folder `out` from `runs` (see the module docstring) and return it."""
    base = runs / "base-model"
    missing = [str(path) for path in [*(base / name for name in BASE_FILES),
                                      *(runs / f"vta-s{seed}.safetensors" for seed in seeds)] if not path.is_file()]
    if missing:
        raise InputError(f"missing run outputs {missing}; finish plugins/pusa_fw_toy/recipes/reproduce.sh first")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "base").mkdir(parents=True)
    for name in BASE_FILES:
        shutil.copyfile(base / name, staging / "base" / name)
    for seed in seeds:
        shutil.copyfile(runs / f"vta-s{seed}.safetensors", staging / f"vta-s{seed}.safetensors")
    manifest = build_manifest(runs, staging, seeds)
    atomic_write_bytes(staging / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    previous = out.with_name(out.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if out.exists():
        out.rename(previous)
    staging.rename(out)
    shutil.rmtree(previous, ignore_errors=True)
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        for suffix in ("md", "png"):
            atomic_write_bytes(docs / f"toy_eval.{suffix}", (runs / "eval" / f"eval_toy.{suffix}").read_bytes())
        report = portable(json.loads((runs / "eval" / "eval_toy.json").read_text()), runs)
        atomic_write_bytes(docs / "toy_eval.json", (json.dumps(report, indent=2) + "\n").encode())
        if (runs / "long" / "long_video.json").is_file():
            for suffix in ("md", "png"):
                atomic_write_bytes(docs / f"toy_long_video.{suffix}", (runs / "long" / f"long_video.{suffix}").read_bytes())
            report = portable(json.loads((runs / "long" / "long_video.json").read_text()), runs)
            atomic_write_bytes(docs / "toy_long_video.json", (json.dumps(report, indent=2) + "\n").encode())
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m pusa_fw_toy.ship RUNS OUT [--docs DIR] [--seeds 0 1]``."""
    parser = argparse.ArgumentParser(prog="python -m pusa_fw_toy.ship", description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the RUNS directory of reproduce.sh")
    parser.add_argument("out", type=Path, help="shipped folder to (re)write")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="VTA training seeds (default 0 1)")
    parser.add_argument("--docs", type=Path, default=None, help="also copy the eval table and plot here")
    args = parser.parse_args(argv)
    try:
        root = ship(args.runs, args.out, seeds=args.seeds, docs=args.docs)
    except InputError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    sys.stdout.write(f"{root}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
