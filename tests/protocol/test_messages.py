"""Frames: every type round-trips, the JSON has the protocol page's shape, bad input is named."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from dpkit.errors import ProtocolError
from dpkit.protocol.messages import (
    WEBRTC_EVENTS,
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
    UnknownFrame,
    UpdateOffer,
    UserCamera,
    UserText,
    VideoBounds,
    VideoStarted,
    frame_to_json,
    parse_frame,
    serialize_frame,
)

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = "candidate:1 1 udp 2113937151 3f2a.local 54321 typ host generation 0"

SAMPLES: list[Frame] = [
    Established(),
    Established(
        (
            IceServer(("stun:stun.example.org:3478",)),
            IceServer(("turn:turn.example.org:3478", "turns:turn.example.org"), "user", "secret"),
        ),
        SessionSettings(microphone_mute_delay_ms=1500, log_to_server=True),
        resume_session_id="s-old",
    ),
    Accepted("s1"),
    Accepted("s1", True, "node-a", "scene-1", "wss://control.example.org/ws"),
    Answer(SDP),
    Connected("s1"),
    Ice(CANDIDATE, "0", 0),
    Ice(CANDIDATE, "1", 1, session_id="s1"),
    Ice("", "", 0, complete=True, session_id="s1"),
    Ice("", complete=True),
    Close("noScene"),
    Close("normal", "s1"),
    Offer(SDP),
    Offer(SDP, "hello", False, "s1"),
    UpdateOffer(SDP, session_id="s-old"),
    VideoBounds(640, 480),
    VideoBounds(1920, 1080, "s1"),
    UserCamera(True),
    UserCamera(False, 90, "s1"),
    VideoStarted(),
    VideoStarted("s1"),
    KeepAlive(),
    KeepAlive("s1"),
    Ui(True),
    Ui(False, "s1"),
    UserText("hello"),
    UserText("hello", "s1"),
    SceneRequest(
        "conversationSend",
        "scene-1_1",
        {"personaId": "1", "text": "", "variables": {}, "optionalArgs": {"kind": "init"}},
    ),
    SceneRequest("getState", "scene-1_2"),
    SceneResponse("conversationSend", "scene-1_1", 0),
    SceneResponse("configure", "scene-1_3", 1, {"error": "unsupported"}),
    SceneEvent(
        "state",
        {
            "scene": {"sceneId": "scene-1", "sdkVersion": "15.8.1", "featureFlags": []},
            "persona": {"1": {"speechState": "idle", "currentSpeech": ""}},
            "session": {"sessionId": "s1", "state": "connected"},
        },
    ),
    SceneEvent("speechMarker", {"personaId": "1", "name": "showcards", "arguments": []}),
    DiagnosticsLog("browser", ("first line", "second line")),
    DiagnosticsLog("browser", ()),
    DpkitEvent("queue", {"position": 2, "size": 5, "etaMs": 3000}),
    DpkitEvent("protocolError", {"message": "unexpected offer while opened"}),
    UnknownFrame("orchestration", "event", "whatever", {"a": [1, 2]}),
    UnknownFrame("webrtc", "event", "someFutureEvent", {"x": True}),
    UnknownFrame("webrtc", "request", "offer", {"sdp": SDP}),
    UnknownFrame("scene", "notification", "state", {}),
    UnknownFrame("diagnostics", "event", "metrics", {}),
]


_ABSENT: Any = object()


def _frame(category: str, name: str, body: Any = _ABSENT, **envelope: Any) -> str:
    """The text of a frame; ``body`` left out means no body key at all."""
    data: dict[str, Any] = {"category": category, "kind": "event", "name": name, **envelope}
    if body is not _ABSENT:
        data["body"] = body
    return json.dumps(data)


def _webrtc(name: str, body: Any) -> str:
    return _frame("webrtc", name, body)


def test_samples_cover_every_frame_type() -> None:
    """The round-trip samples include every webrtc event type and every other frame type."""
    covered = {type(frame) for frame in SAMPLES}
    others = {SceneRequest, SceneResponse, SceneEvent, DiagnosticsLog, DpkitEvent, UnknownFrame}
    assert covered == set(WEBRTC_EVENTS.values()) | others


@pytest.mark.parametrize("frame", SAMPLES, ids=repr)
def test_round_trip(frame: Frame) -> None:
    """parse_frame(serialize_frame(frame)) gives back an equal frame of the same type."""
    parsed = parse_frame(serialize_frame(frame))
    assert parsed == frame
    assert type(parsed) is type(frame)


@pytest.mark.parametrize("frame", SAMPLES, ids=repr)
def test_round_trip_from_utf8_bytes(frame: Frame) -> None:
    """A binary message holding the UTF-8 text parses like the text itself."""
    assert parse_frame(serialize_frame(frame).encode("utf-8")) == frame


@pytest.mark.parametrize("frame", SAMPLES, ids=repr)
def test_serialize_is_frame_to_json(frame: Frame) -> None:
    """serialize_frame encodes exactly frame_to_json's object, compactly."""
    assert serialize_frame(frame) == json.dumps(frame_to_json(frame), separators=(",", ":"))


