"""dpkit's one exception tree.

Every error the public API raises is a :class:`DpkitError`, and every one is importable from
``dpkit``. Connection errors carry the seed's ``name`` strings, so ``error.name == "noScene"``
works exactly as in the Web SDK::

    DpkitError                      base; .name, .retryable, .advice
    ├── ConnectionError_            connect() failed; .name is the seed's error name
    │   ├── NoUserMedia             "noUserMedia"
    │   ├── NoScene                 "noScene"            (the only one retry can help)
    │   ├── ServerConnectionFailed  "serverConnectionFailed"
    │   ├── NotSupported            "notSupported"
    │   ├── MediaStreamFailed       "mediaStreamFailed"
    │   ├── SessionTimeout          "sessionTimeout"
    │   ├── ControlFailed           "controlFailed"
    │   ├── NoSessionToResume       "noSessionToResume"
    │   ├── AssetsFailed            "assetsFailed" (dpkit's: the persona's assets did not load)
    │   ├── TooManySockets          "tooManySockets" (dpkit's: a per-key or per-address limit)
    │   ├── FrameTooLarge           "frameTooLarge" (dpkit's: a frame over the server's limit)
    │   ├── ProtocolRejected        "protocolError" (dpkit's: the server could not use a frame)
    │   └── UnknownConnectionError  any other close reason the server sends
    ├── RequestFailed               a scene request got no answer, or the session ended first
    ├── SceneResponseError          a scene request was answered with a non-zero status
    ├── ProtocolError               the peer sent a frame the protocol does not allow
    ├── InvalidStateError           the API was used in a state that does not allow it
    │   └── NoSession               "noSession": a scene request without a session
    └── ConfigurationError          bad settings, API key or arguments

Elsewhere, beside the code that raises them: ``dpkit.client.devices.DeviceError`` (a device
provider could not open a device; ``connect()`` turns it into ``NoUserMedia``),
``dpkit.media.capture.BackendMissing`` (no PortAudio, or no camera input in PyAV) and
``dpkit.extras.MissingExtra`` (an optional extra is not installed).

Each error has a ``message`` (what happened) and an ``advice`` (what to do about it). A class
gives the general advice for its name; an error whose cause is known carries advice for that
cause instead (``DpkitError(message, advice=...)``): connection refused names the URL and asks
whether ``dpkit serve`` runs there, a blocked device names ``dpkit permissions reset``.

``ConnectionError_`` has a trailing underscore so it never shadows the builtin.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DpkitError(Exception):
    """Base of every error dpkit raises."""

    name: str = "dpkitError"
    retryable: ClassVar[bool] = False
    #: What to do about it: the class's general advice, or the instance's for a known cause.
    advice: str = ""

    def __init__(self, message: str, *, advice: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if advice is not None:
            self.advice = advice

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


class ConnectionError_(DpkitError):
    """``connect()`` failed; ``name`` is the seed's connection error name."""


class NoUserMedia(ConnectionError_):
    """A required camera or microphone was not obtained."""

    name = "noUserMedia"
    advice = "Allow access to the microphone and camera (unblock the devices), then connect again."


class NoScene(ConnectionError_):
    """No Digital Person was available: the server is busy."""

    name = "noScene"
    retryable = True
    advice = "Every Digital Person is busy right now: retry in a little while."


class ServerConnectionFailed(ConnectionError_):
    """The connection to the server failed (socket, API key, token endpoint)."""

    name = "serverConnectionFailed"
    advice = (
        "Check the API key or server address; if they are right, try again from a "
        "different network."
    )


class NotSupported(ConnectionError_):
    """This platform has no way to capture media."""

    name = "notSupported"
    advice = (
        "This machine has no way to capture media: install a backend (pip install 'dpkit[audio]' "
        "for the microphone), or connect with no devices requested."
    )


class MediaStreamFailed(ConnectionError_):
    """The audio/video stream failed (ICE or DTLS did not connect)."""

    name = "mediaStreamFailed"
    advice = "The media connection failed: check firewalls and UDP access, or try another network."


class SessionTimeout(ConnectionError_):
    """The session timed out before it was fully available."""

    name = "sessionTimeout"
    advice = "The Digital Person took too long to start: try again."


class ControlFailed(ConnectionError_):
    """The orchestration server could not be reached."""

    name = "controlFailed"
    advice = "The orchestration server could not be reached: check that it is running."


