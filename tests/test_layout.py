"""The client never imports the server: ``pip install dpkit`` is the client, without the server.

Read from the source (nothing imported to find out): every module of the client side — the
client SDK, its devices, the protocol core and the shared helpers — imports no ``dpkit.server``
module, directly or through another client-side module, and no server-only dependency.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dpkit
from tests.imports import imported_modules

SOURCE = Path(dpkit.__file__).resolve().parent
CLIENT_SIDE = ["client", "media", "protocol"]
SHARED = ["__init__", "errors", "apikey", "rtc", "tasks", "extras", "lazy", "collector"]
SERVER_ONLY_DEPENDENCIES = {"espeakng_loader"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def client_side_files() -> list[Path]:
    files = [SOURCE / f"{name}.py" for name in SHARED]
    for package in CLIENT_SIDE:
        files += sorted((SOURCE / package).rglob("*.py"))
    return files


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


@pytest.mark.parametrize("path", client_side_files(), ids=lambda p: module_name(p))
def test_client_side_module_imports_nothing_of_the_server(path: Path) -> None:
    for module in imported_modules(path, package_of(path)):
        assert not within(module, "dpkit.server"), f"{module_name(path)} imports {module}"
        assert not within(module, "dpkit.cli"), f"{module_name(path)} imports {module}"
        root = module.split(".")[0]
        assert root not in SERVER_ONLY_DEPENDENCIES, f"{module_name(path)} imports {module}"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_within_is_a_package_test_not_a_prefix_test() -> None:
    assert within("dpkit.server.rtc", "dpkit.server")
    assert within("dpkit.cli", "dpkit.cli")
    assert not within("dpkit.client", "dpkit.cli")


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    """The check sees ``from ..server import x`` too (it is not vacuous for relative imports)."""
    source = tmp_path / "bad.py"
    source.write_text("from ..server import app\nfrom . import peer\nimport dpkit.server.rtc\n")
    assert imported_modules(source, "dpkit.client") == [
        "dpkit.server",
        "dpkit.client",
        "dpkit.server.rtc",
    ]


def test_using_the_client_loads_no_server_module() -> None:
    """At run time too: the client's classes and devices load, and no dpkit.server module."""
    script = (
        "import sys\n"
        "import dpkit\n"
        "from dpkit import Scene, SyntheticDevices, NoDevices, RetryOptions, Persona\n"
        "import dpkit.media.capture, dpkit.media.files, dpkit.media.synthetic\n"
        "print(sorted(m for m in sys.modules if m.startswith('dpkit.server')"
        " or m in ('espeakng_loader', 'sounddevice')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_import_dpkit_loads_no_aiortc() -> None:
    """``import dpkit`` is cheap: the client's classes, which need aiortc, load when first used."""
    script = "import sys, dpkit\nprint('aiortc' in sys.modules, 'aiohttp' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
