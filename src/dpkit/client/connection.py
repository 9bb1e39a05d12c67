"""One attempt to connect: a session socket and a peer connection driven by the client machine.

:class:`Connection` opens the socket, feeds the server's frames to
:class:`~dpkit.protocol.client.ClientSession` and carries out the actions it returns. Its
:meth:`Connection.connect` returns the session id once the machine says ``ConnectSucceeded`` and
raises the machine's connection error otherwise; after that, the socket keeps being read by a task
the connection owns, until the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from ssl import SSLContext

import aiohttp

from dpkit.client.devices import UserMedia
from dpkit.client.peer import UserPeer
from dpkit.client.reach import advice_for
from dpkit.errors import (
    ConnectionError_,
    InvalidStateError,
    ProtocolError,
    ServerConnectionFailed,
)
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
    Established,
    Frame,
    Ice,
    Offer,
    SceneRequest,
    UpdateOffer,
    UserCamera,
    VideoBounds,
    WebRtcEvent,
    serialize_frame,
)
from dpkit.protocol.states import ConnectionState, ConnectionStateData
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.client")

#: How dpkit's client names itself to the server (the journal records the client kind).
USER_AGENT = "dpkit-python"
#: How long closing the peer connection may take before its parts are stopped one by one.
PEER_CLOSE_TIMEOUT_S = 5.0


def new_http_session() -> aiohttp.ClientSession:
    """The HTTP session a connect asks for its token and opens its sockets on.

    Without default headers: the token request goes as before, and each socket names dpkit's
    client itself (:data:`USER_AGENT`).
    """
    return aiohttp.ClientSession()


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
        ssl: SSLContext | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self._url = url
        # How wss:// sockets are verified: the given context, or the system's CAs (True).
        self._ssl: SSLContext | bool = ssl if ssl is not None else True
        self._token = access_token
        self._machine = ClientSession(state)
        self._media = media
        self._addresses = ice_addresses
        self._bounds = video_bounds
        self._user_text = user_text
        self._on_state = on_state
        self._on_ended = on_ended
        self._on_frame = on_frame
        # The HTTP session the sockets open on; the connection owns it (and closes it) either way.
        # A given one already holds the token request's kept-alive connection to the server,
        # which the session socket then reuses (no second TCP, or TLS, handshake).
        self._http: aiohttp.ClientSession | None = http
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.peer: UserPeer | None = None
        self._tasks = TaskOwner("connection")
        self._outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # The orchestration socket, when ``accepted`` names one (docs/protocol.md, section 8).
        self._control_url: str | None = None
        self._control: aiohttp.ClientWebSocketResponse | None = None
        self._control_queue: list[str] = []

    @property
    def session_id(self) -> str | None:
        return self._machine.session_id

    @property
    def socket_open(self) -> bool:
        """Whether the session socket is open (from before the handshake until it closes)."""
        return self._ws is not None and not self._ws.closed

    @property
    def phase(self) -> ClientPhase:
        return self._machine.phase

    @property
    def established(self) -> Established | None:
        """The server's ``established`` frame (its settings), once it came."""
        return self._machine.established

    @property
    def accepted(self) -> Accepted | None:
        """The server's ``accepted`` frame, once it came."""
        return self._machine.accepted

    async def connect(self) -> str:
        """Open the socket and run the handshake; return the session id or raise its error."""
        if self._http is None:
            self._http = new_http_session()
        try:
            self._ws = await self._http.ws_connect(
                self._url,
                params={"access_token": self._token},
                headers={"User-Agent": USER_AGENT},
                heartbeat=20.0,
                autoping=True,
                ssl=self._ssl,
            )
        except aiohttp.WSServerHandshakeError as exc:
            await self.close()
            raise ServerConnectionFailed(
                _handshake_message(exc), advice=_handshake_advice(exc, self._url)
            ) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            await self.close()
            raise ServerConnectionFailed(
                f"cannot open the session socket at {self._url}: {exc}",
                advice=advice_for(self._url, exc),
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

    async def send_scene_request(self, request: SceneRequest) -> None:
        """Send a ``scene`` request; the Web SDK sends these once connected."""
        if self._machine.phase is not ClientPhase.CONNECTED or self._ws is None:
            raise InvalidStateError(f"cannot send a scene request: session is {self.phase.value}")
        await self._ws.send_str(serialize_frame(request))

    async def disconnect(self) -> None:
        """End the session on purpose (``close {reason: "normal"}``) and release everything."""
        if self._ws is not None and not self._ws.closed:
            await self._execute(self._machine.disconnect())
        await self.close()

    async def close(self) -> None:
        """Release the socket, peer connection and tasks. Idempotent, and bounded in time."""
        try:
            if self._control is not None and not self._control.closed:
                await self._control.close()
            await self._tasks.close()
            if self._ws is not None and not self._ws.closed:
                await self._ws.close()
            if self.peer is not None:
                await self._close_peer(self.peer)
        finally:
            if self._http is not None:
                await self._http.close()
        if not self._outcome.done():
            self._outcome.set_exception(ServerConnectionFailed("the connection was closed"))
            self._outcome.exception()  # retrieved: nobody may be waiting any more

    @staticmethod
    async def _close_peer(peer: UserPeer) -> None:
        try:
            async with asyncio.timeout(PEER_CLOSE_TIMEOUT_S):
                await peer.close()
        except TimeoutError:
            # aiortc waits for ever on a close of its own that died (its tasks were cancelled).
            logger.warning(
                "the peer connection did not close within %g s: stopping its parts",
                PEER_CLOSE_TIMEOUT_S,
            )
            await peer.abandon()

    async def abandon(self) -> None:
        """Release everything while the event loop shuts down (its tasks are being cancelled).

        As :meth:`close`, but the socket and the HTTP session go first (they cannot hang) and
        the peer connection goes through :meth:`UserPeer.abandon`.
        """
        for closing in (self._control, self._ws):
            if closing is not None and not closing.closed:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await closing.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._tasks.close()
        if self._http is not None:
            await self._http.close()
        if self.peer is not None:
            await self.peer.abandon()
        if not self._outcome.done():
            self._outcome.cancel()

    # --- reading and carrying out -----------------------------------------------------------

    async def _read(self) -> None:
        try:
            await self._read_frames()
        except Exception as exc:
            # A failure here must not leave connect() waiting for ever.
            logger.exception("the session socket reader failed")
            self._fail(ServerConnectionFailed(f"the client failed while connecting: {exc!r}"))

    async def _read_frames(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                await self._relay_to_control(message.data)
                await self._execute(self._machine.receive_text(message.data))
                self._open_control_if_asked()
            elif message.type is aiohttp.WSMsgType.ERROR:
                logger.warning("session socket error: %s", self._ws.exception())
                break
        await self._execute(self._machine.socket_closed())

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
            # As the browser does once connected: say whether the camera is on.
            camera_on = self.peer is not None and self.peer.camera.source is not None
            await self.send(UserCamera(active=camera_on))
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

    # --- orchestration ------------------------------------------------------------------------

    def _open_control_if_asked(self) -> None:
        accepted = self._machine.accepted
        if accepted is None or accepted.control_url is None or self._control_url is not None:
            return
        self._control_url = accepted.control_url
        self._tasks.spawn(self._run_control(accepted.control_url), "control")

    async def _relay_to_control(self, text: str | bytes) -> None:
        """Every ``scene`` frame from the session server goes on to the orchestration server."""
        if self._control_url is None or not _is_scene_frame(text):
            return
        raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
        if self._control is None:
            self._control_queue.append(raw)
        elif not self._control.closed:
            await self._control.send_str(raw)

    async def _run_control(self, url: str) -> None:
        assert self._http is not None
        try:
            self._control = await self._http.ws_connect(
                url,
                params={"access_token": self._token},
                headers={"User-Agent": USER_AGENT},
                ssl=self._ssl,
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            logger.warning("cannot open the orchestration socket %s: %s", url, exc)
            await self._execute(self._machine.control_lost("controlFailed"))
            return
        queued, self._control_queue = self._control_queue, []
        for raw in queued:
            await self._control.send_str(raw)
        reason = "controlDisconnected"
        async for message in self._control:
            if message.type is aiohttp.WSMsgType.TEXT:
                # Everything from the orchestration server goes to the session server as it is.
                if self._ws is not None and not self._ws.closed:
                    await self._ws.send_str(message.data)
            elif message.type is aiohttp.WSMsgType.ERROR:
                reason = "controlFailed"
                break
        await self._execute(self._machine.control_lost(reason))

    async def _watch_transport(self, peer: UserPeer) -> None:
        await peer.wait_failed()
        if self._machine.phase is not ClientPhase.CLOSED:
            await self._execute(self._machine.transport_failed())


def _is_scene_frame(text: str | bytes) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("category") == "scene"


def _handshake_message(exc: aiohttp.WSServerHandshakeError) -> str:
    if exc.status == 401:
        return "the server refused the access token: it is invalid or has expired"
    if exc.status == 503:
        return "the server is shutting down"
    return f"the server refused the session socket (HTTP {exc.status})"


def _handshake_advice(exc: aiohttp.WSServerHandshakeError, url: str) -> str:
    if exc.status == 401:
        return (
            "Get a fresh access token: connect with the API key, which asks the token endpoint "
            "for one (tokens expire)."
        )
    if exc.status == 503:
        return "The server is stopping: connect again in a moment, or to another server."
    if exc.status == 404:
        return f"{url} is not a dpkit session socket: check the URL (dpkit's is <server>/session)."
    return ServerConnectionFailed.advice
