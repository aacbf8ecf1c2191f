"""What a package's modules import, read from their source (AST), for the import-boundary tests."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """Every module an import statement in `path` names (top level, in functions, relative ones resolved).

    Args:
        path: a Python source file.
        package: the dotted package the file belongs to (resolves ``from . import x``).

    Returns:
        ``(line, dotted module name)`` per import statement (per alias for plain ``import``).
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
    return found


def package_modules(package: object) -> list[tuple[Path, str]]:
    """Every source file of an imported package with the dotted package it belongs to."""
    root = Path(package.__file__).parent  # type: ignore[attr-defined]
    return [(path, ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1]))
            for path in sorted(root.rglob("*.py"))]
