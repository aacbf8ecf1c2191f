"""The reference fixtures in the repository are complete and unchanged: each file matches its manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Every reference fixture set stored in the repository (each with its own manifest.json and README.md).
FIXTURE_SETS = ("wan_reference", "wan22_reference")


@pytest.mark.parametrize("set_name", FIXTURE_SETS)
def test_every_fixture_file_matches_its_manifest_entry(fixtures_dir: Path, set_name: str) -> None:
    fixtures_dir = fixtures_dir.parent / set_name
    assert (fixtures_dir / "README.md").is_file(), f"{set_name} has no README.md"
    manifest = json.loads((fixtures_dir / "manifest.json").read_text())
    listed = {entry["path"]: entry for entry in manifest["files"]}
    present = {
        path.relative_to(fixtures_dir).as_posix()
        for path in fixtures_dir.rglob("*")
        if path.is_file() and path.name not in {"manifest.json", "README.md"}
    }
    missing = sorted(set(listed) - present)
    assert present == set(listed), f"unlisted: {sorted(present - set(listed))}, missing: {missing}"
    for relative, entry in listed.items():
        path = fixtures_dir / relative
        assert path.stat().st_size == entry["bytes"], relative
        assert _sha256(path) == entry["sha256"], f"{relative} differs from its manifest SHA-256"


def test_no_test_names_a_path_outside_the_repository() -> None:
    tests_dir = Path(__file__).resolve().parent
    offenders = [
        path.relative_to(tests_dir).as_posix()
        for path in tests_dir.rglob("*.py")
        if path.name != Path(__file__).name and any(
            marker in path.read_text() for marker in ('"shared"', "'shared'", "../shared")
        )
    ]
    assert not offenders, f"tests that read ../shared (use tests/fixtures/ instead): {offenders}"