class NoSessionToResume(ConnectionError_):
    """Session persistence could not reconnect to the previous session."""

    name = "noSessionToResume"
    advice = "The previous session has ended: connect again to start a new one."


class AssetsFailed(ConnectionError_):
    """The Digital Person's asset bundle could not be fetched or verified (dpkit's addition)."""

    name = "assetsFailed"
    advice = (
        "The Digital Person's assets could not be loaded: try again later, or tell the operator."
    )


class TooManySockets(ConnectionError_):
    """The server refused the socket: this key or address has too many open (dpkit's addition)."""

    name = "tooManySockets"
    advice = (
        "Too many sessions are open with this API key or from this address: close some, or ask "
        "the operator to raise max_sockets_per_key or max_sockets_per_address."
    )


class FrameTooLarge(ConnectionError_):
    """The server closed the session: a frame was over its size limit (dpkit's addition)."""

    name = "frameTooLarge"
    advice = "A message was over the server's size limit (max_frame_bytes): send less at once."


class ProtocolRejected(ConnectionError_):
    """The server closed the session: it could not use an offer, candidate or frame."""

    name = "protocolError"
    advice = (
        "The server could not use what this client sent (its dpkit/protocolError frame says "
        "what): update the client, or report it with the server's log."
    )


class UnknownConnectionError(ConnectionError_):
    """The server closed the connection with a reason this SDK does not know."""

    advice = "The server ended the connection unexpectedly: try again, or check the server's log."

    def __init__(self, name: str, message: str, *, advice: str | None = None) -> None:
        super().__init__(message, advice=advice)
        self.name = name


class RequestFailed(DpkitError):
    """A scene request got no answer in time, or the session ended before it was answered."""

    name = "requestFailed"


class SceneResponseError(DpkitError):
    """A scene request was answered with a non-zero status (the Web SDK's ``SceneResponseError``).

    ``request_name``, ``status`` and ``response_body`` are the response's, as the Web SDK's
    ``requestName``, ``status`` and ``responseBody``; the message starts as the Web SDK's does
    (``Scene response failed, status: 1``) and adds the request and the server's reason.
    """

    name = "sceneResponseError"
    advice = (
        "The server could not carry out the request: its response_body says why (a request it "
        "does not support, or a text over its limits)."
    )

    def __init__(self, request_name: str, status: int, response_body: Any) -> None:
        reason = _response_reason(response_body)
        message = f"Scene response failed, status: {status} ({request_name}"
        message += f": {reason})" if reason else ")"
        super().__init__(message)
        self.request_name = request_name
        self.status = status
        #: The response's body (a JSON object), as the Web SDK's ``responseBody: any``.
        self.response_body: Any = response_body


def _response_reason(body: object) -> str:
    """The server's reason in a failed response's body, bounded, if it gives one."""
    if not isinstance(body, dict):
        return ""
    for key in ("error", "message", "errorMessage", "reason"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value[:200]
    return ""


class ProtocolError(DpkitError):
    """The peer sent a frame the protocol does not allow; the message says what was wrong."""

    name = "protocolError"
    advice = "The two sides do not speak the same protocol version: update dpkit or the server."


class InvalidStateError(DpkitError):
    """An operation was called in a state that does not allow it (``session is connecting``)."""

    name = "invalidState"


class NoSession(InvalidStateError):
    """A scene request was made without a session (the Web SDK rejects with ``noSession``)."""

    name = "noSession"
    advice = (
        "Connect first (await scene.connect()), and send requests while the scene is connected."
    )


class ConfigurationError(DpkitError):
    """Settings, an API key or an argument are not valid."""

    name = "configurationError"
    advice = "Fix the configuration value named in the message."


CONNECTION_ERRORS: dict[str, type[ConnectionError_]] = {
    cls.name: cls
    for cls in (
        NoUserMedia,
        NoScene,
        ServerConnectionFailed,
        NotSupported,
        MediaStreamFailed,
        SessionTimeout,
        ControlFailed,
        NoSessionToResume,
        AssetsFailed,
        TooManySockets,
        FrameTooLarge,
        ProtocolRejected,
    )
}


def connection_error(name: str, message: str) -> ConnectionError_:
    """Build the connection error for a seed name, e.g. a server ``close`` reason."""
    cls = CONNECTION_ERRORS.get(name)
    if cls is None:
        return UnknownConnectionError(name, message)
    return cls(message)
