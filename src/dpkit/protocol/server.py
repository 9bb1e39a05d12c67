"""The server's session machine: client frames and local happenings in, actions out. No I/O.

One :class:`ServerSession` per session socket. It enforces the protocol page's server rules by
construction: ``established`` is the first frame it sends, ``connected`` is sent only on
:meth:`ServerSession.transport_connected`, every ending sends ``close {reason}`` before
:class:`~dpkit.protocol.actions.CloseSocket`, and every scene request becomes an
:class:`~dpkit.protocol.actions.AnswerSceneRequest`.

A client frame the table does not allow in the current phase is a protocol violation: the server
tells the client in a ``dpkit/protocolError`` frame and carries on, so one bad client never takes
the server down. A local call the table does not allow raises
:class:`~dpkit.errors.InvalidStateError`.
"""

from __future__ import annotations

import enum
import logging
from typing import cast

from dpkit.errors import InvalidStateError, ProtocolError
from dpkit.protocol.actions import (
    Action,
    AddRemoteCandidate,
    AnswerSceneRequest,
    ClientEvent,
    CloseSocket,
    OrchestrationEvent,
    ReleaseSession,
    SendFrame,
    StartSession,
)
from dpkit.protocol.messages import (
    Accepted,
    Answer,
    Close,
    Connected,
    DiagnosticsLog,
    DpkitEvent,
    Established,
    Frame,
    Ice,
    IceServer,
    KeepAlive,
    Offer,
    SceneEvent,
    SceneRequest,
    SessionSettings,
    Ui,
    UpdateOffer,
    UserCamera,
    UserText,
    VideoBounds,
    VideoStarted,
    WebRtcEvent,
    parse_frame,
)

logger = logging.getLogger("dpkit.server")

#: Scene events an orchestration server sends the session server through the client's relay.
ORCHESTRATION_EVENTS = frozenset({"conversationResponse", "endConversation"})

#: The ending recorded when the socket dropped without a ``close`` frame (dpkit's addition).
CONNECTION_LOST = "connectionLost"


class ServerPhase(enum.Enum):
    """Where one session socket is on the server."""

    OPENED = "opened"
    ESTABLISHED = "established"
    STARTING = "starting"
    ACCEPTED = "accepted"
    CONNECTED = "connected"
    CLOSED = "closed"


class ServerInput(enum.Enum):
    """Everything that can happen to a server session."""

    # from the client
    OFFER = "offer"
    ICE = "ice"
    CLIENT_EVENT = "client event"
    SCENE_REQUEST = "scene request"
    ORCHESTRATION = "orchestration event"
    CLIENT_CLOSE = "close"
    IGNORED_FRAME = "ignored frame"
    SERVER_FRAME = "server-only frame"
    MALFORMED = "malformed frame"
    # from the server's own work
    PERSONA_ASSIGNED = "persona assigned"
    SESSION_STARTED = "session started"
    TRANSPORT_CONNECTED = "transport connected"
    TRANSPORT_FAILED = "transport failed"
    END = "end"
    SOCKET_CLOSED = "socket closed"


FROM_CLIENT = frozenset(
    {
        ServerInput.OFFER,
        ServerInput.ICE,
        ServerInput.CLIENT_EVENT,
        ServerInput.SCENE_REQUEST,
        ServerInput.ORCHESTRATION,
        ServerInput.CLIENT_CLOSE,
        ServerInput.IGNORED_FRAME,
        ServerInput.SERVER_FRAME,
        ServerInput.MALFORMED,
    }
)

P = ServerPhase
I = ServerInput  # noqa: E741 - short names keep the table readable
_LIVE = (P.OPENED, P.ESTABLISHED, P.STARTING, P.ACCEPTED, P.CONNECTED)