def test_webrtc_names_match_registry() -> None:
    """WEBRTC_EVENTS maps every name to the class whose NAME it is, with the protocol's names."""
    assert {name: cls.NAME for name, cls in WEBRTC_EVENTS.items()} == {
        name: name for name in WEBRTC_EVENTS
    }
    assert set(WEBRTC_EVENTS) == {
        "established",
        "accepted",
        "answer",
        "connected",
        "ice",
        "close",
        "offer",
        "updateOffer",
        "videoBounds",
        "userCamera",
        "videoStarted",
        "keepAlive",
        "ui",
        "userText",
    }


# --- JSON shapes from the protocol page ----------------------------------------------------------


def test_established_shape() -> None:
    """`established` carries iceServers and settings {microphoneMuteDelay, logToServer}."""
    frame = Established(
        (IceServer(("stun:s.example:3478",)), IceServer(("turn:t.example",), "u", "c")),
        SessionSettings(1500, True),
    )
    assert frame_to_json(frame) == {
        "category": "webrtc",
        "kind": "event",
        "name": "established",
        "body": {
            "iceServers": [
                {"urls": ["stun:s.example:3478"]},
                {"urls": ["turn:t.example"], "username": "u", "credential": "c"},
            ],
            "settings": {"microphoneMuteDelay": 1500, "logToServer": True},
        },
    }


def test_established_defaults_shape() -> None:
    """A default `established` has an empty iceServers array and delay -1, no server logging."""
    assert frame_to_json(Established())["body"] == {
        "iceServers": [],
        "settings": {"microphoneMuteDelay": -1, "logToServer": False},
    }


def test_established_resume_shape() -> None:
    """`established` names resumeSessionId only when resuming."""
    body = frame_to_json(Established(resume_session_id="s-old"))["body"]
    assert body["resumeSessionId"] == "s-old"


def test_accepted_shape() -> None:
    """`accepted` carries sessionId, resumeRequested, server, sceneId and controlUrl."""
    frame = Accepted("s1", True, "node-a", "scene-1", "wss://c.example/ws")
    assert frame_to_json(frame)["body"] == {
        "sessionId": "s1",
        "resumeRequested": True,
        "server": "node-a",
        "sceneId": "scene-1",
        "controlUrl": "wss://c.example/ws",
    }
    assert frame_to_json(Accepted("s1"))["body"] == {"sessionId": "s1", "resumeRequested": False}


def test_answer_and_connected_shapes() -> None:
    """`answer` carries sdp and `connected` carries sessionId."""
    assert frame_to_json(Answer(SDP))["body"]["sdp"] == SDP
    assert frame_to_json(Connected("s1")) == {
        "category": "webrtc",
        "kind": "event",
        "name": "connected",
        "body": {"sessionId": "s1"},
    }


def test_offer_shape() -> None:
    """`offer` has sdp, type "offer" and features.videoStartedEvent true."""
    assert frame_to_json(Offer(SDP)) == {
        "category": "webrtc",
        "kind": "event",
        "name": "offer",
        "body": {"sdp": SDP, "type": "offer", "features": {"videoStartedEvent": True}},
    }
    assert frame_to_json(Offer(SDP, user_text="hi"))["body"]["user_text"] == "hi"


def test_update_offer_shape() -> None:
    """`updateOffer` is an offer body plus the sessionId to resume."""
    assert frame_to_json(UpdateOffer(SDP, session_id="s-old")) == {
        "category": "webrtc",
        "kind": "event",
        "name": "updateOffer",
        "body": {
            "sdp": SDP,
            "type": "offer",
            "features": {"videoStartedEvent": True},
            "sessionId": "s-old",
        },
    }


