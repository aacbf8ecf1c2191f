"""The wheel that `pip wheel` builds from this checkout holds every package and subpackage, nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# pyproject's package discovery looks in these folders; every `pusa_fw*` package there must ship.
SEARCH_ROOTS = (REPO, REPO / "schedules", REPO / "plugins")
PACKAGE_ROOTS = {
    package.name: root
    for root in SEARCH_ROOTS
    for package in root.glob("pusa_fw*")
    if (package / "__init__.py").is_file()
}


def _expected_modules() -> set[str]:
    """Every `.py` file of the three import packages, as its path inside a wheel."""
    expected = set()
    for package, root in PACKAGE_ROOTS.items():
        for module in (root / package).rglob("*.py"):
            expected.add(module.relative_to(root).as_posix())
    return expected


def test_wheel_contains_every_subpackage(tmp_path: Path) -> None:
    source = tmp_path / "source"  # build from a copy: setuptools writes build/ and *.egg-info in place
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pusa_fw", "schedules", "plugins"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheel_dir = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(wheel_dir), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheel_dir.glob("pusa_fw-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    subpackages = {name for name in _expected_modules() if name.endswith("/__init__.py")}
    assert {"pusa_fw_wan/dit/__init__.py", "pusa_fw_wan/weights/__init__.py"} <= subpackages
    missing = sorted(_expected_modules() - names)
    assert not missing, f"modules missing from the wheel: {missing}"
    assert "pusa_fw/py.typed" in names
    shipped = {path.relative_to(REPO / "plugins").as_posix()
               for folder in ("weights", "assets", "recipes")
               for path in (REPO / "plugins" / "pusa_fw_toy" / folder).rglob("*") if path.is_file()}
    assert "pusa_fw_toy/weights/MANIFEST.json" in shipped and "pusa_fw_toy/assets/i2v_first.png" in shipped
    missing_data = sorted(shipped - names)
    assert not missing_data, f"toy weights, assets or recipes missing from the wheel: {missing_data}"
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == set(PACKAGE_ROOTS), f"unexpected top-level entries in the wheel: {top_level}"
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "pusa_fw_wan.hooks" in text and "pusa_fw_schedules.hooks" in text and "pusa-fw" in text
    assert {"pusa_fw", "pusa_fw_schedules", "pusa_fw_wan"} <= set(PACKAGE_ROOTS)
