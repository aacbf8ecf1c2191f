"""Stage 2 of the ComfyUI integration run, inside ComfyUI's venv (pusa-fw installed there).

1. Write the tiny Wan DiT, VAE and two rank-4 LoRAs (the Pusa LoRA's stand-in in the ComfyUI layout
   ``pusa-fw export-lora`` writes, the LightX2V LoRA's in LightX2V's released layout) into ComfyUI's
   ``models`` and a tiny umT5 (d_model 4096) beside them; and a tiny Wan2.2 TI2V-5B DiT (48
   channels, which ComfyUI loads as its ``WAN22``) with a release-shaped Wan2.2 VAE (`tiny_models`).
2. Run ``pusa-fw generate`` for each example workflow (same task, frames, steps, shift, sampler, cfg, seed,
   prompts and images) with ``--save-latents``. Its prompt cache (``$XDG_CACHE_HOME`` pointed into the
   scratch folder) then holds the embeddings of the prompt and the negative prompt that generate fed its
   DiT: exactly those files are copied into ComfyUI's ``models/pusa_embeddings`` and go to ComfyUI through
   Pusa Prompt Embedding, in place of CLIPTextEncode (ComfyUI's umT5-xxl loader cannot build a tiny
   encoder). Both sides zero-pad the text to 512 tokens. The i2v start image is 40x48, not the output
   size: both sides fit it to 32x32 with the one shared resize rule (`pusa_fw.io.resize`).
   ``pusa_i2v_lightx2v`` (a Pusa Preset wired into the task's steps and shift and the sampler's cfg and
   sampler, the LightX2V LoRA before the Pusa LoRA) runs as ``generate --preset lightx2v`` with both LoRAs.
3. Start ComfyUI, queue the adapted example workflows, wait on /history and read the latent the stock
   SaveLatent node wrote; compare it (in the DiT's latent space: ComfyUI's ``Wan21`` or, for TI2V-5B,
   ``Wan22`` latent format) with generate's latents. The TI2V-5B workflows are the model's own i2v (frame
   0 held clean) and start-end, at 64x32 (sizes are multiples of 32 there), without a LoRA.
4. Queue a workflow with a keyframe past the end, and one whose Pusa Prompt Embedding names a file outside
   ``models/pusa_embeddings`` (``../outside.safetensors``, which exists): each must fail with our one-line
   node error (ComfyUI does not check a list value queued through /prompt; the node must refuse it).

Prints a table; exits 1 when anything fails. The server is always stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from comfy_server import ComfyServer  # noqa: E402
from tiny_models import (  # noqa: E402
    DIT22_NAME,
    DIT_NAME,
    VAE22_NAME,
    VAE_NAME,
    TinyFiles,
    write_tiny_models,
    write_tiny_models_22,
)
from workflows_adapt import (  # noqa: E402
    LIGHTX2V_EXAMPLE_LORA,
    PUSA_EXAMPLE_LORA,
    SETTINGS,
    SETTINGS_22,
    adapt,
    bad_embedding_workflow,
    bad_keyframe_workflow,
    generate_args,
    prompts_of,
    without_lora,
)

PARITY_BOUND = 1e-4
"""Max-abs bound on ComfyUI vs generate final latents (DiT space; float32 on CPU on both sides)."""
CASES = ("pusa_i2v", "pusa_start_end", "pusa_i2v_lightx2v", "pusa_ti2v_5b_i2v", "pusa_ti2v_5b_start_end")
CONTROLS = (("pusa_i2v", "pusa_start_end"), ("pusa_i2v_lightx2v", "pusa_i2v"),
            ("pusa_i2v_lightx2v", "pusa_i2v_lightx2v without its LoRA"),
            ("pusa_ti2v_5b_i2v", "pusa_ti2v_5b_start_end"))
"""Pairs of different runs: ComfyUI's first vs generate's second must differ (the measure tells runs apart;
the LightX2V one: generate without the LightX2V-layout LoRA, so ComfyUI must have applied it to match)."""


@dataclass(frozen=True)
class Case:
    """What one example workflow runs on: the files, their names in ComfyUI, the settings, the format."""

    files: TinyFiles
    dit: str
    vae: str
    loras: dict[str, Path] | None
    """The example's LoRA file name -> its tiny stand-in in ``models/loras`` (None: no LoRA, loaders bypassed)."""
    settings: dict[str, int]
    latent_format: str
    """ComfyUI's latent format class of the model (``Wan21``, ``Wan22``)."""

    def adapt(self, workflow: dict[str, Any], embeddings: dict[str, str]) -> dict[str, Any]:
        names = None if self.loras is None else {name: path.name for name, path in self.loras.items()}
        return adapt(workflow, self.dit, self.vae, embeddings, names, self.settings)


