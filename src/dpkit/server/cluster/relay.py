"""The resume route on a node that does not own the session: its socket relayed to the owner.

A client resuming a persistent session opens ``/server/<node>`` on whichever node its token
endpoint answered from. A node that is not ``<node>`` finds the owner in the cluster's records
and relays the session socket to the owner's ``/server/<node>``, frame by frame both ways, with
the client's own query (its token) and User-Agent; only signalling goes through here, the media
flows between the client and the owner directly (ICE candidates name the owner). The owner sees
the relaying node's address; ``X-Forwarded-For`` carries the client's, which the owner believes
only if the relaying node is among its ``trusted_proxies``.

If the owner is not in the cluster (it died, or never was), or cannot be reached, the client is
told ``close {reason: "noSessionToResume"}`` at once, not left to time out.

The same relay carries a waiting socket that the cluster's queue hands to another node's free
Digital Person (:mod:`dpkit.server.cluster.queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import web

logger = logging.getLogger("dpkit.server.cluster")

CONNECT_TIMEOUT_S = 5.0


async def relay(
    client: web.WebSocketResponse, target: str, headers: dict[str, str], max_msg_size: int
) -> bool:
    """Relay the prepared ``client`` socket to ``target`` until either side closes.

    False if ``target`` could not be reached (nothing was relayed; the caller answers the
    client); True once the relay has run and both sockets are closed.
    """
    async with aiohttp.ClientSession() as http:
        upstream = await open_upstream(http, target, headers, max_msg_size)
        if upstream is None:
            return False
        await pipe(client, upstream)
    return True


async def open_upstream(
    http: aiohttp.ClientSession, target: str, headers: dict[str, str], max_msg_size: int
) -> aiohttp.ClientWebSocketResponse | None:
    """A socket to ``target`` (another node), or None if it cannot be opened (logged)."""
    timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            return await http.ws_connect(
                target, headers=headers, max_msg_size=max_msg_size, timeout=timeout
            )
    except aiohttp.WSServerHandshakeError as exc:
        logger.warning("cluster: %s refused the relay: %s", target.split("?")[0], exc.status)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        logger.warning("cluster: cannot relay to %s: %s", target.split("?")[0], exc)
    return None


async def pipe(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Copy frames both ways until either side closes, then close both."""
    async with upstream:
        to_owner = asyncio.ensure_future(_pump(client, upstream))
        to_client = asyncio.ensure_future(_pump(upstream, client))
        try:
            await asyncio.wait([to_owner, to_client], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_owner, to_client):
                task.cancel()
            await asyncio.gather(to_owner, to_client, return_exceptions=True)
            code = upstream.close_code or client.close_code or aiohttp.WSCloseCode.OK
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.close(code=code)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await upstream.close(code=client.close_code or aiohttp.WSCloseCode.OK)


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    """Copy text and binary frames from ``source`` to ``sink`` until ``source`` closes."""
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        else:
            break