#: Every allowed (phase, input) pair and the phase it leads to (None: stay).
SERVER_TRANSITIONS: dict[tuple[ServerPhase, ServerInput], ServerPhase | None] = {
    (P.OPENED, I.PERSONA_ASSIGNED): P.ESTABLISHED,
    (P.ESTABLISHED, I.OFFER): P.STARTING,
    (P.STARTING, I.SESSION_STARTED): P.ACCEPTED,
    (P.ACCEPTED, I.TRANSPORT_CONNECTED): P.CONNECTED,
    **{(phase, I.ICE): None for phase in (P.STARTING, P.ACCEPTED, P.CONNECTED)},
    **{(phase, I.TRANSPORT_FAILED): P.CLOSED for phase in (P.ACCEPTED, P.CONNECTED)},
    **{(phase, i): None for phase in _LIVE for i in (I.CLIENT_EVENT, I.SCENE_REQUEST)},
    **{(phase, I.ORCHESTRATION): None for phase in (P.ACCEPTED, P.CONNECTED)},
    **{(phase, i): None for phase in _LIVE for i in (I.IGNORED_FRAME, I.MALFORMED)},
    **{(phase, i): P.CLOSED for phase in _LIVE for i in (I.CLIENT_CLOSE, I.END, I.SOCKET_CLOSED)},
    # Late happenings after the end are dropped: the I/O layer may race the close.
    **{(P.CLOSED, i): None for i in ServerInput},
}

_CLIENT_EVENTS = (VideoBounds, UserCamera, VideoStarted, KeepAlive, Ui, UserText)
_SERVER_FRAMES = (Established, Accepted, Answer, Connected)