def is_ti2v_5b(name: str) -> bool:
    return name.startswith("pusa_ti2v_5b_")
START_IMAGE_SIZE = (40, 48)
"""(height, width) of the i2v start image: not the output size, so both sides resize it (one rule)."""


def _images(input_dir: Path) -> None:
    from pusa_fw.io import save_image

    generator = torch.Generator().manual_seed(1)
    input_dir.mkdir(parents=True, exist_ok=True)
    for name in ("start.png", "first.png", "last.png"):
        height, width = START_IMAGE_SIZE if name == "start.png" else (SETTINGS["height"], SETTINGS["width"])
        picture = torch.rand(3, height, width, generator=generator) * 2 - 1
        save_image(input_dir / name, picture)


def _generate(name: str, workflow: dict[str, Any], case: Case, input_dir: Path, work: Path) -> Path:
    from pusa_fw.cli import main

    latents = work / f"{name}.generate.safetensors"
    args = [
        "generate",
        *generate_args(workflow, input_dir, case.loras, case.settings),
        *case.files.cli_args(),
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(work / f"{name}.mp4"),
        "--save-latents",
        str(latents),
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # generate prints the paths it wrote
        status = main(args)
    if status != 0:
        raise RuntimeError(f"pusa-fw generate failed for {name} (status {status}): {' '.join(args)}")
    return latents


def prompt_embeddings(cache_dir: Path) -> dict[str, Path]:
    """The prompt-cache entries generate wrote, by prompt text (from each file's metadata)."""
    from safetensors import safe_open

    found = {}
    for path in sorted(cache_dir.rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            found[(handle.metadata() or {}).get("prompt", "")] = path
    return found


def install_embeddings(found: dict[str, Path], models: Path) -> dict[str, str]:
    """Copy the prompt-cache entries into ComfyUI's ``models/pusa_embeddings``; prompt text -> file name."""
    import shutil

    folder = models / "pusa_embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for index, (text, path) in enumerate(sorted(found.items())):
        names[text] = f"prompt_{index}.safetensors"
        shutil.copyfile(path, folder / names[text])
    shutil.copyfile(path, models / "outside.safetensors")  # a real file the node must not read
    return names


def _read(path: Path, key: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(key).to(torch.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", type=Path, required=True, help="unpacked ComfyUI (holds main.py)")
    parser.add_argument("--base", type=Path, required=True, help="ComfyUI --base-directory")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--repo", type=Path, required=True, help="this repository (example workflows)")
    parser.add_argument("--only", default="", help="run only the workflows whose name contains this text")
    options = parser.parse_args()
    timings: dict[str, float] = {}
    rows: list[list[str]] = []
    failures: list[str] = []
    started = time.perf_counter()
    names = [name for name in CASES if options.only in name]
    files = write_tiny_models(options.base / "models", options.work / "text")
    loras = {PUSA_EXAMPLE_LORA: files.lora, LIGHTX2V_EXAMPLE_LORA: files.lightx2v_lora}
    cases = {name: Case(files, DIT_NAME, VAE_NAME, loras, SETTINGS, "Wan21") for name in names}
    if any(is_ti2v_5b(name) for name in names):
        files_22 = write_tiny_models_22(options.base / "models", files)
        cases.update({name: Case(files_22, DIT22_NAME, VAE22_NAME, None, SETTINGS_22, "Wan22")
                      for name in names if is_ti2v_5b(name)})
    timings["models"] = time.perf_counter() - started
    input_dir = options.base / "input"
    _images(input_dir)
    os.environ["XDG_CACHE_HOME"] = str(options.work / "xdg")
    api_dir = options.repo / "plugins" / "pusa_fw_comfy" / "workflows" / "api"
    workflows = {name: json.loads((api_dir / f"{name}.json").read_text()) for name in names}
    generated = {
        name: _generate(name, workflow, cases[name], input_dir, options.work)
        for name, workflow in workflows.items()
    }
    if "pusa_i2v_lightx2v" in workflows:
        name = "pusa_i2v_lightx2v without its LoRA"
        bare = without_lora(workflows["pusa_i2v_lightx2v"], LIGHTX2V_EXAMPLE_LORA)
        generated[name] = _generate(
            name.replace(" ", "_"), bare, cases["pusa_i2v_lightx2v"], input_dir, options.work
        )
    timings["pusa-fw generate"] = time.perf_counter() - started - timings["models"]
    cached = prompt_embeddings(options.work / "xdg" / "pusa_fw" / "prompts")
    for name, workflow in workflows.items():
        missing = [text[:40] for text in prompts_of(workflow) if text not in cached]
        if missing:
            raise RuntimeError(f"{name}: no prompt-cache entry for {missing}; generate did not encode them")
    embeddings = install_embeddings(cached, options.base / "models")

    sys.path.insert(0, str(options.comfy))
    import comfy.latent_formats  # ComfyUI's own latent normalisation (run, not copied)

    compared: dict[str, torch.Tensor] = {}
    server = ComfyServer(Path(sys.executable), options.comfy, options.base, options.work / "comfyui.log")
    try:
        timings["server start"] = server.start()
        missing_nodes = {"PusaTask", "PusaSampler", "PusaPromptEmbedding"} - set(server.get("/object_info"))
        if missing_nodes:
            raise RuntimeError(
                f"the pack's nodes did not load ({sorted(missing_nodes)}):\n{server.log_tail()}"
            )
        for name, workflow in workflows.items():
            run_started = time.perf_counter()
            entry = server.wait(server.queue(cases[name].adapt(workflow, embeddings)))
            seconds = time.perf_counter() - run_started
            if entry["status"]["status_str"] != "success":
                failures.append(f"{name}: ComfyUI reported {json.dumps(entry['status'])[:1500]}")
                rows.append([name, f"{seconds:.1f}", "-", f"{PARITY_BOUND:.0e}", "FAIL"])
                continue
            comfy_latent = _read(
                server.output_file(entry, _save_latent_id(workflow), "latents"), "latent_tensor"
            )
            ours = _read(generated[name], "latents")
            theirs = getattr(comfy.latent_formats, cases[name].latent_format)().process_in(comfy_latent)
            if theirs.shape != ours.shape:
                failures.append(f"{name}: ComfyUI latent {list(theirs.shape)} vs generate {list(ours.shape)}")
                rows.append([name, f"{seconds:.1f}", "shape", f"{PARITY_BOUND:.0e}", "FAIL"])
                continue
            compared[name] = theirs
            difference = float((theirs - ours).abs().max())
            ok = difference <= PARITY_BOUND
            rows.append(
                [
                    name,
                    f"{seconds:.1f}",
                    f"{difference:.2e} (|latent| <= {float(ours.abs().max()):.2f})",
                    f"{PARITY_BOUND:.0e}",
                    "ok" if ok else "FAIL",
                ]
            )
            if not ok:
                failures.append(f"{name}: max-abs {difference:.3e} > bound {PARITY_BOUND:.0e}")
        for first, second in CONTROLS:  # the measure tells runs apart: ComfyUI's i2v vs generate's start-end
            if first not in compared or second not in generated:
                continue
            control = float((compared[first] - _read(generated[second], "latents")).abs().max())
            ok = control > 100 * PARITY_BOUND
            rows.append(
                [
                    f"control: {first} vs {second}",
                    "-",
                    f"{control:.2e}",
                    f"> {100 * PARITY_BOUND:.0e}",
                    "ok" if ok else "FAIL",
                ]
            )
            if not ok:
                failures.append(f"control {first} vs {second}: different runs differ by only {control:.3e}")
        if "pusa_i2v" in workflows:
            adapted_i2v = cases["pusa_i2v"].adapt(workflows["pusa_i2v"], embeddings)
            rows.append(_bad_input_row(server, "bad keyframe (40 of 9)", bad_keyframe_workflow(adapted_i2v),
                                       "Pusa Task: pixel frame 40 is outside", failures))
            rows.append(_bad_input_row(
                server, "embedding ../outside", bad_embedding_workflow(adapted_i2v, "../outside.safetensors"),
                "Pusa Prompt Embedding: embedding '../outside.safetensors' is not a file listed", failures))
        unloaded = [line for line in server.log_tail(10_000).splitlines() if "lora key not loaded" in line]
        if unloaded:  # ComfyUI's LoRA loader skipped keys of the tiny LoRA
            failures.append(f"ComfyUI left {len(unloaded)} LoRA keys unloaded, e.g. {unloaded[0]}")
    finally:
        server.stop()
    timings["total (stage 2)"] = time.perf_counter() - started
    _print_table(rows, timings)
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


def _save_latent_id(workflow: dict[str, Any]) -> str:
    return next(key for key, node in workflow.items() if node["class_type"] == "SaveLatent")


def _bad_input_row(
    server: ComfyServer, label: str, workflow: dict[str, Any], expected: str, failures: list[str]
) -> list[str]:
    started = time.perf_counter()
    entry = server.wait(server.queue(workflow))
    seconds = time.perf_counter() - started
    errors = [data for kind, data in entry["status"].get("messages", []) if kind == "execution_error"]
    message = str(errors[0].get("exception_message", "")).strip() if errors else ""
    ok = entry["status"]["status_str"] == "error" and message.startswith(expected) and "\n" not in message
    if not ok:
        failures.append(f"{label}: expected one line starting {expected!r}, got {message!r}")
    return [label, f"{seconds:.1f}", repr(message)[:90], "one line", "ok" if ok else "FAIL"]


def _print_table(rows: list[list[str]], timings: dict[str, float]) -> None:
    header = ["workflow", "comfy s", "max-abs vs pusa-fw generate", "bound", "result"]
    widths = [max(len(str(row[index])) for row in [header, *rows]) for index in range(len(header))]
    print(
        "ComfyUI integration: DiT dim 128 x 2 layers (text 4096) + rank-4 LoRA at the workflows' 1.4 "
        "(pusa_i2v_lightx2v: + LightX2V-layout LoRA at 1.0, preset lightx2v: 4 steps, cfg 1, euler), "
        f"VAE dim 96, {SETTINGS['num_frames']} frames "
        f"{SETTINGS['height']}x{SETTINGS['width']}, {SETTINGS['num_steps']} steps, seed {SETTINGS['seed']}; "
        "TI2V-5B (pusa_ti2v_5b_*): DiT dim 128 x 2 layers, 48 channels, no LoRA, release-shaped Wan2.2 VAE, "
        f"{SETTINGS_22['num_frames']} frames {SETTINGS_22['height']}x{SETTINGS_22['width']}"
    )
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    print("timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))


if __name__ == "__main__":
    sys.exit(main())
