"""A session socket driven frame by frame, with a real aiortc peer connection for the media.

Tests of the server's rules and limits need to send what a well-behaved SDK never would, from an
address of their choosing (any of 127.0.0.0/8 is this machine), with a token of their choosing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from dpkit.protocol.messages import (
    Accepted,
    Answer,
    Connected,
    DpkitEvent,
    Established,
    Frame,
    Ice,
    Offer,
    parse_frame,
    serialize_frame,
)
from dpkit.rtc import ice_addresses
from tests.support import UNIT

#: dpkit's informational frames, which a client may ignore (docs/protocol.md, section 9).
PROGRESS_REPORTS = frozenset({"assets", "queue"})


class Reachable(Protocol):
    """A server: in this process (DpkitServer) or another (ServedProcess)."""

    @property
    def url(self) -> str: ...

    def api_key(self, label: str = "default") -> str: ...


class RawClient:
    """A session socket driven by hand, with a real aiortc peer connection for the media."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pc = RTCPeerConnection()

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else serialize_frame(frame))

    async def receive(self, within: float = 10 * UNIT) -> Frame | None:
        """The next frame (skipping dpkit's progress reports), or None once the socket closed."""
        while True:
            message = await asyncio.wait_for(self.ws.receive(), within)
            if message.type is not aiohttp.WSMsgType.TEXT:
                return None
            frame = parse_frame(message.data)
            if not (isinstance(frame, DpkitEvent) and frame.name in PROGRESS_REPORTS):
                return frame

    async def until_closed(self, within: float = 10 * UNIT) -> list[Frame]:
        """Every frame until the server closes the socket."""
        frames = []
        while (frame := await self.receive(within)) is not None:
            frames.append(frame)
        return frames

    async def make_offer(self) -> str:
        self.pc.addTransceiver("audio", "sendrecv")
        self.pc.addTransceiver("video", "sendrecv")
        with ice_addresses(["127.0.0.1"]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        return str(self.pc.localDescription.sdp)

    async def offer(self) -> None:
        await self.send(Offer(await self.make_offer()))

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def connect(self) -> Connected:
        """The whole handshake: established, offer, accepted, answer, connected."""
        assert isinstance(await self.receive(), Established)
        await self.offer()
        assert isinstance(await self.receive(), Accepted)
        answer = await self.receive()
        assert isinstance(answer, Answer)
        await self.answer(answer.sdp)
        await self.send(Ice("", complete=True))
        connected = await self.receive()
        assert isinstance(connected, Connected), connected
        return connected


def http_session(local_address: str | None = None) -> aiohttp.ClientSession:
    """An HTTP client whose connections come from ``local_address`` (None: the default)."""
    local = (local_address, 0) if local_address else None
    connector = aiohttp.TCPConnector(local_addr=local, ssl=False)
    return aiohttp.ClientSession(connector=connector)


async def token_for(
    http: aiohttp.ClientSession, server: Reachable, label: str = "default"
) -> dict[str, Any]:
    async with http.get(server.url + "/api/token", headers={"key": server.api_key(label)}) as reply:
        data: dict[str, Any] = await reply.json()
        return data


@asynccontextmanager
async def socket_with(
    http: aiohttp.ClientSession, token: dict[str, Any]
) -> AsyncIterator[RawClient]:
    """A raw client on the socket that ``token`` opens; its peer connection closed at the end."""
    async with http.ws_connect(token["url"], params={"access_token": token["jwt"]}) as ws:
        client = RawClient(ws)
        try:
            yield client
        finally:
            await client.pc.close()


@asynccontextmanager
async def raw_client(
    server: Reachable, *, label: str = "default", local_address: str | None = None
) -> AsyncIterator[RawClient]:
    async with http_session(local_address) as http:
        token = await token_for(http, server, label)
        async with socket_with(http, token) as client:
            yield client
