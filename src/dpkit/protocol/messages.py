"""The frames of the session protocol as small frozen types, with one parser and one serialiser.

Every frame is one JSON object ``{category, kind, name, transaction?, status?, body}`` in a text
frame (docs/protocol.md, section 2). :func:`parse_frame` turns text into one of the types below and
:func:`serialize_frame` turns a type back into text. Frames of a category or name this side does not
know parse to :class:`UnknownFrame`, which both sides ignore; anything malformed raises
:class:`~dpkit.errors.ProtocolError` naming what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from dpkit.errors import ProtocolError

JSONObject: TypeAlias = dict[str, Any]

WEBRTC = "webrtc"
SCENE = "scene"
DIAGNOSTICS = "diagnostics"
DPKIT = "dpkit"

#: How deep a frame may nest objects and arrays. The protocol's own frames nest a few levels; a
#: frame nested near the recursion limit still decodes, and then breaks whatever walks it later
#: (a repr in a log line, json.dumps when it is relayed), so it is refused at the door.
MAX_NESTING = 32


class _Body:
    """Typed, validating reads from a frame body; errors name the frame and the field."""

    def __init__(self, where: str, body: Mapping[str, Any]) -> None:
        self._where = where
        self._body = body

    def _fail(self, key: str, expected: str) -> ProtocolError:
        got = type(self._body.get(key)).__name__ if key in self._body else "nothing"
        return ProtocolError(f"{self._where}: field {key!r} must be {expected}, got {got}")

    def text(self, key: str) -> str:
        value = self._body.get(key)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        if self._body.get(key) is None:
            return None
        return self.text(key)

    def flag(self, key: str, default: bool | None = None) -> bool:
        value = self._body.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "a boolean")
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        value = self._body.get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        if self._body.get(key) is None:
            return None
        return self.integer(key)

    def object(self, key: str) -> JSONObject:
        value = self._body.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return value

    def array(self, key: str) -> list[Any]:
        value = self._body.get(key, [])
        if not isinstance(value, list):
            raise self._fail(key, "an array")
        return value


def _without_none(body: JSONObject) -> JSONObject:
    return {key: value for key, value in body.items() if value is not None}


class WebRtcEvent:
    """Base of the ``webrtc`` category's events; subclasses set ``NAME``."""

    CATEGORY: ClassVar[str] = WEBRTC
    NAME: ClassVar[str]

    def body(self) -> JSONObject:
        raise NotImplementedError

    @classmethod
    def from_body(cls, body: _Body) -> WebRtcEvent:
        raise NotImplementedError


# --- server to client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IceServer:
    """One entry of ``established.iceServers`` (an RTCIceServer)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_json(self) -> JSONObject:
        return _without_none(
            {"urls": list(self.urls), "username": self.username, "credential": self.credential}
        )

    @classmethod
    def from_json(cls, value: Any) -> IceServer:
        if not isinstance(value, dict):
            raise ProtocolError("established: each of 'iceServers' must be an object")
        fields = _Body("established.iceServers", value)
        urls = value.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
            raise ProtocolError("established.iceServers: 'urls' must be a string or strings")
        return cls(tuple(urls), fields.opt_text("username"), fields.opt_text("credential"))


@dataclass(frozen=True)
class SessionSettings:
    """``established.settings``: how the client should behave in this session."""

    microphone_mute_delay_ms: int = -1
    log_to_server: bool = False


@dataclass(frozen=True)
class Established(WebRtcEvent):
    """A Digital Person was found; the client creates its peer connection and offers."""

    NAME: ClassVar[str] = "established"
    ice_servers: tuple[IceServer, ...] = ()
    settings: SessionSettings = field(default_factory=SessionSettings)
    resume_session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none(
            {
                "iceServers": [server.to_json() for server in self.ice_servers],
                "settings": {
                    "microphoneMuteDelay": self.settings.microphone_mute_delay_ms,
                    "logToServer": self.settings.log_to_server,
                },
                "resumeSessionId": self.resume_session_id,
            }
        )

    @classmethod
    def from_body(cls, body: _Body) -> Established:
        settings = _Body("established.settings", body.object("settings"))
        return cls(
            ice_servers=tuple(IceServer.from_json(item) for item in body.array("iceServers")),
            settings=SessionSettings(
                microphone_mute_delay_ms=settings.integer("microphoneMuteDelay", -1),
                log_to_server=settings.flag("logToServer", False),
            ),
            resume_session_id=body.opt_text("resumeSessionId"),
        )


@dataclass(frozen=True)
class Accepted(WebRtcEvent):
    """The server took the offer: the session has its id."""

    NAME: ClassVar[str] = "accepted"
    session_id: str
    resume_requested: bool = False
    server: str | None = None
    scene_id: str | None = None
    control_url: str | None = None

    def body(self) -> JSONObject:
        return _without_none(
            {
                "sessionId": self.session_id,
                "resumeRequested": self.resume_requested,
                "server": self.server,
                "sceneId": self.scene_id,
                "controlUrl": self.control_url,
            }
        )

    @classmethod
    def from_body(cls, body: _Body) -> Accepted:
        return cls(
            session_id=body.text("sessionId"),
            resume_requested=body.flag("resumeRequested", False),
            server=body.opt_text("server"),
            scene_id=body.opt_text("sceneId"),
            control_url=body.opt_text("controlUrl"),
        )


@dataclass(frozen=True)
class Answer(WebRtcEvent):
    """The server's SDP answer."""

    NAME: ClassVar[str] = "answer"
    sdp: str

    def body(self) -> JSONObject:
        return {"sdp": self.sdp, "type": "answer"}

    @classmethod
    def from_body(cls, body: _Body) -> Answer:
        return cls(sdp=body.text("sdp"))


