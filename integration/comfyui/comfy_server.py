"""A headless ComfyUI server for the integration run: start, queue API workflows, wait on /history, stop.

Standard library only. The server runs in its own process group so `ComfyServer.stop` ends it and every
child it started; the log goes to a file whose tail is shown when something fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["ComfyServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ComfyServer:
    """``main.py --cpu`` of an unpacked ComfyUI, listening on 127.0.0.1.

    Args:
        python: the interpreter of ComfyUI's venv.
        source: the unpacked ComfyUI folder (holds ``main.py``).
        base: its ``--base-directory`` (models, custom_nodes, input, output).
        log: file that receives the server's stdout and stderr.
        extra_args: more ``main.py`` options.
    """

    def __init__(
        self, python: Path, source: Path, base: Path, log: Path, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.python, self.source, self.base, self.log = python, source, base, log
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> float:
        """Start the server and wait until it answers; returns the seconds it took."""
        started = time.perf_counter()
        command = [
            str(self.python),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--base-directory",
            str(self.base),
            *self.extra_args,
        ]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                command,
                cwd=self.source,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                self.get("/system_stats", timeout=2.0)
                return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """End the server's whole process group (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str, timeout: float = 30.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def queue(self, workflow: dict[str, Any]) -> str:
        """POST an API-format workflow; returns its prompt id.

        Raises:
            RuntimeError: ComfyUI refused it (its validation errors are in the message).
        """
        body = json.dumps({"prompt": workflow, "client_id": "pusa-fw-integration"}).encode()
        request = urllib.request.Request(
            self.url + "/prompt", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return str(json.loads(response.read())["prompt_id"])
        except urllib.error.HTTPError as error:
            raise RuntimeError(
                f"ComfyUI refused the workflow: {error.read().decode(errors='replace')[:2000]}"
            ) from None

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The /history entry of `prompt_id` once ComfyUI has finished it (success or error)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.25)
        raise RuntimeError(f"workflow {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def output_file(self, entry: dict[str, Any], node_id: str, kind: str) -> Path:
        """The file node `node_id` saved (``kind``: the ui key, e.g. ``latents``) in its output folder."""
        saved = entry["outputs"][node_id][kind][0]
        return self.base / saved.get("type", "output") / saved.get("subfolder", "") / saved["filename"]
