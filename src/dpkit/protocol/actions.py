"""What the session machines ask their I/O layer to do.

The machines in :mod:`dpkit.protocol.client` and :mod:`dpkit.protocol.server` never do I/O: each
input returns a list of these actions, which the asyncio layer carries out in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpkit.errors import ConnectionError_
from dpkit.protocol.messages import (
    Frame,
    Ice,
    IceServer,
    Offer,
    SceneEvent,
    SceneRequest,
    SessionSettings,
    WebRtcEvent,
)
from dpkit.protocol.sdp import Candidate
from dpkit.protocol.states import ConnectionStateData


@dataclass(frozen=True)
class SendFrame:
    """Send this frame on the session socket."""

    frame: Frame


@dataclass(frozen=True)
class CloseSocket:
    """Close the session socket (after any ``close`` frame queued before it)."""


@dataclass(frozen=True)
class AddRemoteCandidate:
    """Give the peer connection a candidate the other side trickled.

    On the server, ``checked`` is the candidate as :func:`~dpkit.protocol.sdp.check_candidate`
    read it (None for the end of candidates), and ``ice`` names its media section by mid.
    """

    ice: Ice
    checked: Candidate | None = None


# --- client side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged:
    """The connection state changed (fired only on a change)."""

    data: ConnectionStateData


@dataclass(frozen=True)
class CreatePeerConnection:
    """``established`` arrived: create the peer connection and make the offer."""

    ice_servers: tuple[IceServer, ...]
    settings: SessionSettings
    resume_session_id: str | None


@dataclass(frozen=True)
class ApplyAnswer:
    """Apply the server's SDP answer."""

    sdp: str


@dataclass(frozen=True)
class ConnectSucceeded:
    """``connect()`` resolves with this session id."""

    session_id: str


@dataclass(frozen=True)
class ConnectFailed:
    """``connect()`` fails with this error."""

    error: ConnectionError_


@dataclass(frozen=True)
class SessionEnded:
    """A connected session ended; the disconnect event fires with this reason."""

    session_id: str
    reason: str


@dataclass(frozen=True)
class DeliverFrame:
    """Hand a frame the machine does not act on (scene, dpkit) to the application."""

    frame: Frame


# --- server side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartSession:
    """The client offered: load the persona's assets and answer the offer."""

    offer: Offer


@dataclass(frozen=True)
class AnswerSceneRequest:
    """A scene request arrived; it must get a response."""

    request: SceneRequest


@dataclass(frozen=True)
class ClientEvent:
    """An informational client event (``videoBounds``, ``userCamera``, ``keepAlive`` ...)."""

    event: WebRtcEvent


@dataclass(frozen=True)
class OrchestrationEvent:
    """The orchestration server, through the client's relay, answered or ended the conversation."""

    event: SceneEvent


@dataclass(frozen=True)
class ReleaseSession:
    """The session is over on the server: stop its media and free its Digital Person."""

    reason: str


Action = (
    SendFrame
    | CloseSocket
    | AddRemoteCandidate
    | StateChanged
    | CreatePeerConnection
    | ApplyAnswer
    | ConnectSucceeded
    | ConnectFailed
    | SessionEnded
    | DeliverFrame
    | StartSession
    | AnswerSceneRequest
    | ClientEvent
    | OrchestrationEvent
    | ReleaseSession
)