class ServerSession:
    """One session socket's protocol state on the server."""

    def __init__(self) -> None:
        self.phase = ServerPhase.OPENED
        self.session_id: str | None = None
        self.offer: Offer | None = None
        self.ending: str | None = None

    # --- inputs from the client -------------------------------------------------------------

    def receive_text(self, text: str | bytes) -> list[Action]:
        """Handle one text frame from the client."""
        try:
            frame = parse_frame(text)
        except ProtocolError as exc:
            return self._step(I.MALFORMED, exc)
        return self.receive(frame)

    def receive(self, frame: Frame) -> list[Action]:
        """Handle one parsed frame from the client."""
        if isinstance(frame, Offer):
            return self._step(I.OFFER, frame)
        if isinstance(frame, Ice):
            return self._step(I.ICE, frame)
        if isinstance(frame, Close):
            return self._step(I.CLIENT_CLOSE, frame)
        if isinstance(frame, _CLIENT_EVENTS):
            return self._step(I.CLIENT_EVENT, frame)
        if isinstance(frame, SceneRequest):
            return self._step(I.SCENE_REQUEST, frame)
        if isinstance(frame, SceneEvent) and frame.name in ORCHESTRATION_EVENTS:
            return self._step(I.ORCHESTRATION, frame)
        if isinstance(frame, DiagnosticsLog):
            return self._step(I.CLIENT_EVENT, frame)
        if isinstance(frame, _SERVER_FRAMES):
            return self._step(I.SERVER_FRAME, frame)
        return self._step(I.IGNORED_FRAME, frame)

    # --- inputs from the server's own work --------------------------------------------------

    def persona_assigned(
        self,
        ice_servers: tuple[IceServer, ...] = (),
        settings: SessionSettings | None = None,
        resume_session_id: str | None = None,
    ) -> list[Action]:
        """A Digital Person is reserved for this socket: send ``established``."""
        established = Established(ice_servers, settings or SessionSettings(), resume_session_id)
        return self._step(I.PERSONA_ASSIGNED, established)

    def session_started(self, accepted: Accepted, answer_sdp: str) -> list[Action]:
        """Assets are loaded and the offer answered: send ``accepted`` then ``answer``."""
        return self._step(I.SESSION_STARTED, (accepted, answer_sdp))

    def transport_connected(self) -> list[Action]:
        """ICE and DTLS are up on this side: now, and only now, send ``connected``."""
        return self._step(I.TRANSPORT_CONNECTED)

    def transport_failed(self) -> list[Action]:
        return self._step(I.TRANSPORT_FAILED)

    def end(self, reason: str) -> list[Action]:
        """End the session with a reason (``noScene``, ``sessionTimeout``, ``normal`` ...)."""
        return self._step(I.END, reason)

    def socket_closed(self) -> list[Action]:
        return self._step(I.SOCKET_CLOSED)

    # --- the machine ------------------------------------------------------------------------

    def _step(self, what: ServerInput, payload: object = None) -> list[Action]:
        key = (self.phase, what)
        if key not in SERVER_TRANSITIONS:
            if what in FROM_CLIENT:
                return self._violation(f"unexpected {what.value} while {self.phase.value}")
            raise InvalidStateError(f"cannot {what.value}: session is {self.phase.value}")
        before = self.phase
        target = SERVER_TRANSITIONS[key]
        if target is not None:
            self.phase = target
        if before is P.CLOSED:
            return []
        handler = getattr(self, f"_on_{what.name.lower()}")
        result: list[Action] = handler(payload)
        return result

    def _violation(self, message: str) -> list[Action]:
        logger.warning("session %s: client broke the protocol: %s", self.session_id, message)
        return [SendFrame(DpkitEvent("protocolError", {"message": message}))]

    def _close(self, reason: str) -> list[Action]:
        self.ending = reason
        return [SendFrame(Close(reason)), CloseSocket(), ReleaseSession(reason)]

    # --- handlers, one per input ------------------------------------------------------------

    def _on_persona_assigned(self, payload: object) -> list[Action]:
        assert isinstance(payload, Established)
        if payload.resume_session_id is not None:
            self.session_id = payload.resume_session_id
        return [SendFrame(payload)]

    def _on_offer(self, payload: object) -> list[Action]:
        assert isinstance(payload, Offer)
        if isinstance(payload, UpdateOffer) and payload.session_id != self.session_id:
            self.phase = P.ESTABLISHED
            return self._violation(
                f"updateOffer for session {payload.session_id}, but this socket resumes "
                f"{self.session_id}"
            )
        self.offer = payload
        return [StartSession(payload)]

    def _on_session_started(self, payload: object) -> list[Action]:
        accepted, answer_sdp = cast(tuple[Accepted, str], payload)
        self.session_id = accepted.session_id
        return [SendFrame(accepted), SendFrame(Answer(answer_sdp))]

    def _on_transport_connected(self, payload: object) -> list[Action]:
        assert self.session_id is not None
        return [SendFrame(Connected(self.session_id))]

    def _on_transport_failed(self, payload: object) -> list[Action]:
        return self._close("mediaStreamFailed")

    def _on_ice(self, payload: object) -> list[Action]:
        assert isinstance(payload, Ice)
        return [AddRemoteCandidate(payload)]

    def _on_client_event(self, payload: object) -> list[Action]:
        assert isinstance(payload, WebRtcEvent | DiagnosticsLog)
        if isinstance(payload, DiagnosticsLog):
            for line in payload.lines:
                logger.info("session %s: %s log: %s", self.session_id, payload.source, line)
            return []
        return [ClientEvent(payload)]

    def _on_scene_request(self, payload: object) -> list[Action]:
        assert isinstance(payload, SceneRequest)
        return [AnswerSceneRequest(payload)]

    def _on_orchestration(self, payload: object) -> list[Action]:
        assert isinstance(payload, SceneEvent)
        return [OrchestrationEvent(payload)]

    def _on_client_close(self, payload: object) -> list[Action]:
        assert isinstance(payload, Close)
        # The Web SDK always says "normal" here; whatever it says, the client ended it.
        self.ending = "normal"
        return [CloseSocket(), ReleaseSession("normal")]

    def _on_end(self, payload: object) -> list[Action]:
        assert isinstance(payload, str)
        return self._close(payload)

    def _on_socket_closed(self, payload: object) -> list[Action]:
        self.ending = CONNECTION_LOST
        return [ReleaseSession(CONNECTION_LOST)]

    def _on_ignored_frame(self, payload: object) -> list[Action]:
        logger.debug("session %s: ignored %r", self.session_id, payload)
        return []

    def _on_malformed(self, payload: object) -> list[Action]:
        assert isinstance(payload, ProtocolError)
        return self._violation(payload.message)
