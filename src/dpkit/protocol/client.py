"""The client's session machine: frames and local happenings in, actions out. No I/O.

One :class:`ClientSession` drives one attempt to connect, over one socket. Every allowed
``(phase, input)`` pair is in :data:`CLIENT_TRANSITIONS`; an input from the server that the table
does not allow is a protocol violation (it fails a pending connect and is ignored once connected),
and a local call the table does not allow raises :class:`~dpkit.errors.InvalidStateError`.

The connection state (:class:`~dpkit.protocol.states.ConnectionState`) outlives an attempt, since
retries reuse it, so the caller passes it in.
"""

from __future__ import annotations

import dataclasses
import enum
import logging

from dpkit.errors import (
    ConnectionError_,
    InvalidStateError,
    MediaStreamFailed,
    ProtocolError,
    ServerConnectionFailed,
    UnknownConnectionError,
    connection_error,
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
from dpkit.protocol.messages import (
    Accepted,
    Answer,
    Close,
    Connected,
    DpkitEvent,
    Established,
    Frame,
    Ice,
    Offer,
    WebRtcEvent,
    parse_frame,
)
from dpkit.protocol.states import ConnectionState, ConnectionStateName, QueueInfo

logger = logging.getLogger("dpkit.client")

#: The disconnect reason when the socket dropped without a ``close`` frame (dpkit's addition).
CONNECTION_LOST = "connectionLost"
#: The disconnect reason when the media transport failed after ``connected`` (dpkit's addition).
MEDIA_LOST = "mediaStreamFailed"
NORMAL = "normal"


class ClientPhase(enum.Enum):
    """Where one connect attempt is; each maps to the connection state it shows."""

    IDLE = "idle"
    SEARCHING = "searching"
    DOWNLOADING = "downloading"
    CONNECTING = "connecting"
    AWAITING_MEDIA = "awaiting media"
    CONNECTED = "connected"
    CLOSED = "closed"


class ClientInput(enum.Enum):
    """Everything that can happen to a client session."""

    # from the server
    ESTABLISHED = "established"
    ACCEPTED = "accepted"
    ANSWER = "answer"
    ICE = "ice"
    CONNECTED = "connected"
    CLOSE = "close"
    OTHER_FRAME = "other frame"
    MALFORMED = "malformed frame"
    # from the socket and the peer connection
    SOCKET_OPENED = "socket opened"
    SOCKET_CLOSED = "socket closed"
    MEDIA_READY = "media ready"
    TRANSPORT_FAILED = "transport failed"
    CONTROL_LOST = "control lost"
    # from the application
    SEND = "send"
    DISCONNECT = "disconnect"


FROM_SERVER = frozenset(
    {
        ClientInput.ESTABLISHED,
        ClientInput.ACCEPTED,
        ClientInput.ANSWER,
        ClientInput.ICE,
        ClientInput.CONNECTED,
        ClientInput.CLOSE,
        ClientInput.OTHER_FRAME,
        ClientInput.MALFORMED,
    }
)

P = ClientPhase
I = ClientInput  # noqa: E741 - short names keep the table readable
_ENDINGS = {I.CLOSE: P.CLOSED, I.SOCKET_CLOSED: P.CLOSED, I.DISCONNECT: P.CLOSED}
_PASSIVE = {I.SEND: None, I.OTHER_FRAME: None}

#: Every allowed (phase, input) pair and the phase it leads to (None: stay).
CLIENT_TRANSITIONS: dict[tuple[ClientPhase, ClientInput], ClientPhase | None] = {
    (P.IDLE, I.SOCKET_OPENED): P.SEARCHING,
    (P.IDLE, I.SOCKET_CLOSED): P.CLOSED,
    (P.IDLE, I.DISCONNECT): P.CLOSED,
    (P.IDLE, I.SEND): None,
    **{(P.SEARCHING, i): p for i, p in {I.ESTABLISHED: P.DOWNLOADING, **_ENDINGS}.items()},
    **{(P.SEARCHING, i): p for i, p in _PASSIVE.items()},
    (P.SEARCHING, I.MALFORMED): P.CLOSED,
    **{
        (P.DOWNLOADING, i): p
        for i, p in {
            I.ACCEPTED: P.CONNECTING,
            I.ANSWER: None,
            I.ICE: None,
            I.MEDIA_READY: None,
            I.TRANSPORT_FAILED: P.CLOSED,
            I.MALFORMED: P.CLOSED,
            **_ENDINGS,
            **_PASSIVE,
        }.items()
    },
    **{
        (P.CONNECTING, i): p
        for i, p in {
            I.ANSWER: None,
            I.ICE: None,
            I.MEDIA_READY: None,
            I.CONNECTED: P.AWAITING_MEDIA,
            I.TRANSPORT_FAILED: P.CLOSED,
            I.CONTROL_LOST: P.CLOSED,
            I.MALFORMED: P.CLOSED,
            **_ENDINGS,
            **_PASSIVE,
        }.items()
    },
    **{
        (P.AWAITING_MEDIA, i): p
        for i, p in {
            I.ICE: None,
            I.MEDIA_READY: P.CONNECTED,
            I.TRANSPORT_FAILED: P.CLOSED,
            I.CONTROL_LOST: P.CLOSED,
            I.MALFORMED: P.CLOSED,
            **_ENDINGS,
            **_PASSIVE,
        }.items()
    },
    **{
        (P.CONNECTED, i): p
        for i, p in {
            I.ICE: None,
            I.MEDIA_READY: None,
            I.TRANSPORT_FAILED: P.CLOSED,
            I.CONTROL_LOST: P.CLOSED,
            I.MALFORMED: None,
            **_ENDINGS,
            **_PASSIVE,
        }.items()
    },
    (P.CLOSED, I.DISCONNECT): None,
    (P.CLOSED, I.SOCKET_CLOSED): None,
    (P.CLOSED, I.MEDIA_READY): None,
    (P.CLOSED, I.TRANSPORT_FAILED): None,
    (P.CLOSED, I.CONTROL_LOST): None,
    **{(P.CLOSED, i): None for i in FROM_SERVER},
}

_SHOWN_STATE = {
    P.SEARCHING: ConnectionStateName.SEARCHING_FOR_DIGITAL_PERSON,
    P.DOWNLOADING: ConnectionStateName.DOWNLOADING_ASSETS,
    P.CONNECTING: ConnectionStateName.CONNECTING_TO_DIGITAL_PERSON,
    P.AWAITING_MEDIA: ConnectionStateName.CONNECTING_TO_DIGITAL_PERSON,
    P.CONNECTED: ConnectionStateName.CONNECTED,
}

_FRAME_INPUTS: dict[type[WebRtcEvent], ClientInput] = {
    Established: I.ESTABLISHED,
    Accepted: I.ACCEPTED,
    Answer: I.ANSWER,
    Ice: I.ICE,
    Connected: I.CONNECTED,
    Close: I.CLOSE,
}


def _queue_info(frame: DpkitEvent) -> QueueInfo | None:
    """Read a ``dpkit/queue`` frame; an addition the client cannot read is only logged."""
    values = [frame.body.get(key) for key in ("position", "size", "etaMs")]
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        logger.warning("ignored a queue frame with a malformed body: %r", frame.body)
        return None
    position, size, eta_ms = (int(value) for value in values)  # type: ignore[arg-type]
    return QueueInfo(position, size, eta_ms)


class ClientSession:
    """One connect attempt's protocol state, from socket open to close."""

    def __init__(self, state: ConnectionState | None = None) -> None:
        self.state = state if state is not None else ConnectionState()
        self.phase = ClientPhase.IDLE
        self.session_id: str | None = None
        self.accepted: Accepted | None = None
        self.established: Established | None = None
        self._media_ready = False
        self._outbox: list[WebRtcEvent] = []
        self._error_detail: str | None = None

    # --- inputs -----------------------------------------------------------------------------

    def socket_opened(self) -> list[Action]:
        return self._step(I.SOCKET_OPENED)

    def receive_text(self, text: str | bytes) -> list[Action]:
        """Handle one text frame from the server."""
        try:
            frame = parse_frame(text)
        except ProtocolError as exc:
            return self._step(I.MALFORMED, exc)
        return self.receive(frame)

    def receive(self, frame: Frame) -> list[Action]:
        """Handle one parsed frame from the server."""
        if isinstance(frame, WebRtcEvent) and type(frame) in _FRAME_INPUTS:
            return self._step(_FRAME_INPUTS[type(frame)], frame)
        return self._step(I.OTHER_FRAME, frame)

    def media_ready(self) -> list[Action]:
        """The persona's media stream exists (its audio and video tracks arrived)."""
        return self._step(I.MEDIA_READY)

    def transport_failed(self) -> list[Action]:
        """ICE or DTLS failed."""
        return self._step(I.TRANSPORT_FAILED)

    def control_lost(self, reason: str) -> list[Action]:
        """The orchestration socket failed or closed (``controlFailed``/``controlDisconnected``)."""
        return self._step(I.CONTROL_LOST, reason)

    def socket_closed(self) -> list[Action]:
        """The socket closed, whoever closed it."""
        return self._step(I.SOCKET_CLOSED)

    def disconnect(self) -> list[Action]:
        """The application ends the session (``close {reason: "normal"}``)."""
        return self._step(I.DISCONNECT)

    def send(self, event: WebRtcEvent) -> list[Action]:
        """Send an event; everything but ``offer`` waits until ``accepted`` gives a session id."""
        return self._step(I.SEND, event)

    # --- the machine ------------------------------------------------------------------------

    def _step(self, what: ClientInput, payload: object = None) -> list[Action]:
        key = (self.phase, what)
        if key not in CLIENT_TRANSITIONS:
            if what in FROM_SERVER:
                return self._violation(f"unexpected {what.value} while {self.phase.value}")
            raise InvalidStateError(f"cannot {what.value}: session is {self.phase.value}")
        target = CLIENT_TRANSITIONS[key]
        before = self.phase
        if target is not None:
            self.phase = target
        actions = self._handle(what, before, payload)
        return self._show_state(actions)

    def _handle(self, what: ClientInput, before: ClientPhase, payload: object) -> list[Action]:
        if before is P.CLOSED:
            return []
        handler = getattr(self, f"_on_{what.name.lower()}")
        result: list[Action] = handler(before, payload)
        return result

    def _show_state(self, actions: list[Action]) -> list[Action]:
        shown = _SHOWN_STATE.get(self.phase)
        if shown is not None:
            changed = self.state.set(shown)
            if changed is not None:
                actions.insert(0, StateChanged(changed))
        return actions

    def _violation(self, message: str) -> list[Action]:
        if self.phase in (P.CONNECTED, P.CLOSED):
            logger.warning("ignored: %s", message)
            return []
        error = ServerConnectionFailed(f"the server broke the protocol: {message}")
        return self._fail(error)

    def _fail(self, error: ConnectionError_) -> list[Action]:
        self.phase = P.CLOSED
        return [SendFrame(self._stamp(Close(NORMAL))), CloseSocket(), ConnectFailed(error)]

    def _stamp(self, event: WebRtcEvent) -> WebRtcEvent:
        """Add the session id to a client event, as the Web SDK does once it knows it."""
        if self.session_id is not None and hasattr(event, "session_id"):
            return dataclasses.replace(event, session_id=self.session_id)  # type: ignore[type-var]
        return event

    def _end(self, before: ClientPhase, reason: str, error: ConnectionError_) -> list[Action]:
        """The session ends: a pending connect fails, a connected one reports its reason."""
        if before is P.CONNECTED:
            assert self.session_id is not None
            return [*self._reset_state(), SessionEnded(self.session_id, reason)]
        return [ConnectFailed(error)]

    def _reset_state(self) -> list[Action]:
        """Back to Disconnected, reported like any other change so listeners see it."""
        changed = self.state.reset()
        return [] if changed is None else [StateChanged(changed)]

    # --- handlers, one per input ------------------------------------------------------------

    def _on_socket_opened(self, before: ClientPhase, payload: object) -> list[Action]:
        return []

    def _on_established(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, Established)
        self.established = payload
        if payload.resume_session_id is not None:
            self.session_id = payload.resume_session_id
        return [
            CreatePeerConnection(payload.ice_servers, payload.settings, payload.resume_session_id)
        ]

    def _on_accepted(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, Accepted)
        self.accepted = payload
        self.session_id = payload.session_id
        queued, self._outbox = self._outbox, []
        return [SendFrame(self._stamp(event)) for event in queued]

    def _on_answer(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, Answer)
        return [ApplyAnswer(payload.sdp)]

    def _on_ice(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, Ice)
        return [AddRemoteCandidate(payload)]

    def _on_connected(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, Connected)
        self.session_id = payload.session_id
        if self._media_ready:
            return self._step(I.MEDIA_READY)
        return []

    def _on_media_ready(self, before: ClientPhase, payload: object) -> list[Action]:
        self._media_ready = True
        if self.phase is P.CONNECTED and before is P.AWAITING_MEDIA:
            assert self.session_id is not None
            return [ConnectSucceeded(self.session_id)]
        return []

    def _on_close(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, Close)
        message = f"websocket closed: {payload.reason}"
        if self._error_detail is not None:
            message += f" ({self._error_detail})"
        error = connection_error(payload.reason, message)
        return [CloseSocket(), *self._end(before, payload.reason, error)]

    def _on_socket_closed(self, before: ClientPhase, payload: object) -> list[Action]:
        if before is P.IDLE:
            error = ServerConnectionFailed("the session socket could not be opened")
        else:
            error = ServerConnectionFailed("the server closed the session socket without a reason")
        return self._end(before, CONNECTION_LOST, error)

    def _on_transport_failed(self, before: ClientPhase, payload: object) -> list[Action]:
        error = MediaStreamFailed("the audio/video connection (ICE/DTLS) failed")
        return [
            SendFrame(self._stamp(Close(NORMAL))),
            CloseSocket(),
            *self._end(before, MEDIA_LOST, error),
        ]

    def _on_control_lost(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, str)
        error = connection_error(payload, f"websocket closed: {payload}")
        closing: list[Action] = [SendFrame(self._stamp(Close(NORMAL))), CloseSocket()]
        return [*closing, *self._end(before, payload, error)]

    def _on_disconnect(self, before: ClientPhase, payload: object) -> list[Action]:
        actions: list[Action] = []
        if before is not P.IDLE:
            actions.append(SendFrame(self._stamp(Close(NORMAL))))
        actions.append(CloseSocket())
        actions.extend(self._reset_state())
        if before is not P.CONNECTED:
            actions.append(
                ConnectFailed(
                    UnknownConnectionError(NORMAL, "disconnect() was called during connect")
                )
            )
        elif self.session_id is not None:
            actions.append(SessionEnded(self.session_id, NORMAL))
        return actions

    def _on_malformed(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, ProtocolError)
        if before is P.CONNECTED:
            logger.warning("ignored a malformed frame: %s", payload.message)
            return []
        error = ServerConnectionFailed(f"the server sent a malformed frame: {payload.message}")
        error.__cause__ = payload
        self.phase = P.CLOSED
        return [SendFrame(self._stamp(Close(NORMAL))), CloseSocket(), ConnectFailed(error)]

    def _on_other_frame(self, before: ClientPhase, payload: object) -> list[Action]:
        assert payload is not None
        actions: list[Action] = [DeliverFrame(payload)]  # type: ignore[arg-type]
        if isinstance(payload, DpkitEvent) and payload.name.endswith("Error"):
            # dpkit says why before it closes (assetsError ...): the connect error says it too.
            detail = payload.body.get("message")
            self._error_detail = detail if isinstance(detail, str) else None
        if isinstance(payload, DpkitEvent) and payload.name == "queue" and before is P.SEARCHING:
            queue = _queue_info(payload)
            changed = self.state.set_queue(queue) if queue is not None else None
            if changed is not None:
                actions.insert(0, StateChanged(changed))
        return actions

    def _on_send(self, before: ClientPhase, payload: object) -> list[Action]:
        assert isinstance(payload, WebRtcEvent)
        if isinstance(payload, Offer) or self.session_id is not None:
            return [SendFrame(self._stamp(payload))]
        self._outbox.append(payload)
        return []
