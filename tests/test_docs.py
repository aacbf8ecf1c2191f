"""The docs site: every Python block of every page runs (page by page, in order, in one namespace per page,
like a reader pasting a page into a REPL), the generated reference pages match the code, and every page is
in the navigation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_readme import python_blocks  # the tests folder is on sys.path (pytest prepend mode)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(path for path in DOCS.rglob("*.md") if "reference" not in path.relative_to(DOCS).parts[:1])


def test_the_docs_have_pages_with_code() -> None:
    assert len(PAGES) >= 20
    assert sum(bool(python_blocks(page.read_text(encoding="utf-8"))) for page in PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(DOCS)) for page in PAGES])
def test_every_python_block_of_the_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    blocks = python_blocks(page.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)  # blocks may write files
    namespace: dict[str, object] = {"__name__": "docs"}
    name = page.relative_to(ROOT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for line, code in blocks:
            try:
                exec(compile(code, f"{name}:{line}", "exec"), namespace)  # noqa: S102 - the docs are ours
            except Exception as error:
                raise AssertionError(f"{name} block at line {line} failed: {type(error).__name__}: {error}") from error
    finally:
        torch.set_num_threads(threads)


def test_generated_reference_pages_are_current() -> None:
    result = subprocess.run([sys.executable, str(DOCS / "gen_reference.py"), "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s+([\w/.-]+\.md)\s*$", nav, re.MULTILINE))
    excluded = set(re.findall(r"^  ([\w/.-]+\.md)$", nav.split("exclude_docs: |")[1].split("\n\n")[0], re.MULTILINE))
    assert excluded == {"toy_eval.md", "toy_long_video.md"}, "only the raw eval tables stay out of the site"
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")} - excluded
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"


def test_every_train_run_file_in_the_docs_validates() -> None:
    import tomllib

    from pusa_fw_train.config import validate_train_config

    found = 0
    for page in [ROOT / "README.md", *PAGES]:
        for match in re.finditer(r"^```toml\n(.*?)^```", page.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE):
            if "output_dir" in match.group(1):
                validate_train_config(tomllib.loads(match.group(1)))
                found += 1
    assert found >= 2


def test_the_readme_is_a_front_page_whose_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert text.startswith("# pusa-fw\n\n```\nmake demo\nmake test\n```\n"), "the quick start is the two commands"
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    assert len(targets) >= 10
    missing = [target for target in targets if not target.startswith("http") and not (ROOT / target).exists()]
    assert missing == []