def test_ice_shapes() -> None:
    """`ice` trickles candidate/sdpMid/sdpMLineIndex/complete, then the complete form."""
    assert frame_to_json(Ice(CANDIDATE, "0", 0, session_id="s1"))["body"] == {
        "candidate": CANDIDATE,
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "complete": False,
        "sessionId": "s1",
    }
    assert frame_to_json(Ice("", "", 0, complete=True, session_id="s1")) == {
        "category": "webrtc",
        "kind": "event",
        "name": "ice",
        "body": {
            "candidate": "",
            "sdpMid": "",
            "sdpMLineIndex": 0,
            "complete": True,
            "sessionId": "s1",
        },
    }


def test_client_event_shapes() -> None:
    """The client's events have the protocol page's bodies."""
    assert frame_to_json(VideoBounds(640, 480, "s1"))["body"] == {
        "width": 640,
        "height": 480,
        "sessionId": "s1",
    }
    assert frame_to_json(UserCamera(True))["body"] == {"active": True}
    assert frame_to_json(UserCamera(False, 90))["body"] == {"active": False, "rotation": 90}
    assert frame_to_json(VideoStarted())["body"] == {}
    assert frame_to_json(KeepAlive("s1"))["body"] == {"sessionId": "s1"}
    assert frame_to_json(Ui(False))["body"] == {"visible": False}
    assert frame_to_json(UserText("hi"))["body"] == {"userText": "hi"}
    assert frame_to_json(Close("normal", "s1"))["body"] == {"reason": "normal", "sessionId": "s1"}
    assert frame_to_json(Close("noScene"))["body"] == {"reason": "noScene"}


def test_scene_request_shape() -> None:
    """A scene request has kind "request" and its transaction at top level."""
    frame = SceneRequest("stopSpeaking", "scene-1_4", {"personaId": "1"})
    assert frame_to_json(frame) == {
        "category": "scene",
        "kind": "request",
        "name": "stopSpeaking",
        "transaction": "scene-1_4",
        "body": {"personaId": "1"},
    }


def test_scene_response_shape() -> None:
    """A scene response has transaction and status at top level, beside its body."""
    frame = SceneResponse("conversationSend", "scene-1_1", 0, {})
    assert frame_to_json(frame) == {
        "category": "scene",
        "kind": "response",
        "name": "conversationSend",
        "transaction": "scene-1_1",
        "status": 0,
        "body": {},
    }


def test_scene_event_diagnostics_and_dpkit_shapes() -> None:
    """Scene events, diagnostics logs and dpkit additions use their own categories."""
    assert frame_to_json(SceneEvent("state", {"a": 1})) == {
        "category": "scene",
        "kind": "event",
        "name": "state",
        "body": {"a": 1},
    }
    assert frame_to_json(DiagnosticsLog("browser", ("x", "y"))) == {
        "category": "diagnostics",
        "kind": "event",
        "name": "log",
        "body": {"name": "browser", "text": ["x", "y"]},
    }
    assert frame_to_json(DpkitEvent("idleWarning", {"closesInMs": 500})) == {
        "category": "dpkit",
        "kind": "event",
        "name": "idleWarning",
        "body": {"closesInMs": 500},
    }


# --- real browser-shaped frames ----------------------------------------------------------------