@dataclass(frozen=True)
class Connected(WebRtcEvent):
    """The server's transport is up and media flows: the session is connected."""

    NAME: ClassVar[str] = "connected"
    session_id: str

    def body(self) -> JSONObject:
        return {"sessionId": self.session_id}

    @classmethod
    def from_body(cls, body: _Body) -> Connected:
        return cls(session_id=body.text("sessionId"))


# --- both directions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ice(WebRtcEvent):
    """One trickled ICE candidate, or the end of candidates (``complete``)."""

    NAME: ClassVar[str] = "ice"
    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    complete: bool = False
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none(
            {
                "candidate": self.candidate,
                "sdpMid": self.sdp_mid,
                "sdpMLineIndex": self.sdp_mline_index,
                "complete": self.complete,
                "sessionId": self.session_id,
            }
        )

    @classmethod
    def from_body(cls, body: _Body) -> Ice:
        complete = body.flag("complete", False)
        candidate = body.opt_text("candidate") or ""
        if not complete and not candidate:
            raise ProtocolError("ice: field 'candidate' is empty but 'complete' is false")
        return cls(
            candidate=candidate,
            sdp_mid=body.opt_text("sdpMid"),
            sdp_mline_index=body.opt_integer("sdpMLineIndex"),
            complete=complete,
            session_id=body.opt_text("sessionId"),
        )


@dataclass(frozen=True)
class Close(WebRtcEvent):
    """The session ends (server) or is ended on purpose (client, reason ``normal``)."""

    NAME: ClassVar[str] = "close"
    reason: str
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none({"reason": self.reason, "sessionId": self.session_id})

    @classmethod
    def from_body(cls, body: _Body) -> Close:
        return cls(reason=body.text("reason"), session_id=body.opt_text("sessionId"))


# --- client to server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer(WebRtcEvent):
    """The client's SDP offer for a new session."""

    NAME: ClassVar[str] = "offer"
    sdp: str
    user_text: str | None = None
    video_started_event: bool = True
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none(
            {
                "sdp": self.sdp,
                "type": "offer",
                "user_text": self.user_text,
                "features": {"videoStartedEvent": self.video_started_event},
                "sessionId": self.session_id,
            }
        )

    @classmethod
    def from_body(cls, body: _Body) -> Offer:
        features = _Body(f"{cls.NAME}.features", body.object("features"))
        return cls(
            sdp=body.text("sdp"),
            user_text=body.opt_text("user_text"),
            video_started_event=features.flag("videoStartedEvent", False),
            session_id=body.opt_text("sessionId"),
        )


