"""The protocol core does no I/O: standard library only, no asyncio, no clock, no sockets."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import dpkit.errors
import dpkit.protocol
from tests.imports import imported_modules

PROTOCOL_FILES = sorted(Path(dpkit.protocol.__file__).parent.glob("*.py"))
ERRORS_FILE = Path(dpkit.errors.__file__)
FORBIDDEN = {"asyncio", "time", "socket"}


def is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def test_protocol_package_has_the_expected_modules() -> None:
    """The check below reads every module of dpkit.protocol."""
    assert {path.stem for path in PROTOCOL_FILES} >= {
        "__init__",
        "messages",
        "states",
        "actions",
        "client",
        "server",
    }


@pytest.mark.parametrize("path", PROTOCOL_FILES, ids=lambda p: p.name)
def test_protocol_imports_only_stdlib_and_itself(path: Path) -> None:
    """A protocol module imports only the standard library, dpkit.protocol and dpkit.errors."""
    for module in imported_modules(path):
        own = module == "dpkit.errors" or module.split(".")[:2] == ["dpkit", "protocol"]
        assert is_stdlib(module) or own, f"{path.name} imports {module}"


def test_errors_imports_only_stdlib() -> None:
    """dpkit.errors, which the protocol core uses, imports only the standard library."""
    for module in imported_modules(ERRORS_FILE):
        assert is_stdlib(module), f"errors.py imports {module}"


@pytest.mark.parametrize("path", [*PROTOCOL_FILES, ERRORS_FILE], ids=lambda p: p.name)
def test_no_async_clock_or_socket(path: Path) -> None:
    """No protocol module awaits, defines async code, or imports asyncio, time or socket."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    asynchronous = (ast.Await, ast.AsyncFunctionDef, ast.AsyncFor, ast.AsyncWith)
    assert not [type(n).__name__ for n in ast.walk(tree) if isinstance(n, asynchronous)]
    roots = {module.split(".")[0] for module in imported_modules(path)}
    assert not roots & FORBIDDEN, f"{path.name} imports {roots & FORBIDDEN}"


def test_the_checker_sees_third_party_imports(tmp_path: Path) -> None:
    """The import check flags a third-party or forbidden import (it is not vacuous)."""
    source = tmp_path / "bad.py"
    source.write_text("import aiohttp\nfrom time import monotonic\nfrom . import sibling\n")
    assert imported_modules(source) == ["aiohttp", "time"]
    assert not is_stdlib("aiohttp")
    assert is_stdlib("time")