BROWSER_FRAMES: list[tuple[str, Frame]] = [
    (
        _webrtc("ice", {"complete": True, "candidate": "", "sdpMid": "", "sdpMLineIndex": 0}),
        Ice("", "", 0, complete=True),
    ),
    (
        _webrtc(
            "ice",
            {
                "candidate": CANDIDATE,
                "sdpMid": "0",
                "sdpMLineIndex": 0,
                "usernameFragment": "abcd",
                "complete": False,
                "sessionId": "s1",
            },
        ),
        Ice(CANDIDATE, "0", 0, session_id="s1"),
    ),
    (
        _webrtc("ice", {"candidate": CANDIDATE, "sdpMid": None, "sdpMLineIndex": None}),
        Ice(CANDIDATE),
    ),
    (
        _webrtc(
            "offer",
            {"sdp": SDP, "type": "offer", "user_text": "", "features": {"videoStartedEvent": True}},
        ),
        Offer(SDP, "", True),
    ),
    (
        _webrtc(
            "updateOffer",
            {
                "sdp": SDP,
                "type": "offer",
                "features": {"videoStartedEvent": True},
                "sessionId": "s-old",
            },
        ),
        UpdateOffer(SDP, session_id="s-old"),
    ),
    (
        _webrtc("videoBounds", {"width": 640.0, "height": 480, "sessionId": "s1"}),
        VideoBounds(640, 480, "s1"),
    ),
    (_webrtc("userCamera", {"active": True, "sessionId": "s1"}), UserCamera(True, None, "s1")),
    (_webrtc("videoStarted", {"sessionId": "s1"}), VideoStarted("s1")),
    (_webrtc("keepAlive", {}), KeepAlive()),
    (_frame("webrtc", "keepAlive"), KeepAlive()),
    (_frame("webrtc", "keepAlive", None), KeepAlive()),
    (_webrtc("ui", {"visible": False, "sessionId": "s1"}), Ui(False, "s1")),
    (_webrtc("userText", {"userText": "hello"}), UserText("hello")),
    (_webrtc("close", {"reason": "normal", "sessionId": "s1"}), Close("normal", "s1")),
    (
        _webrtc(
            "established",
            {
                "iceServers": [{"urls": "stun:s.example:3478"}],
                "settings": {"microphoneMuteDelay": 1500.0, "logToServer": False},
            },
        ),
        Established((IceServer(("stun:s.example:3478",)),), SessionSettings(1500, False)),
    ),
    (_webrtc("established", {}), Established()),
    (
        _frame(
            "scene",
            "conversationSend",
            {"personaId": 1, "text": "hi", "variables": {}, "optionalArgs": {}},
            kind="request",
            transaction="scene-1_3",
        ),
        SceneRequest(
            "conversationSend",
            "scene-1_3",
            {"personaId": 1, "text": "hi", "variables": {}, "optionalArgs": {}},
        ),
    ),
    (
        _frame("scene", "getState", {}, kind="response", transaction="t", status=0.0),
        SceneResponse("getState", "t", 0, {}),
    ),
    (
        _frame("diagnostics", "log", {"name": "browser", "text": ["a", 2]}),
        DiagnosticsLog("browser", ("a", "2")),
    ),
    (_frame("diagnostics", "log", {}), DiagnosticsLog("", ())),
    (
        json.dumps({"category": "webrtc", "name": "connected", "body": {"sessionId": "s1"}}),
        Connected("s1"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROWSER_FRAMES)
def test_parse_browser_frames(text: str, expected: Frame) -> None:
    """Frames shaped as the Web SDK sends them parse to the expected types and values."""
    assert parse_frame(text) == expected


UNKNOWN_FRAMES: list[tuple[str, UnknownFrame]] = [
    (
        _frame("orchestration", "conversationRequest", {"input": {"text": "hi"}}),
        UnknownFrame("orchestration", "event", "conversationRequest", {"input": {"text": "hi"}}),
    ),
    (
        _webrtc("brandNewEvent", {"anything": [1]}),
        UnknownFrame("webrtc", "event", "brandNewEvent", {"anything": [1]}),
    ),
    (
        _frame("webrtc", "accepted", {}, kind="request"),
        UnknownFrame("webrtc", "request", "accepted", {}),
    ),
    (
        _frame("scene", "state", {"x": 1}, kind="notification"),
        UnknownFrame("scene", "notification", "state", {"x": 1}),
    ),
    (
        _frame("diagnostics", "metrics", {"cpu": 1}),
        UnknownFrame("diagnostics", "event", "metrics", {"cpu": 1}),
    ),
    (_frame("", "", None), UnknownFrame("", "event", "", {})),
]


@pytest.mark.parametrize(("text", "expected"), UNKNOWN_FRAMES)
def test_unknown_frames(text: str, expected: UnknownFrame) -> None:
    """Unknown categories, unknown webrtc names and unknown kinds parse to UnknownFrame."""
    assert parse_frame(text) == expected


def test_dpkit_category_parses_any_name() -> None:
    """Any name in the dpkit category parses to a DpkitEvent with its body."""
    assert parse_frame(_frame("dpkit", "phase", {"name": "loading", "elapsedMs": 3})) == (
        DpkitEvent("phase", {"name": "loading", "elapsedMs": 3})
    )


# --- malformed input ---------------------------------------------------------------------------

MALFORMED: list[tuple[str | bytes, tuple[str, ...]]] = [
    ("not json", ("not JSON",)),
    ("", ("not JSON",)),
    ('{"category": "webrtc", "name": "keepAlive"', ("not JSON",)),
    ("[]", ("JSON object", "list")),
    ('[{"category": "webrtc", "name": "keepAlive"}]', ("JSON object", "list")),
    ('"established"', ("JSON object", "str")),
    ("null", ("JSON object", "NoneType")),
    ("42", ("JSON object", "int")),
    (json.dumps({"name": "keepAlive", "body": {}}), ("'category'", "got nothing")),
    (json.dumps({"category": 1, "name": "keepAlive"}), ("'category'", "got int")),
    (json.dumps({"category": "webrtc", "body": {}}), ("'name'", "got nothing")),
    (json.dumps({"category": "webrtc", "name": 5}), ("'name'", "a string", "got int")),
    (json.dumps({"category": "webrtc", "name": None}), ("'name'", "got NoneType")),
    (json.dumps({"category": "webrtc", "name": "ui", "kind": 3}), ("'kind'", "got int")),
    (_frame("webrtc", "keepAlive", []), ("webrtc/keepAlive", "'body'", "an object")),
    (_frame("scene", "state", "x"), ("scene/state", "'body'")),
    (_webrtc("established", {"iceServers": "stun:x"}), ("established", "'iceServers'", "array")),
    (_webrtc("established", {"iceServers": {}}), ("'iceServers'", "got dict")),
    (_webrtc("established", {"iceServers": [5]}), ("'iceServers'", "an object")),
    (_webrtc("established", {"iceServers": [{"urls": 5}]}), ("'urls'",)),
    (_webrtc("established", {"iceServers": [{}]}), ("'urls'",)),
    (_webrtc("established", {"iceServers": [{"urls": ["stun:x", 1]}]}), ("'urls'",)),
    (_webrtc("established", {"iceServers": [{"urls": "t", "username": 1}]}), ("'username'",)),
    (_webrtc("established", {"settings": []}), ("'settings'", "an object")),
    (_webrtc("established", {"settings": {"microphoneMuteDelay": "1"}}), ("microphoneMuteDelay",)),
    (_webrtc("established", {"settings": {"microphoneMuteDelay": 1.5}}), ("microphoneMuteDelay",)),
    (_webrtc("established", {"settings": {"logToServer": "yes"}}), ("'logToServer'", "boolean")),
    (_webrtc("established", {"resumeSessionId": 7}), ("'resumeSessionId'",)),
    (_webrtc("accepted", {}), ("webrtc/accepted", "'sessionId'", "got nothing")),
    (_webrtc("accepted", {"sessionId": 12}), ("'sessionId'", "got int")),
    (_webrtc("accepted", {"sessionId": "s", "resumeRequested": "no"}), ("'resumeRequested'",)),
    (_webrtc("accepted", {"sessionId": "s", "controlUrl": 1}), ("'controlUrl'",)),
    (_webrtc("answer", {"sdp": 5}), ("webrtc/answer", "'sdp'", "a string", "got int")),
    (_webrtc("answer", {}), ("'sdp'", "got nothing")),
    (_webrtc("connected", {}), ("webrtc/connected", "'sessionId'")),
    (_webrtc("ice", {"candidate": "", "complete": False}), ("'candidate'", "'complete' is false")),
    (_webrtc("ice", {"sdpMid": "0", "sdpMLineIndex": 0}), ("'candidate'",)),
    (_webrtc("ice", {"candidate": 1, "complete": False}), ("'candidate'", "got int")),
    (_webrtc("ice", {"candidate": CANDIDATE, "complete": "no"}), ("'complete'", "boolean")),
    (_webrtc("ice", {"candidate": CANDIDATE, "sdpMLineIndex": "0"}), ("'sdpMLineIndex'",)),
    (_webrtc("ice", {"candidate": CANDIDATE, "sdpMLineIndex": True}), ("'sdpMLineIndex'",)),
    (_webrtc("ice", {"candidate": CANDIDATE, "sdpMid": 0}), ("'sdpMid'",)),
    (_webrtc("close", {}), ("webrtc/close", "'reason'")),
    (_webrtc("offer", {"type": "offer"}), ("webrtc/offer", "'sdp'")),
    (_webrtc("offer", {"sdp": SDP, "features": True}), ("'features'", "an object")),
    (_webrtc("offer", {"sdp": SDP, "features": {"videoStartedEvent": 1}}), ("videoStartedEvent",)),
    (_webrtc("updateOffer", {"sdp": SDP, "type": "offer"}), ("updateOffer", "'sessionId'")),
    (_webrtc("videoBounds", {"width": "640", "height": 480}), ("'width'", "an integer")),
    (_webrtc("videoBounds", {"width": True, "height": 480}), ("'width'", "got bool")),
    (_webrtc("videoBounds", {"width": 640}), ("'height'", "got nothing")),
    (_webrtc("userCamera", {}), ("webrtc/userCamera", "'active'")),
    (_webrtc("userCamera", {"active": True, "rotation": "90"}), ("'rotation'",)),
    (_webrtc("ui", {"visible": "true"}), ("'visible'", "boolean")),
    (_webrtc("userText", {"text": "hi"}), ("'userText'",)),
    (_webrtc("keepAlive", {"sessionId": 1}), ("'sessionId'",)),
    (_frame("scene", "conversationSend", {}, kind="request"), ("'transaction'", "got nothing")),
    (_frame("scene", "x", {}, kind="request", transaction=1), ("'transaction'", "got int")),
    (_frame("scene", "x", {}, kind="response", transaction="t"), ("'status'", "got nothing")),
    (_frame("scene", "x", {}, kind="response", transaction="t", status="0"), ("'status'", "str")),
    (_frame("scene", "x", {}, kind="response", transaction="t", status=1.5), ("'status'",)),
    (_frame("scene", "x", {}, kind="response", transaction="t", status=False), ("'status'",)),
    (_frame("scene", "x", {}, kind="response", status=0), ("'transaction'",)),
    (_frame("diagnostics", "log", {"text": "one line"}), ("diagnostics/log", "'text'", "array")),
    (_frame("diagnostics", "log", {"name": 3, "text": []}), ("'name'",)),
    (b"\xff\xfe{}", ("UTF-8",)),
    ('{"category": "webrtc", "name": "x", "body": {"n": 1' + "0" * 5000 + "}}", ("JSON",)),
    ("[" * 100_000 + "]" * 100_000, ("JSON",)),
]


@pytest.mark.parametrize(("text", "fragments"), MALFORMED)
def test_malformed_frames_raise_protocol_error(
    text: str | bytes, fragments: tuple[str, ...]
) -> None:
    """Malformed input raises ProtocolError whose message names what was wrong."""
    with pytest.raises(ProtocolError) as caught:
        parse_frame(text)
    for fragment in fragments:
        assert fragment in caught.value.message
    assert caught.value.name == "protocolError"


WRONG_VALUES: list[Any] = [None, 0, 1.5, -1, True, "", "x", [], ["x"], {}, {"a": 1}]


def _mutations(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every copy of a frame's JSON with one envelope, body or nested value replaced."""
    out: list[dict[str, Any]] = []
    for key in data:
        for value in WRONG_VALUES:
            out.append({**data, key: value})
        out.append({k: v for k, v in data.items() if k != key})
    body = data["body"]
    for key, inner in body.items():
        for value in WRONG_VALUES:
            out.append({**data, "body": {**body, key: value}})
        out.append({**data, "body": {k: v for k, v in body.items() if k != key}})
        if isinstance(inner, dict):
            for nested in inner:
                for value in WRONG_VALUES:
                    out.append({**data, "body": {**body, key: {**inner, nested: value}}})
        if isinstance(inner, list) and inner:
            for value in WRONG_VALUES:
                out.append({**data, "body": {**body, key: [value]}})
    return out


@pytest.mark.parametrize("frame", SAMPLES, ids=repr)
def test_any_wrong_value_parses_or_raises_protocol_error(frame: Frame) -> None:
    """Any one value replaced or removed: the frame parses or raises ProtocolError, never else."""
    for mutated in _mutations(frame_to_json(frame)):
        with contextlib.suppress(ProtocolError):
            parse_frame(json.dumps(mutated))
