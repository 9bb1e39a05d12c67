"""The server's session machine: client frames and local happenings in, actions out. No I/O.

One :class:`ServerSession` per session socket. It enforces the protocol page's server rules by
construction: ``established`` is the first frame it sends, ``connected`` is sent only on
:meth:`ServerSession.transport_connected`, every ending sends ``close {reason}`` before
:class:`~dpkit.protocol.actions.CloseSocket`, and every scene request becomes an
:class:`~dpkit.protocol.actions.AnswerSceneRequest`.

A client frame the table does not allow in the current phase is a protocol violation: the server
tells the client in a ``dpkit/protocolError`` frame and carries on, so one bad client never takes
the server down (after :data:`~dpkit.protocol.limits.MAX_VIOLATIONS` it is closed). An offer or a
candidate that does not pass :mod:`dpkit.protocol.sdp` ends the session with ``close
{protocolError}``; a frame over the size limit ends it with ``close {frameTooLarge}``. Text the
persona would speak is bounded (:class:`~dpkit.protocol.limits.SessionLimits`), and client log
lines are written only when the session asked for them (``logToServer``), escaped and capped. A
local call the table does not allow raises :class:`~dpkit.errors.InvalidStateError`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
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
from dpkit.protocol.limits import (
    CLIENT_LOG_LINES_PER_FRAME,
    LOGGED_VIOLATIONS,
    MAX_VIOLATIONS,
    TEXT_REQUESTS,
    SessionLimits,
    frame_too_large,
    printable,
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
    SceneResponse,
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
from dpkit.protocol.sdp import OfferLayout, check_candidate, check_offer

logger = logging.getLogger("dpkit.server")

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

#: Scene events an orchestration server sends the session server through the client's relay.
ORCHESTRATION_EVENTS = frozenset({"conversationResponse", "endConversation"})

#: The ending recorded when the socket dropped without a ``close`` frame (dpkit's addition).
CONNECTION_LOST = "connectionLost"
#: dpkit's close reasons for a client that sent what the server cannot take.
PROTOCOL_ERROR = "protocolError"
FRAME_TOO_LARGE = "frameTooLarge"
#: The ending recorded on a cluster node whose waiting socket another node's free Digital
#: Person took over (dpkit's addition: the client sees no close, its session goes on there).
HANDED_OVER = "handedOver"


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
    OVERSIZED = "oversized frame"
    # from the server's own work
    PERSONA_ASSIGNED = "persona assigned"
    SESSION_STARTED = "session started"
    TRANSPORT_CONNECTED = "transport connected"
    TRANSPORT_FAILED = "transport failed"
    END = "end"
    SOCKET_CLOSED = "socket closed"
    HANDED_OVER = "handed over"


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
        ServerInput.OVERSIZED,
    }
)

P = ServerPhase
I = ServerInput  # noqa: E741 - short names keep the table readable
_LIVE = (P.OPENED, P.ESTABLISHED, P.STARTING, P.ACCEPTED, P.CONNECTED)

#: Every allowed (phase, input) pair and the phase it leads to (None: stay).
SERVER_TRANSITIONS: dict[tuple[ServerPhase, ServerInput], ServerPhase | None] = {
    (P.OPENED, I.PERSONA_ASSIGNED): P.ESTABLISHED,
    (P.OPENED, I.HANDED_OVER): P.CLOSED,
    (P.ESTABLISHED, I.OFFER): P.STARTING,
    (P.STARTING, I.SESSION_STARTED): P.ACCEPTED,
    (P.ACCEPTED, I.TRANSPORT_CONNECTED): P.CONNECTED,
    **{(phase, I.ICE): None for phase in (P.STARTING, P.ACCEPTED, P.CONNECTED)},
    **{(phase, I.TRANSPORT_FAILED): P.CLOSED for phase in (P.ACCEPTED, P.CONNECTED)},
    **{(phase, i): None for phase in _LIVE for i in (I.CLIENT_EVENT, I.SCENE_REQUEST)},
    **{(phase, I.ORCHESTRATION): None for phase in (P.ACCEPTED, P.CONNECTED)},
    **{(phase, i): None for phase in _LIVE for i in (I.IGNORED_FRAME, I.MALFORMED)},
    **{
        (phase, i): P.CLOSED
        for phase in _LIVE
        for i in (I.CLIENT_CLOSE, I.END, I.SOCKET_CLOSED, I.OVERSIZED)
    },
    # Late happenings after the end are dropped: the I/O layer may race the close.
    **{(P.CLOSED, i): None for i in ServerInput},
}

_CLIENT_EVENTS = (VideoBounds, UserCamera, VideoStarted, KeepAlive, Ui, UserText)
_SERVER_FRAMES = (Established, Accepted, Answer, Connected)


class ServerSession:
    """One session socket's protocol state on the server."""

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self.phase = ServerPhase.OPENED
        self.session_id: str | None = None
        self.offer: Offer | None = None
        self.layout: OfferLayout | None = None
        self.ending: str | None = None
        #: Protocol violations so far (the session is closed at MAX_VIOLATIONS).
        self.violations = 0
        self._log_to_server = False
        self._client_log_bytes = 0

    # --- inputs from the client -------------------------------------------------------------

    def receive_text(self, text: str | bytes) -> list[Action]:
        """Handle one text frame from the client."""
        if frame_too_large(text, self.limits.max_frame_bytes):
            return self._step(I.OVERSIZED, len(text))
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

    def handed_over(self) -> list[Action]:
        """Another node serves this waiting socket from now on: release it, send nothing."""
        return self._step(I.HANDED_OVER)

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
        self.violations += 1
        level = logging.WARNING if self.violations <= LOGGED_VIOLATIONS else logging.DEBUG
        logger.log(level, "session %s: client broke the protocol: %s", self.session_id, message)
        report = SendFrame(DpkitEvent("protocolError", {"message": message}))
        if self.violations >= MAX_VIOLATIONS and self.phase is not P.CLOSED:
            self.phase = P.CLOSED
            return [report, *self._close(PROTOCOL_ERROR)]
        return [report]

    def _unusable(self, error: ProtocolError) -> list[Action]:
        """An offer or candidate the server cannot use: say why, then close ``protocolError``."""
        self.violations += 1
        logger.warning("session %s: closing: %s", self.session_id, error.message)
        self.phase = P.CLOSED
        return [
            SendFrame(DpkitEvent("protocolError", {"message": error.message})),
            *self._close(PROTOCOL_ERROR),
        ]

    def _close(self, reason: str) -> list[Action]:
        self.ending = reason
        return [SendFrame(Close(reason)), CloseSocket(), ReleaseSession(reason)]

    # --- handlers, one per input ------------------------------------------------------------

    def _on_persona_assigned(self, payload: object) -> list[Action]:
        assert isinstance(payload, Established)
        self._log_to_server = payload.settings.log_to_server
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
        try:
            self.layout = check_offer(payload.sdp)
        except ProtocolError as exc:
            return self._unusable(exc)
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
        assert self.layout is not None  # ICE is allowed only once an offer was taken
        if payload.complete and not payload.candidate:
            return [AddRemoteCandidate(payload)]
        try:
            checked = check_candidate(payload.candidate)
            mid, index = self.layout.resolve_mid(payload.sdp_mid, payload.sdp_mline_index)
        except ProtocolError as exc:
            return self._unusable(exc)
        located = dataclasses.replace(payload, sdp_mid=mid, sdp_mline_index=index)
        return [AddRemoteCandidate(located, checked)]

    def _on_client_event(self, payload: object) -> list[Action]:
        assert isinstance(payload, WebRtcEvent | DiagnosticsLog)
        if isinstance(payload, DiagnosticsLog):
            self._client_log(payload)
            return []
        if isinstance(payload, UserText) and len(payload.user_text) > self.limits.max_text_chars:
            return self._violation(self._too_long("userText", len(payload.user_text)))
        return [ClientEvent(payload)]

    def _client_log(self, log: DiagnosticsLog) -> None:
        """Client log lines, only if this session asked for them, escaped, within its budget."""
        if not self._log_to_server:
            logger.debug("session %s: dropped a client log (logToServer is off)", self.session_id)
            return
        budget = self.limits.client_log_max_bytes
        source = printable(log.source, 40)
        for line in log.lines[:CLIENT_LOG_LINES_PER_FRAME]:
            text = printable(line)
            if self._client_log_bytes + len(text) > budget:
                if self._client_log_bytes <= budget:
                    logger.warning(
                        "session %s: client log over %d bytes (client_log_max_bytes); dropping "
                        "the rest",
                        self.session_id,
                        budget,
                    )
                    self._client_log_bytes = budget + 1
                return
            self._client_log_bytes += len(text)
            logger.info("session %s: %s log: %s", self.session_id, source, text)

    def _too_long(self, what: str, length: int) -> str:
        limit = self.limits.max_text_chars
        return f"{what}: text is {length} characters, over the limit of {limit} (max_text_chars)"

    def _on_scene_request(self, payload: object) -> list[Action]:
        assert isinstance(payload, SceneRequest)
        if payload.name in TEXT_REQUESTS and "text" in payload.body:
            text = payload.body["text"]
            problem = None
            if not isinstance(text, str):
                problem = f"{payload.name}: field 'text' must be a string"
            elif len(text) > self.limits.max_text_chars:
                problem = self._too_long(payload.name, len(text))
            elif _LONE_SURROGATE.search(text):
                # JSON may escape half a surrogate pair ("\ud83d"); it is no text to speak.
                problem = f"{payload.name}: field 'text' has a lone surrogate, it is not Unicode"
            if problem is not None:
                self.violations += 1
                logger.info("session %s: refused %s", self.session_id, problem)
                refusal = SceneResponse(payload.name, payload.transaction, 1, {"error": problem})
                return [SendFrame(refusal)]
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

    def _on_handed_over(self, payload: object) -> list[Action]:
        self.ending = HANDED_OVER
        return [ReleaseSession(HANDED_OVER)]

    def _on_ignored_frame(self, payload: object) -> list[Action]:
        logger.debug("session %s: ignored %r", self.session_id, payload)
        return []

    def _on_malformed(self, payload: object) -> list[Action]:
        assert isinstance(payload, ProtocolError)
        return self._violation(payload.message)

    def _on_oversized(self, payload: object) -> list[Action]:
        logger.warning(
            "session %s: closing: a frame of %s characters is over %d bytes (max_frame_bytes)",
            self.session_id,
            payload,
            self.limits.max_frame_bytes,
        )
        return self._close(FRAME_TOO_LARGE)