@dataclass(frozen=True)
class UpdateOffer(Offer):
    """A fresh offer that resumes the session named by ``session_id``."""

    NAME: ClassVar[str] = "updateOffer"

    @classmethod
    def from_body(cls, body: _Body) -> UpdateOffer:
        offer = Offer.from_body(body)
        if offer.session_id is None:
            raise ProtocolError("updateOffer: field 'sessionId' must be a string, got nothing")
        return cls(offer.sdp, offer.user_text, offer.video_started_event, offer.session_id)


@dataclass(frozen=True)
class VideoBounds(WebRtcEvent):
    """The size of the client's video element."""

    NAME: ClassVar[str] = "videoBounds"
    width: int
    height: int
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none(
            {"width": self.width, "height": self.height, "sessionId": self.session_id}
        )

    @classmethod
    def from_body(cls, body: _Body) -> VideoBounds:
        return cls(body.integer("width"), body.integer("height"), body.opt_text("sessionId"))


@dataclass(frozen=True)
class UserCamera(WebRtcEvent):
    """The user's camera was turned on or off."""

    NAME: ClassVar[str] = "userCamera"
    active: bool
    rotation: int | None = None
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none(
            {"active": self.active, "rotation": self.rotation, "sessionId": self.session_id}
        )

    @classmethod
    def from_body(cls, body: _Body) -> UserCamera:
        return cls(body.flag("active"), body.opt_integer("rotation"), body.opt_text("sessionId"))


@dataclass(frozen=True)
class VideoStarted(WebRtcEvent):
    """The persona's video is playing, unmuted."""

    NAME: ClassVar[str] = "videoStarted"
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none({"sessionId": self.session_id})

    @classmethod
    def from_body(cls, body: _Body) -> VideoStarted:
        return cls(body.opt_text("sessionId"))


@dataclass(frozen=True)
class KeepAlive(WebRtcEvent):
    """The user is still there: resets the idle timer."""

    NAME: ClassVar[str] = "keepAlive"
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none({"sessionId": self.session_id})

    @classmethod
    def from_body(cls, body: _Body) -> KeepAlive:
        return cls(body.opt_text("sessionId"))


@dataclass(frozen=True)
class Ui(WebRtcEvent):
    """Visibility of the client's page."""

    NAME: ClassVar[str] = "ui"
    visible: bool
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none({"visible": self.visible, "sessionId": self.session_id})

    @classmethod
    def from_body(cls, body: _Body) -> Ui:
        return cls(body.flag("visible"), body.opt_text("sessionId"))


@dataclass(frozen=True)
class UserText(WebRtcEvent):
    """Text typed by the user (client to server), or shown to the user (server to client)."""

    NAME: ClassVar[str] = "userText"
    user_text: str
    session_id: str | None = None

    def body(self) -> JSONObject:
        return _without_none({"userText": self.user_text, "sessionId": self.session_id})

    @classmethod
    def from_body(cls, body: _Body) -> UserText:
        return cls(body.text("userText"), body.opt_text("sessionId"))


WEBRTC_EVENTS: dict[str, type[WebRtcEvent]] = {
    cls.NAME: cls
    for cls in (
        Established,
        Accepted,
        Answer,
        Connected,
        Ice,
        Close,
        Offer,
        UpdateOffer,
        VideoBounds,
        UserCamera,
        VideoStarted,
        KeepAlive,
        Ui,
        UserText,
    )
}


# --- other categories ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneRequest:
    """A ``scene`` request; the server answers every one with a :class:`SceneResponse`."""

    name: str
    transaction: str
    body: JSONObject = field(default_factory=dict)


@dataclass(frozen=True)
class SceneResponse:
    """The answer to a scene request: ``status`` 0 is success."""

    name: str
    transaction: str
    status: int
    body: JSONObject = field(default_factory=dict)


@dataclass(frozen=True)
class SceneEvent:
    """A ``scene`` event from the server (``state``, ``conversationResult`` ...)."""

    name: str
    body: JSONObject = field(default_factory=dict)


@dataclass(frozen=True)
class DiagnosticsLog:
    """Client log lines, sent when ``established.settings.logToServer`` is true."""

    source: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class DpkitEvent:
    """One of dpkit's own additions, in the ``dpkit`` category that the Web SDK ignores."""

    name: str
    body: JSONObject = field(default_factory=dict)


