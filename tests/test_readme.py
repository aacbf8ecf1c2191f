"""Every Python block of README.md runs, in order, in one namespace (like a reader pasting them into a REPL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every fenced ```python block."""
    return [(text[: match.start()].count("\n") + 2, match.group(1)) for match in BLOCK.finditer(text)]


def test_the_block_parser_finds_fenced_python_only() -> None:
    text = "intro\n```python\nx = 1\n```\n```\nshell\n```\n```python\ny = x + 1\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = x + 1\n")]


def test_every_readme_python_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "the tour's blocks were not found"
    monkeypatch.chdir(tmp_path)  # blocks may write files (heatmaps, a tiny model)
    namespace: dict[str, object] = {"__name__": "readme"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; do not fight other processes for cores
    try:
        for line, code in blocks:
            try:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 - the README is ours
            except Exception as error:  # name the block that failed
                raise AssertionError(
                    f"README.md block at line {line} failed: {type(error).__name__}: {error}"
                ) from error
    finally:
        torch.set_num_threads(threads)
