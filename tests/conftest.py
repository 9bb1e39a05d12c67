"""Shared fixtures: real dpkit servers on a free loopback port, stopped by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from dpkit.server import DpkitServer
from tests.support import ServerFactory, make_settings


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start real servers on 127.0.0.1 port 0; every one is stopped when the test ends."""
    started = 0
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> DpkitServer:
            nonlocal started
            started += 1
            data_dir = tmp_path / f"data{started}"
            server = DpkitServer(make_settings(data_dir, **overrides))
            return await stack.enter_async_context(server)

        yield start


@pytest.fixture
async def server(start_server: ServerFactory) -> DpkitServer:
    """One running server with the test settings."""
    started: DpkitServer = await start_server()
    return started