@dataclass(frozen=True)
class UnknownFrame:
    """A well-formed frame this side does not know; ignored, as the protocol page says."""

    category: str
    kind: str
    name: str
    body: JSONObject = field(default_factory=dict)


Frame: TypeAlias = (
    WebRtcEvent
    | SceneRequest
    | SceneResponse
    | SceneEvent
    | DiagnosticsLog
    | DpkitEvent
    | UnknownFrame
)


# --- parse and serialise ------------------------------------------------------------------------


def parse_frame(text: str | bytes) -> Frame:
    """Parse one text frame; raise :class:`ProtocolError` naming what was wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("frame is not UTF-8 text") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc.msg} at position {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:
        # Over-long integers and deep nesting are valid JSON that json refuses to decode.
        raise ProtocolError(f"frame is not usable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"frame must be a JSON object, got {type(data).__name__}")
    if _nests_deeper(data, MAX_NESTING):
        raise ProtocolError(f"frame nests objects and arrays deeper than {MAX_NESTING} levels")
    envelope = _Body("frame", data)
    category = envelope.text("category")
    name = envelope.text("name")
    kind = envelope.opt_text("kind") or "event"
    raw_body = data.get("body", {})
    if raw_body is None:
        raw_body = {}
    if not isinstance(raw_body, dict):
        raise ProtocolError(f"{category}/{name}: field 'body' must be an object")
    where = f"{category}/{name}"
    if category == WEBRTC:
        event_type = WEBRTC_EVENTS.get(name)
        if event_type is None or kind != "event":
            return UnknownFrame(category, kind, name, raw_body)
        return event_type.from_body(_Body(where, raw_body))
    if category == SCENE:
        return _parse_scene(envelope, kind, name, raw_body)
    if category == DIAGNOSTICS and name == "log":
        fields = _Body(where, raw_body)
        lines = fields.array("text")
        return DiagnosticsLog(fields.opt_text("name") or "", tuple(str(line) for line in lines))
    if category == DPKIT:
        return DpkitEvent(name, raw_body)
    return UnknownFrame(category, kind, name, raw_body)


def _nests_deeper(value: JSONObject, limit: int) -> bool:
    """Whether ``value`` nests objects and arrays over ``limit`` deep (walked, not recursed)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _parse_scene(envelope: _Body, kind: str, name: str, body: JSONObject) -> Frame:
    if kind == "request":
        return SceneRequest(name, envelope.text("transaction"), body)
    if kind == "response":
        return SceneResponse(name, envelope.text("transaction"), envelope.integer("status"), body)
    if kind == "event":
        return SceneEvent(name, body)
    return UnknownFrame(SCENE, kind, name, body)


def _envelope(category: str, kind: str, name: str, body: JSONObject) -> JSONObject:
    return {"category": category, "kind": kind, "name": name, "body": body}


_SERIALIZERS: dict[type[Any], Callable[[Any], JSONObject]] = {
    SceneRequest: lambda f: {
        **_envelope(SCENE, "request", f.name, f.body),
        "transaction": f.transaction,
    },
    SceneResponse: lambda f: {
        **_envelope(SCENE, "response", f.name, f.body),
        "transaction": f.transaction,
        "status": f.status,
    },
    SceneEvent: lambda f: _envelope(SCENE, "event", f.name, f.body),
    DiagnosticsLog: lambda f: _envelope(
        DIAGNOSTICS, "event", "log", {"name": f.source, "text": list(f.lines)}
    ),
    DpkitEvent: lambda f: _envelope(DPKIT, "event", f.name, f.body),
    UnknownFrame: lambda f: _envelope(f.category, f.kind, f.name, f.body),
}


def frame_to_json(frame: Frame) -> JSONObject:
    """The JSON object for a frame (what :func:`serialize_frame` encodes)."""
    if isinstance(frame, WebRtcEvent):
        return _envelope(WEBRTC, "event", frame.NAME, frame.body())
    return _SERIALIZERS[type(frame)](frame)


def serialize_frame(frame: Frame) -> str:
    """Encode a frame as the text of one WebSocket message."""
    return json.dumps(frame_to_json(frame), separators=(",", ":"))
