"""One attempt to connect: a session socket and a peer connection driven by the client machine.

:class:`Connection` opens the socket, feeds the server's frames to
:class:`~dpkit.protocol.client.ClientSession` and carries out the actions it returns. Its
:meth:`Connection.connect` returns the session id once the machine says ``ConnectSucceeded`` and
raises the machine's connection error otherwise; after that, the socket keeps being read by a task
the connection owns, until the session ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from dpkit.client.devices import UserMedia
from dpkit.client.peer import UserPeer
from dpkit.errors import ConnectionError_, ProtocolError, ServerConnectionFailed
from dpkit.protocol.actions import (
    Action,
    AddRemoteCandidate,
    ApplyAnswer,
    CloseSocket,
    ConnectFailed,
    ConnectSucceeded,
    CreatePeerConnection,
    DeliverFrame,
    SendFrame,
    SessionEnded,
    StateChanged,
)
from dpkit.protocol.client import ClientPhase, ClientSession
from dpkit.protocol.messages import (
    Accepted,
    Frame,
    Ice,
    Offer,
    UpdateOffer,
    VideoBounds,
    WebRtcEvent,
    serialize_frame,
)
from dpkit.protocol.states import ConnectionState, ConnectionStateData
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.client")

#: How dpkit's client names itself to the server (the journal records the client kind).
USER_AGENT = "dpkit-python"


class Connection:
    """One session socket and its peer connection."""

    def __init__(
        self,
        *,
        url: str,
        access_token: str,
        state: ConnectionState,
        media: UserMedia,
        ice_addresses: tuple[str, ...] | None,
        video_bounds: tuple[int, int],
        user_text: str | None,
        on_state: Callable[[ConnectionStateData], None],
        on_ended: Callable[[str, str], None],
        on_frame: Callable[[Frame], None],
    ) -> None:
        self._url = url
        self._token = access_token
        self._machine = ClientSession(state)
        self._media = media
        self._addresses = ice_addresses
        self._bounds = video_bounds
        self._user_text = user_text
        self._on_state = on_state
        self._on_ended = on_ended
        self._on_frame = on_frame
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.peer: UserPeer | None = None
        self._tasks = TaskOwner("connection")
        self._outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._done = asyncio.Event()

    @property
    def session_id(self) -> str | None:
        return self._machine.session_id

    @property
    def phase(self) -> ClientPhase:
        return self._machine.phase

    @property
    def accepted(self) -> Accepted | None:
        """The server's ``accepted`` frame, once it came."""
        return self._machine.accepted

    async def connect(self) -> str:
        """Open the socket and run the handshake; return the session id or raise its error."""
        self._http = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        try:
            self._ws = await self._http.ws_connect(
                self._url, params={"access_token": self._token}, heartbeat=20.0, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            await self.close()
            raise ServerConnectionFailed(_handshake_message(exc)) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            await self.close()
            raise ServerConnectionFailed(
                f"cannot open the session socket at {self._url}: {exc}"
            ) from None
        await self._execute(self._machine.socket_opened())
        self._tasks.spawn(self._read(), "reader")
        try:
            return await asyncio.shield(self._outcome)
        except BaseException:
            await self.close()
            raise

    async def send(self, event: WebRtcEvent) -> None:
        await self._execute(self._machine.send(event))

    async def disconnect(self) -> None:
        """End the session on purpose (``close {reason: "normal"}``) and release everything."""
        if self._ws is not None and not self._ws.closed:
            await self._execute(self._machine.disconnect())
        await self.close()

    async def wait_closed(self) -> None:
        await self._done.wait()

    async def close(self) -> None:
        """Release the socket, peer connection and tasks. Idempotent."""
        await self._tasks.close()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self.peer is not None:
            await self.peer.close()
        if self._http is not None:
            await self._http.close()
        if not self._outcome.done():
            self._outcome.set_exception(ServerConnectionFailed("the connection was closed"))
            self._outcome.exception()  # retrieved: nobody may be waiting any more
        self._done.set()

    # --- reading and carrying out -----------------------------------------------------------

    async def _read(self) -> None:
        try:
            await self._read_frames()
        except Exception as exc:
            # A failure here must not leave connect() waiting for ever.
            logger.exception("the session socket reader failed")
            self._fail(ServerConnectionFailed(f"the client failed while connecting: {exc!r}"))
            self._done.set()

    async def _read_frames(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                await self._execute(self._machine.receive_text(message.data))
            elif message.type is aiohttp.WSMsgType.ERROR:
                logger.warning("session socket error: %s", self._ws.exception())
                break
        await self._execute(self._machine.socket_closed())
        self._done.set()

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            await self._carry_out(action)

    async def _carry_out(self, action: Action) -> None:
        if isinstance(action, SendFrame):
            if self._ws is not None and not self._ws.closed:
                await self._ws.send_str(serialize_frame(action.frame))
        elif isinstance(action, CloseSocket):
            if self._ws is not None:
                await self._ws.close()
        elif isinstance(action, StateChanged):
            self._on_state(action.data)
        elif isinstance(action, CreatePeerConnection):
            await self._create_peer(action)
        elif isinstance(action, ApplyAnswer):
            await self._apply_answer(action.sdp)
        elif isinstance(action, AddRemoteCandidate):
            await self._add_candidate(action.ice)
        elif isinstance(action, ConnectSucceeded):
            if not self._outcome.done():
                self._outcome.set_result(action.session_id)
        elif isinstance(action, ConnectFailed):
            self._fail(action.error)
        elif isinstance(action, SessionEnded):
            self._on_ended(action.session_id, action.reason)
        elif isinstance(action, DeliverFrame):
            self._on_frame(action.frame)

    def _fail(self, error: ConnectionError_) -> None:
        if not self._outcome.done():
            self._outcome.set_exception(error)

    async def _create_peer(self, action: CreatePeerConnection) -> None:
        self.peer = UserPeer(self._media, action.ice_servers, self._addresses)
        sdp = await self.peer.make_offer()
        if action.resume_session_id is not None:
            # Resuming: a fresh peer connection's offer for the session we had (an ICE restart).
            await self.send(
                UpdateOffer(sdp, user_text=self._user_text, session_id=action.resume_session_id)
            )
        else:
            await self.send(Offer(sdp, user_text=self._user_text))
        # aiortc puts every candidate in the offer; say so as the browser does once it is done.
        await self.send(Ice(candidate="", sdp_mid="", sdp_mline_index=0, complete=True))
        await self.send(VideoBounds(*self._bounds))

    async def _apply_answer(self, sdp: str) -> None:
        assert self.peer is not None
        try:
            await self.peer.apply_answer(sdp)
        except ProtocolError as exc:
            self._fail(ServerConnectionFailed(f"the server's answer is not usable: {exc.message}"))
            await self._execute(self._machine.disconnect())
            return
        self._tasks.spawn(self._watch_transport(self.peer), "transport")
        if self.peer.media_ready:
            await self._execute(self._machine.media_ready())

    async def _add_candidate(self, ice: Ice) -> None:
        if self.peer is None:
            return
        try:
            await self.peer.add_candidate(ice)
        except ProtocolError as exc:
            logger.warning("ignored a candidate from the server: %s", exc.message)

    async def _watch_transport(self, peer: UserPeer) -> None:
        await peer.wait_failed()
        if self._machine.phase is not ClientPhase.CLOSED:
            await self._execute(self._machine.transport_failed())


def _handshake_message(exc: aiohttp.WSServerHandshakeError) -> str:
    if exc.status == 401:
        return "the server refused the access token: it is invalid or has expired"
    if exc.status == 503:
        return "the server is shutting down"
    return f"the server refused the session socket (HTTP {exc.status})"
