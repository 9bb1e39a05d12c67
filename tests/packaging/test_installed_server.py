"""A server installed from the wheel with ``dpkit[server]``, run as a new user runs it.

``dpkit serve`` runs from an empty directory with an empty home (so no source tree, no
``node_modules`` and no earlier data dir can help it), and the reference page at ``/`` is driven
to Connected in Debian's Chromium: once with the Web SDK fetched by dpkit itself from the npm
registry, once with ``--web-sdk-dir`` and the registry unreachable.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import browser
from tests.browser.test_web_sdk import connect, open_page
from tests.packaging.installed import REPO, Dist, Venv, make_venv
from tests.served import read_log, stop
from tests.support import UNIT

__all__ = ["browser"]  # the Chromium fixture, shared with the browser tests

pytestmark = pytest.mark.timeout(900)

BANNER = re.compile(r"dpkit serve on (\S+)")
PINNED = "15.8.1"
UNREACHABLE_REGISTRY = "http://127.0.0.1:9"
BUNDLES = REPO / "node_modules" / "@soulmachines" / "smwebsdk" / "bundles"
DEVICES = ["microphone", "camera"]  # Chromium's fake devices, permitted


@pytest.fixture(scope="module")
def server_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """``pip install 'dpkit[server]'`` from a freshly built wheel."""
    root = tmp_path_factory.mktemp("server") / "venv"
    return make_venv(root, f"dpkit[server] @ {dist.wheel.as_uri()}")


@dataclass
class InstalledServer:
    url: str
    home: Path
    log_path: Path

    def log(self) -> str:
        return read_log(self.log_path)


def _make_dirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)


@asynccontextmanager
async def installed_serve(
    venv: Venv, workdir: Path, *args: str, environ: dict[str, str] | None = None
) -> AsyncIterator[InstalledServer]:
    """``dpkit serve`` from ``venv``, in an empty directory with an empty home."""
    home, cwd = workdir / "home", workdir / "empty"
    _make_dirs(home, cwd)
    log_path = workdir / "server.log"
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "COLUMNS": "200", **(environ or {})}
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            str(venv.dpkit),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ice-address",
            "127.0.0.1",
            "--log-level",
            "INFO",
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        async with asyncio.timeout(60 * UNIT):
            while (match := BANNER.search(read_log(log_path))) is None:
                assert process.returncode is None, read_log(log_path)
                await asyncio.sleep(0.05)
        yield InstalledServer(match.group(1), home, log_path)
    finally:
        await stop(process)


def installed_copy(home: Path) -> Path:
    return home / ".local" / "share" / "dpkit" / "web-sdk" / PINNED / "smwebsdk.js"


async def test_the_page_connects_with_the_web_sdk_dpkit_fetched_itself(
    server_venv: Venv, browser: Browser, tmp_path: Path
) -> None:
    async with installed_serve(server_venv, tmp_path) as server:
        banner = f"{PINNED} will be fetched from https://registry.npmjs.org on first use"
        assert banner in server.log(), "the banner does not say where the SDK comes from"
        assert not installed_copy(server.home).exists()
        page = await open_page(browser, server.url, permissions=DEVICES)
        seen = await connect(page)
        assert seen["error"] is None, seen
        assert seen["sessionId"]
        assert [state["name"] for state in seen["states"]][-1] == "Connected"
        assert installed_copy(server.home).is_file()
        assert f"fetching the page's Web SDK {PINNED} from https://registry.npmjs.org" in (
            server.log()
        )
        assert "Traceback" not in server.log()


async def test_the_page_connects_from_web_sdk_dir_with_the_registry_unreachable(
    server_venv: Venv, browser: Browser, tmp_path: Path
) -> None:
    assert (BUNDLES / "smwebsdk.js").is_file(), "scripts/setup installs the Web SDK for tests"
    unreachable = {"DPKIT_NPM_REGISTRY": UNREACHABLE_REGISTRY, "npm_config_registry": ""}
    async with installed_serve(
        server_venv, tmp_path, "--web-sdk-dir", str(BUNDLES), environ=unreachable
    ) as server:
        assert str(BUNDLES) in server.log()
        page = await open_page(browser, server.url, permissions=DEVICES)
        seen = await connect(page)
        assert seen["error"] is None, seen
        assert [state["name"] for state in seen["states"]][-1] == "Connected"
        assert not installed_copy(server.home).exists()
        assert "Traceback" not in server.log()
