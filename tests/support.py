"""Test support: the time unit and settings for real servers on loopback."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from dpkit.server import PersonaSettings, Settings

#: Every duration in the tests is a multiple of this (seconds); raise it on a slow machine.
UNIT = float(os.environ.get("DPKIT_TEST_UNIT", "1.0"))

ServerFactory = Callable[..., Any]


async def spawn_dpkit(
    *args: str,
    environ: Mapping[str, str] | None = None,
    stdin: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.PIPE,
    columns: int = 120,
) -> asyncio.subprocess.Process:
    """``python -m dpkit ARGS`` in a process of its own, its output piped back to the test."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dpkit",
        *args,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**(os.environ if environ is None else environ), "COLUMNS": str(columns)},
    )


#: ``dpkit connect`` options for a client that neither asks for nor sends any media.
NO_MEDIA_ARGS = ("--devices", "none", "--request", "none", "--require", "none")


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "capacity": 2,
        "ice_addresses": ("127.0.0.1",),
        "persona": PersonaSettings(video_width=320, video_height=240, video_fps=15),
        "offer_timeout_s": 10 * UNIT,
        "connect_timeout_s": 10 * UNIT,
    }
    values.update(overrides)
    return Settings(**values)


async def until(condition: Callable[[], bool], within: float = 10 * UNIT) -> None:
    """Poll a condition on a server's state, which offers no event for a test to await."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling the server's state from outside
            await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port for the block; yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
