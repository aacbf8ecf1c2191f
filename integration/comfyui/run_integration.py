"""The node pack against the real ComfyUI (issue 16 item 4): ``make test-comfyui``, run by ``.ci/run``.

Standard library only (stage 1); the work happens in ComfyUI's own venv (stage 2, `scenario.py`).

1. Find the snapshot: ``$PUSA_FW_COMFYUI`` (a ``ComfyUI-*.tar.gz`` or a folder holding one), else
   ``../shared/comfyui/ComfyUI-*.tar.gz`` beside the repository; neither: print why it is skipped, exit 0.
2. Reuse or create a venv under ``~/.cache/pusa-fw/`` keyed by a hash of ComfyUI's requirements and
   pusa-fw's dependencies (``$PUSA_FW_COMFYUI_VENV`` names one instead): ComfyUI's requirements (pip picks
   torch, torchvision and torchaudio together) + requests + pusa-fw's wan/video/plot extras.
3. Install this repository's pusa-fw into it (a fresh non-editable copy of the working tree, every run).
4. Unpack ComfyUI into a temporary folder, copy ``plugins/pusa_fw_comfy`` into its ``custom_nodes`` and
   run `scenario.py` there (it starts and always stops the server; other arguments go to it, e.g.
   ``--only ti2v_5b``). With ``--bench`` it runs ``benchmarks/bench_comfy_sampler.py`` there instead
   (``make bench-comfyui``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "pusa-fw"
EXTRAS = "wan,video,plot"
COMPLETE = ".pusa-fw-complete"


def find_snapshot() -> tuple[Path | None, str]:
    """The snapshot tarball, or None and the reason it is not there."""
    given = os.environ.get("PUSA_FW_COMFYUI")
    if given:
        path = Path(given).expanduser()
        found = [path] if path.is_file() else sorted(path.glob("ComfyUI-*.tar.gz")) if path.is_dir() else []
        return (found[-1], "") if found else (None, f"PUSA_FW_COMFYUI={given} is no ComfyUI-*.tar.gz")
    shared = REPO.parent / "shared" / "comfyui"
    found = sorted(shared.glob("ComfyUI-*.tar.gz"))
    if found:
        return found[-1], ""
    return None, f"no ComfyUI snapshot: set PUSA_FW_COMFYUI or put ComfyUI-*.tar.gz in {shared}"


def _requirements(snapshot: Path) -> str:
    with tarfile.open(snapshot) as archive:
        member = next(
            item
            for item in archive.getmembers()
            if item.name.endswith("/requirements.txt") and item.name.count("/") == 1
        )
        handle = archive.extractfile(member)
        assert handle is not None
        return handle.read().decode()


def _pusa_dependencies() -> str:
    """pusa-fw's dependency lines (pyproject's [project] dependencies and optional extras)."""
    text = (REPO / "pyproject.toml").read_text()
    start = text.index("dependencies = [")
    return text[start : text.index("[project.scripts]")]


def ensure_venv(snapshot: Path) -> tuple[Path, str]:
    """The venv's python, and whether it was reused or created (with the seconds it took)."""
    given = os.environ.get("PUSA_FW_COMFYUI_VENV")
    requirements = _requirements(snapshot)
    key = hashlib.sha256(
        "\n".join([requirements, "requests", _pusa_dependencies(), sys.version.split()[0]]).encode()
    ).hexdigest()[:16]
    venv = Path(given).expanduser() if given else CACHE / f"comfyui-venv-{key}"
    python = venv / "bin" / "python"
    if (venv / COMPLETE).is_file() or (given and python.is_file()):
        return python, f"reused {venv}"
    started = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    with tempfile.TemporaryDirectory() as scratch:
        listing = Path(scratch) / "requirements.txt"
        listing.write_text(requirements + "\nrequests\n")
        _pip(python, "install", "--upgrade", "pip")
        _pip(python, "install", "-r", str(listing))
        _pip(python, "install", f"{_tree_copy(Path(scratch))}[{EXTRAS}]")
    (venv / COMPLETE).write_text(key + "\n")
    return python, f"created {venv} in {time.perf_counter() - started:.0f} s"


def _pip(python: Path, *args: str) -> None:
    """Run pip in the venv; its output is shown only when it fails."""
    command = [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check", *args]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"test-comfyui: pip {' '.join(args[:2])} failed ({done.returncode}):\n{tail}")


def _tree_copy(scratch: Path) -> Path:
    """The working tree as git sees it (tracked + untracked, not ignored) copied to ``scratch/pusa-fw``."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    copy = scratch / "pusa-fw"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return copy


def main() -> int:
    snapshot, reason = find_snapshot()
    if snapshot is None:
        print(f"test-comfyui: skipped: {reason}")
        return 0
    started = time.perf_counter()
    python, venv_note = ensure_venv(snapshot)
    print(f"test-comfyui: {snapshot.name}; venv {venv_note}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pusa-fw-comfyui-") as scratch_name:
        scratch = Path(scratch_name)
        install_started = time.perf_counter()
        _pip(python, "install", "--no-deps", "--force-reinstall", str(_tree_copy(scratch)))
        install_seconds = time.perf_counter() - install_started
        with tarfile.open(snapshot) as archive:
            archive.extractall(scratch / "comfy", filter="data")
        source = next(path.parent for path in (scratch / "comfy").glob("*/main.py"))
        base = scratch / "base"
        (base / "custom_nodes").mkdir(parents=True)
        shutil.copytree(
            REPO / "plugins" / "pusa_fw_comfy",
            base / "custom_nodes" / "pusa_fw_comfy",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        (scratch / "work").mkdir()
        print(
            f"test-comfyui: pusa-fw installed in {install_seconds:.0f} s, ComfyUI unpacked; running",
            flush=True,
        )
        if "--bench" in sys.argv[1:]:  # make bench-comfyui: the sampler benchmark in the same venv
            command = [
                str(python),
                str(REPO / "benchmarks" / "bench_comfy_sampler.py"),
                "--comfy",
                str(source),
            ]
        else:
            command = [
                str(python),
                str(HERE / "scenario.py"),
                "--comfy",
                str(source),
                "--base",
                str(base),
                "--work",
                str(scratch / "work"),
                "--repo",
                str(REPO),
                *sys.argv[1:],  # e.g. --only ti2v_5b: a subset of the workflows
            ]
        status = subprocess.run(
            command,
            check=False,
        ).returncode
    print(f"test-comfyui: {'done' if status == 0 else 'FAILED'} in {time.perf_counter() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
