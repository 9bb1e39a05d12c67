"""A session socket relayed between a client and a real server, frame by frame.

Tests that need the server to send something it does not send yet (or something broken) put this
between a Scene and a real ``dpkit serve``: every text frame passes through unchanged, and after
each server frame ``after`` may send extra ones down to the client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web


async def relay_frames(
    downstream: web.WebSocketResponse,
    server_url: str,
    query: Mapping[str, str],
    after: Callable[[str], Awaitable[None]],
) -> None:
    """Relay ``downstream`` (prepared) to the server's ``/session`` until either side closes;
    ``after(name)`` runs after each server frame named ``name`` has been passed on."""
    url = server_url.replace("http://", "ws://") + "/session"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, params=dict(query)) as upstream,
    ):

        async def up() -> None:
            async for message in downstream:
                if message.type is aiohttp.WSMsgType.TEXT:
                    await upstream.send_str(message.data)
            await upstream.close()

        pump = asyncio.create_task(up())
        async for message in upstream:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            await downstream.send_str(message.data)
            await after(json.loads(message.data)["name"])
        await downstream.close()
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
