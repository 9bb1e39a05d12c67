"""What a source file imports, read from its syntax tree (nothing is imported to find out)."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path, package: str = "") -> list[str]:
    """The module names a source file imports.

    Relative imports are resolved against ``package`` (the file's own package, e.g.
    ``dpkit.client``) when it is given, and left out when it is not.
    """
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                names.append(node.module)
            elif package:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join([*base, *([node.module] if node.module else [])]))
    return names
