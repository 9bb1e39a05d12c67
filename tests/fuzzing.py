"""Hostile traffic for the session socket: a seeded frame generator, and a driver that sends it.

Shared by the fuzz test (tests/server/test_fuzz.py) and the fuzz benchmark (benchmarks/fuzz.py).

:class:`FrameGenerator` draws frames of many shapes from one ``random.Random(seed)``, so a seed
names a sequence of frames: text that is not JSON, JSON that is not an object, deep nesting, huge
and non-finite numbers, every known frame name with fields of the wrong type, scene requests with
odd bodies, client logs, dpkit frames, mutations of real offers (tests/protocol/offers) and of ICE
candidates, binary frames, oversized frames, and valid frames in the wrong order.

:class:`FuzzDriver` sends them over real session sockets, each opened with a fresh token. Each
socket follows a plan: some send at once (the socket may still be queued for a Digital Person),
some wait for ``established``, some send a mutated offer, and some send a real offer first, so
the later phases (starting, accepted, connected) are fuzzed too. It drains what the server sends,
notes how each socket ended, opens another when one is closed, and stops after a number of frames
or of seconds. The IPv4 addresses candidates name are on loopback or in a documentation range
(the rest are IPv6, multicast or names, which the server refuses or cannot pair), and the server
and the driver's peer connections gather on 127.0.0.1 alone, so no fuzzed packet leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from dpkit.errors import ProtocolError
from dpkit.protocol.messages import Close, parse_frame
from dpkit.rtc import ice_addresses

Payload: TypeAlias = str | bytes
JSON: TypeAlias = Any

OFFERS_DIR = Path(__file__).parent / "protocol" / "offers"

#: The server's default ``max_frame_bytes``; aiohttp drops frames over four times it.
DEFAULT_MAX_FRAME_BYTES = 32 * 1024

CLIENT_EVENTS = (
    "offer",
    "updateOffer",
    "ice",
    "close",
    "videoBounds",
    "userCamera",
    "videoStarted",
    "keepAlive",
    "ui",
    "userText",
)
SERVER_EVENTS = ("established", "accepted", "answer", "connected")
SCENE_REQUESTS = (
    "startSpeaking",
    "conversationSend",
    "stopSpeaking",
    "getState",
    "conversationSetVariables",
    "conversationGetVariables",
    "configure",
    "startRecognize",
    "stopRecognize",
    "updateContentAwareness",
    "teleport",
)
DPKIT_NAMES = ("protocolError", "queue", "idleWarning", "assets", "phase", "shutdown", "x")
ORCHESTRATION_EVENTS = ("conversationResponse", "endConversation", "conversationRequest")

#: Odd strings: control characters, a lone surrogate (JSON can carry one), bidi overrides,
#: format strings, markup, paths, non-ASCII digits.
ODD_TEXTS = (
    "",
    " ",
    "\x00",
    "\x00\x01\x1b[31mred\x1b[0m",
    "line\nforged INFO line",
    "\ud800",
    "a\udfffb",
    "\u202eevil",
    "\ufeff",
    "☃" * 20,
    "%s%s%n%d",
    "{0}{1}",
    "<speak><break time='100s'/></speak>",
    "../../../../etc/passwd",
    "１２３",
    "𝟘𝟙",
    "NaN",
    "null",
    "0" * 40,
)

#: Numbers a careless parser turns into trouble (json.dumps writes the non-finite ones as
#: NaN / Infinity, which Python's json module reads back).
HUGE_NUMBERS: tuple[float | int, ...] = (
    2**31,
    2**32,
    2**63,
    2**64 + 1,
    -(2**63) - 1,
    10**30,
    10**300,
    -1,
    -(10**20),
    1e308,
    -1e308,
    1e-320,
    float("inf"),
    float("-inf"),
    float("nan"),
    -0.0,
    1.5,
    1e20,
)

#: Number literals written into the text itself: ones json turns into inf, and one it refuses
#: (integers over 4300 digits).
HUGE_LITERALS = ("1e400", "-1e400", "1" * 400, "-" + "9" * 4000, "1" * 5000, "1E+99999")


@dataclass(frozen=True)
class FuzzFrame:
    """One frame to send: the shape it was drawn as, and its text (or bytes, sent binary)."""

    shape: str
    payload: Payload


def load_offers() -> tuple[str, ...]:
    """The real offers the SDP mutations start from (tests/protocol/offers/*.sdp)."""
    offers = tuple(path.read_bytes().decode() for path in sorted(OFFERS_DIR.glob("*.sdp")))
    if not offers:
        raise FileNotFoundError(f"no offers in {OFFERS_DIR}")
    return offers


def encode(value: JSON) -> str:
    """Compact JSON text (non-finite numbers as NaN and Infinity, which Python reads back)."""
    return json.dumps(value, separators=(",", ":"))


def envelope(category: str, name: str, body: JSON, kind: str = "event", **extra: JSON) -> JSON:
    """A frame's JSON object, with any extra envelope fields (``transaction``, ``status``)."""
    return {"category": category, "kind": kind, "name": name, "body": body, **extra}


def nested_text(depth: int, inner: str = "1", *, objects: bool = False) -> str:
    """JSON text nested ``depth`` deep, built as text (json.dumps would recurse too deep)."""
    if objects:
        return '{"a":' * depth + inner + "}" * depth
    return "[" * depth + inner + "]" * depth


class FrameGenerator:
    """Hostile frames of many shapes, all drawn from one seeded ``random.Random``."""

    def __init__(self, seed: int, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.max_frame_bytes = max_frame_bytes
        self.offers = load_offers()
        self._shapes: dict[str, Callable[[], Payload]] = {
            "not-json": self.not_json,
            "json-non-object": self.json_non_object,
            "deep-nesting": self.deep_nesting,
            "huge-number": self.huge_number,
            "wrong-type": self.wrong_type,
            "envelope": self.odd_envelope,
            "scene-request": self.scene_request,
            "orchestration": self.orchestration,
            "diagnostics": self.diagnostics,
            "dpkit": self.dpkit,
            "unknown": self.unknown,
            "sdp-mutation": self.sdp_mutation_frame,
            "candidate-mutation": self.candidate_frame,
            "wrong-order": self.wrong_order,
            "binary": self.binary,
            "valid-noise": self.valid_noise,
            "near-limit": self.near_limit,
            "oversized": self.oversized,
        }
        # Before an offer the session is opened or established; after one, candidates matter.
        self._weights: dict[str, float] = {
            "not-json": 7,
            "json-non-object": 4,
            "deep-nesting": 3,
            "huge-number": 6,
            "wrong-type": 16,
            "envelope": 5,
            "scene-request": 9,
            "orchestration": 3,
            "diagnostics": 4,
            "dpkit": 3,
            "unknown": 3,
            "sdp-mutation": 6,
            "candidate-mutation": 6,
            "wrong-order": 9,
            "binary": 4,
            "valid-noise": 6,
            "near-limit": 1,
            "oversized": 0.3,
        }
        self._after_offer_weights = {
            **self._weights,
            "candidate-mutation": 30,
            "scene-request": 12,
            "sdp-mutation": 2,
        }

    def frame(self, *, after_offer: bool = False) -> FuzzFrame:
        """The next hostile frame (``after_offer``: weighted for a session that has offered)."""
        weights = self._after_offer_weights if after_offer else self._weights
        shape = self.rng.choices(list(weights), list(weights.values()))[0]
        return FuzzFrame(shape, self._shapes[shape]())

    # --- values -----------------------------------------------------------------------------

    def odd_text(self) -> str:
        """An odd string: control characters, a lone surrogate, random code points, long."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return rng.choice(ODD_TEXTS)
        if roll < 0.8:
            return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 40)))
        return "x" * rng.choice((10, 999, 1000, 1001, 5000))

    def hostile_value(self) -> JSON:
        """A value of any JSON type, chosen to be wrong for whatever field it lands in."""
        rng = self.rng
        choices: list[Callable[[], JSON]] = [
            lambda: None,
            lambda: rng.choice((True, False)),
            lambda: rng.choice(HUGE_NUMBERS),
            lambda: rng.randint(-5, 5),
            self.odd_text,
            lambda: [],
            lambda: [rng.choice((None, 1, "a", {}, []))],
            lambda: {},
            lambda: {"nested": {"deeper": [1, None, {"x": self.odd_text()}]}},
            lambda: {"sdp": 1, "candidate": [], "text": {}},
            lambda: [[[[[[[[["deep"]]]]]]]]],
        ]
        return rng.choice(choices)()

    # --- bodies of the known frames ---------------------------------------------------------

    def real_offer(self) -> str:
        """One of the real offers, sometimes without its candidates (they trickle instead)."""
        offer = self.rng.choice(self.offers)
        if self.rng.random() < 0.5:
            offer = "".join(
                line
                for line in offer.splitlines(keepends=True)
                if not line.startswith(("a=candidate:", "a=end-of-candidates"))
            )
        return offer

    def candidate(self) -> str:
        """A well-formed candidate on loopback (or a documentation address)."""
        rng = self.rng
        port = rng.choice((9, 36459, rng.randint(40000, 60000)))
        return rng.choice(
            (
                f"candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host",
                f"candidate:842163049 1 udp 1677729535 127.0.0.1 {port} typ srflx "
                "raddr 127.0.0.1 rport 9 generation 0 ufrag abcd network-cost 999",
                f"candidate:2 1 tcp 1518280447 127.0.0.1 {port} typ host tcptype passive",
                f"candidate:3 1 udp 2122194687 ::1 {port} typ host generation 0",
                f"candidate:4 1 udp 2122194687 192.0.2.7 {port} typ host",
                f"candidate:5 1 udp 41885439 127.0.0.1 {port} typ relay raddr 192.0.2.1 rport 1",
                f"candidate:6 1 udp 2122260223 {rng.getrandbits(32):08x}-aa.local {port} typ host",
            )
        )

    def valid_body(self, name: str) -> JSON:
        """A body a server would take for the frame ``name``."""
        rng = self.rng
        session = {"sessionId": f"node-1-{rng.getrandbits(32):08x}"}
        bodies: dict[str, Callable[[], JSON]] = {
            "offer": lambda: {
                "sdp": self.real_offer(),
                "type": "offer",
                "user_text": "hello",
                "features": {"videoStartedEvent": True},
            },
            "updateOffer": lambda: {
                "sdp": self.real_offer(),
                "type": "offer",
                "features": {"videoStartedEvent": True},
                **session,
            },
            "ice": lambda: {
                "candidate": self.candidate(),
                "sdpMid": rng.choice(("0", "1")),
                "sdpMLineIndex": rng.choice((0, 1)),
                "complete": False,
            },
            "close": lambda: {"reason": "normal"},
            "videoBounds": lambda: {"width": 640, "height": 480},
            "userCamera": lambda: {"active": rng.choice((True, False)), "rotation": 0},
            "videoStarted": lambda: {},
            "keepAlive": lambda: {},
            "ui": lambda: {"visible": rng.choice((True, False))},
            "userText": lambda: {"userText": "hello there"},
            "established": lambda: {
                "iceServers": [],
                "settings": {"microphoneMuteDelay": -1, "logToServer": True},
            },
            "accepted": lambda: {"resumeRequested": True, "server": "node-1", **session},
            "answer": lambda: {"sdp": self.real_offer(), "type": "answer"},
            "connected": lambda: session,
        }
        return bodies[name]()

    def valid_frame(self, name: str) -> JSON:
        """A valid webrtc frame ``name`` (valid in some phase, perhaps not this one)."""
        return envelope("webrtc", name, self.valid_body(name))

    def scene_body(self, name: str) -> JSON:
        """A body the scene request ``name`` would have from the Web SDK."""
        rng = self.rng
        body: dict[str, JSON] = {"personaId": rng.choice((1, "1"))}
        if name in ("startSpeaking", "conversationSend"):
            body["text"] = rng.choice(("hello", "what can you do?", "", "goodbye"))
        if name == "conversationSend":
            body["variables"] = {}
            body["optionalArgs"] = rng.choice(({}, {"kind": "init"}))
        if name == "conversationSetVariables":
            body["variables"] = {"name": "value"}
        if name == "updateContentAwareness":
            body["content"] = [{"id": "x", "x1": 0, "y1": 0, "x2": 10, "y2": 10}]
        return body

    # --- shapes -----------------------------------------------------------------------------

    def not_json(self) -> str:
        """Text that is not JSON: fragments, truncated or padded frames, random characters."""
        rng = self.rng
        valid = encode(self.valid_frame(rng.choice(CLIENT_EVENTS)))
        choices: list[Callable[[], str]] = [
            lambda: rng.choice(("", " ", "{", "}", "[", "{broken", '{"category":', "\x00")),
            lambda: valid[: rng.randint(0, len(valid) - 1)],
            lambda: valid + rng.choice(("}", "garbage", ",", "\x00", valid)),
            lambda: valid.replace('"', "'"),
            lambda: rng.choice(("undefined", "True", "None", "{category: webrtc}", "NaN(")),
            lambda: "".join(chr(rng.randint(0, 0x7F)) for _ in range(rng.randint(1, 200))),
            lambda: "".join(chr(rng.randint(0x80, 0xD7FF)) for _ in range(rng.randint(1, 50))),
            lambda: '{"category":"webrtc","name":"x"\x00}',
        ]
        return rng.choice(choices)()

    def json_non_object(self) -> str:
        """JSON that is not an object, or numbers json refuses or turns into inf."""
        rng = self.rng
        return rng.choice(
            (
                "null",
                "true",
                "0",
                "-1e400",
                '"a string"',
                "[]",
                '[{"category":"webrtc","kind":"event","name":"keepAlive","body":{}}]',
                "NaN",
                "Infinity",
                rng.choice(HUGE_LITERALS),
                encode(self.odd_text()),
            )
        )

    def deep_nesting(self) -> str:
        """Arrays or objects nested deep: as the frame, in a body, in scene variables or a log."""
        rng = self.rng
        # Around 900-1000 levels json still decodes, and code that walks the result nearer the
        # recursion limit (repr, str, json.dumps) may not.
        depth = rng.choice((64, 500, rng.randint(850, 1000), rng.randint(850, 1000), 3000))
        nested = nested_text(depth, objects=rng.random() < 0.5)
        where = rng.randrange(5)
        if where == 0:
            return nested
        if where == 1:
            return (
                '{"category":"scene","kind":"request","name":"conversationSend",'
                '"transaction":"t_1","body":{"text":"hi","variables":' + nested + "}}"
            )
        if where == 2:
            return '{"category":"dpkit","kind":"event","name":"x","body":{"a":' + nested + "}}"
        if where == 3:
            return '{"category":"webrtc","kind":"event","name":"ice","body":' + nested + "}"
        return (
            '{"category":"diagnostics","kind":"event","name":"log","body":'
            '{"name":"browser","text":' + nested_text(depth) + "}}"
        )

    def huge_number(self) -> str:
        """A known frame with a number field huge, negative, fractional or not finite."""
        rng = self.rng
        name, key = rng.choice(
            (
                ("videoBounds", "width"),
                ("videoBounds", "height"),
                ("userCamera", "rotation"),
                ("ice", "sdpMLineIndex"),
                ("established", "iceServers"),
            )
        )
        frame = self.valid_frame(name)
        if rng.random() < 0.5:
            frame["body"][key] = rng.choice(HUGE_NUMBERS)
            return encode(frame)
        # As text, so it may be a literal json refuses or turns into inf.
        frame["body"][key] = "@@"
        return encode(frame).replace('"@@"', rng.choice(HUGE_LITERALS))

    def wrong_type(self) -> str:
        """A known frame with one or more fields of the wrong type, missing, or added."""
        rng = self.rng
        name = rng.choice(CLIENT_EVENTS + SERVER_EVENTS)
        frame = self.valid_frame(name)
        body: dict[str, JSON] = frame["body"]
        for _ in range(rng.randint(1, 3)):
            keys = list(body) or ["x"]
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.7:
                body[key] = self.hostile_value()
            elif roll < 0.85:
                body.pop(key, None)
            else:
                body[self.odd_text() or "extra"] = self.hostile_value()
        if name == "ice" and rng.random() < 0.3:
            body["complete"] = rng.choice((True, "true", 1, None))
        return encode(frame)

    def odd_envelope(self) -> str:
        """A frame whose envelope (category, kind, name, transaction, body) is wrong."""
        rng = self.rng
        frame = self.valid_frame(rng.choice(CLIENT_EVENTS))
        key = rng.choice(("category", "kind", "name", "body", "transaction", "status"))
        roll = rng.random()
        if roll < 0.6:
            frame[key] = self.hostile_value()
        elif roll < 0.8:
            frame.pop(key, None)
        else:
            frame["kind"] = rng.choice(("request", "response", "EVENT", ""))
            frame["transaction"] = self.hostile_value()
        return encode(frame)

    def scene_request(self) -> str:
        """A scene request, known or not, with an odd transaction, text or body."""
        rng = self.rng
        name = rng.choice(SCENE_REQUESTS)
        body = self.scene_body(name)
        frame = envelope("scene", name, body, kind="request", transaction=f"scene_{rng.random()}")
        roll = rng.random()
        if roll < 0.35:
            body["text"] = self.odd_text() if rng.random() < 0.7 else self.hostile_value()
        elif roll < 0.5:
            frame["transaction"] = rng.choice((self.hostile_value(), "", "t" * 5000))
        elif roll < 0.6:
            frame.pop("transaction")
        elif roll < 0.75:
            key = rng.choice(("personaId", "variables", "optionalArgs", "content", "text"))
            body[key] = self.hostile_value()
        elif roll < 0.85:
            body["optionalArgs"] = rng.choice(({"kind": 5}, [], "init", {"kind": "init"}, None))
            body["text"] = rng.choice(("", " ", "\x00"))
        elif roll < 0.92:
            frame["kind"] = "response"
            frame["status"] = rng.choice(HUGE_NUMBERS)
        # else: the plain request, which a persona in a session answers (and speaks).
        return encode(frame)

    def orchestration(self) -> str:
        """Scene events an orchestration server would relay, with odd bodies."""
        rng = self.rng
        body = rng.choice(
            (
                {"input": {"text": "hi"}, "output": {"text": "hello"}, "variables": {}},
                {"output": self.hostile_value(), "input": self.hostile_value()},
                {},
                {"output": {"text": self.odd_text()}},
            )
        )
        return encode(envelope("scene", rng.choice(ORCHESTRATION_EVENTS), body))

    def diagnostics(self) -> str:
        """A client log (``diagnostics/log``) with odd lines, a wrong type or a huge line."""
        rng = self.rng
        text: JSON = rng.choice(
            (
                ["hello from the page"],
                [self.odd_text() for _ in range(rng.randint(1, 30))],
                self.hostile_value(),
                [{"a": 1}, [2], None, 1e308],
                ["x" * 20000],
            )
        )
        body: JSON = rng.choice(
            ({"name": "browser", "text": text}, {"name": self.hostile_value(), "text": text})
        )
        return encode(envelope("diagnostics", rng.choice(("log", "log", "trace")), body))

    def dpkit(self) -> str:
        """A frame in dpkit's own category, which the server ignores, with an odd body."""
        rng = self.rng
        body = rng.choice(({}, {"message": self.odd_text()}, self.hostile_value()))
        return encode(envelope("dpkit", rng.choice(DPKIT_NAMES), body))

    def unknown(self) -> str:
        """A frame of a category or name nobody knows (or one nearly a known one)."""
        rng = self.rng
        category = rng.choice(("mystery", "WEBRTC", "", "scene ", "diagnostics", "webrtc"))
        name = rng.choice(("newThing", "Offer", "offer ", "", "x" * 300, self.odd_text()))
        return encode(envelope(category, name, {"a": 1}, kind=rng.choice(("event", "request"))))

    def sdp_mutation_frame(self) -> str:
        """An offer (or updateOffer) whose SDP is a real offer mutated one to three times."""
        rng = self.rng
        name = "offer" if rng.random() < 0.85 else "updateOffer"
        frame = self.valid_frame(name)
        frame["body"]["sdp"] = mutate_sdp(rng, rng.choice(self.offers))
        return encode(frame)

    def candidate_frame(self) -> str:
        """A trickled candidate: mutated, or well-formed with an odd mid, index or flag."""
        rng = self.rng
        body: dict[str, JSON] = {
            "candidate": mutate_candidate(rng, self.candidate()),
            "sdpMid": rng.choice(("0", "1", "2", "3")),
            "sdpMLineIndex": rng.choice((0, 1, 2)),
            "complete": False,
        }
        roll = rng.random()
        if roll < 0.15:
            body.pop("sdpMid")
        elif roll < 0.25:
            body.pop("sdpMid")
            body.pop("sdpMLineIndex")
        elif roll < 0.4:
            body["sdpMid"] = rng.choice(("9", "", "x" * 1000, None, 5, "audio"))
        elif roll < 0.5:
            body["sdpMid"] = None
            body["sdpMLineIndex"] = rng.choice((-1, 99, 2**40, 1.5, "0", None, 1e308))
        elif roll < 0.6:
            body["complete"] = True
            if rng.random() < 0.5:
                body["candidate"] = ""
        elif roll < 0.65:
            body["candidate"] = self.hostile_value()
        return encode(envelope("webrtc", "ice", body))

    def wrong_order(self) -> str:
        """A valid frame the protocol does not expect now: server-only, early, late or twice."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return encode(self.valid_frame(rng.choice(SERVER_EVENTS)))
        if roll < 0.4:
            name = "close" if rng.random() < 0.3 else "videoStarted"
            return encode(self.valid_frame(name))
        if roll < 0.55:
            return encode(self.valid_frame(rng.choice(("offer", "updateOffer"))))
        if roll < 0.75:
            return encode(self.valid_frame("ice"))
        if roll < 0.85:
            return encode(envelope("webrtc", "ice", {"candidate": "", "complete": True}))
        return encode(
            envelope(
                "scene",
                rng.choice(("state", "conversationResult", "speechMarker")),
                {"personaId": "1"},
            )
        )

    def binary(self) -> bytes:
        """A binary frame: random bytes, a frame as bytes, or bytes that are not UTF-8."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return rng.randbytes(rng.randint(0, 300))
        if roll < 0.6:
            return b"\xff\xfe" + encode(self.valid_frame("keepAlive")).encode()
        if roll < 0.8:
            return encode(self.valid_frame(rng.choice(CLIENT_EVENTS))).encode()
        return (
            # Not UTF-8: an invalid sequence and an encoded surrogate.
            b'{"category":"webrtc","kind":"event","name":"userText","body":{"userText":"'
            b'\xc3\x28\xed\xa0\x80"}}'
        )

    def valid_noise(self) -> str:
        """Frames a browser really sends during a session (they must do no harm)."""
        rng = self.rng
        name = rng.choice(("keepAlive", "ui", "videoBounds", "userCamera", "userText"))
        return encode(self.valid_frame(name))

    def near_limit(self) -> str:
        """A frame just under ``max_frame_bytes`` (its text over ``max_text_chars``)."""
        filler = "y" * (self.max_frame_bytes - 200 - self.rng.randint(0, 100))
        return encode(envelope("webrtc", "userText", {"userText": filler}))

    def oversized(self) -> Payload:
        """A frame over ``max_frame_bytes``: just over, over in bytes only, or far over."""
        rng = self.rng
        limit = self.max_frame_bytes
        roll = rng.random()
        if roll < 0.35:
            return encode(envelope("webrtc", "userText", {"userText": "z" * (limit + 10)}))
        if roll < 0.6:
            # Fewer characters than the limit, more bytes (two per character in UTF-8).
            text = "é" * (limit // 2 + 100)
            return json.dumps(
                envelope("webrtc", "userText", {"userText": text}), ensure_ascii=False
            )
        if roll < 0.8:
            return b"\x00" * (limit + 1)
        # Past aiohttp's own bound (four times the limit): the socket is dropped.
        return encode(envelope("webrtc", "userText", {"userText": "w" * (4 * limit + 10)}))


# --- SDP and candidate mutations -------------------------------------------------------------

_ODD_NUMBERS = (
    "99999999999",
    "-1",
    "65536",
    "70000",
    "0",
    "abc",
    "1.5",
    "１２",
    "4294967296",
    "9" * 50,
    "",
    "0x10",
    "+5",
)

_ODD_SDP_LINES = (
    "a=garbage",
    "x",
    "",
    "a=",
    "=",
    "a=candidate:garbage",
    "a=candidate:1 1 udp 2122260223 127.0.0.1 70000 typ host",
    "a=rtpmap:300 opus/48000/2",
    "a=rtpmap:96 opus/0/2",
    "a=rtpmap:111 OPUS/48000/99",
    "a=fmtp:96 minptime=-1;useinbandfec=abc",
    "a=extmap:0 urn:x",
    "a=extmap:256 urn:x",
    "a=ssrc:abc cname:x",
    "a=ssrc-group:FID 1",
    "a=group:BUNDLE 0 1 9",
    "a=msid-semantic:WMS",
    "c=IN IP4 999.1.1.1",
    "c=IN IP6 ::1",
    "c=IN IP4 example.com",
    "a=setup:sideways",
    "a=fingerprint:md5 00",
    "a=fingerprint:sha-1 AA:BB",
    "a=ice-ufrag:" + "a" * 300,
    "a=ice-pwd:short",
    "a=rtcp:99999",
    "a=sctp-port:abc",
    "a=fmtp:x apt=1",
    "a=rtcp-fb:* nack",
    "a=rtcp-fb:127 ccm fir",
    "b=AS:-1",
    "a=max-message-size:-5",
    "a=sendonly",
    "a=inactive",
    "a=recvonly",
    "a=mid:0",
    "a=msid:- -",
    "a=rtcp-mux",
    "a=ice-options:trickle renomination",
    "a=simulcast:send 1;2",
    "a=rid:1 send",
)

_ODD_MEDIA_LINES = (
    "m=",
    "m=audio",
    "m=text 9 RTP/AVP 0",
    "m=video 9 UDP/TLS/RTP/SAVPF",
    "m=audio -1 UDP/TLS/RTP/SAVPF 0",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=video 9/2 RTP/AVP 96",
    "m=audio 9 UDP/TLS/RTP/SAVPF 200",
    "m=video 9 UDP/TLS/RTP/SAVPF abc",
    "m=video 99999 UDP/TLS/RTP/SAVPF 96",
    "m=audio 9 TCP/MRCPv2 1",
)


def _sections(lines: list[str]) -> list[tuple[int, int]]:
    """The (start, end) line ranges of the media sections."""
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    return list(zip(starts, [*starts[1:], len(lines)], strict=True))


def mutate_sdp(rng: random.Random, sdp: str) -> str:
    """``sdp`` mutated one to three times: lines deleted, duplicated, swapped or broken."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.replace("\r\n", "\n").strip("\n").split("\n")
    for _ in range(rng.randint(1, 3)):
        lines = rng.choice(_SDP_MUTATIONS)(rng, lines)
        if not lines:
            lines = [""]
    text = newline.join(lines) + newline
    roll = rng.random()
    if roll < 0.05:
        text = text.replace(newline, rng.choice(("\n", "\r", "\r\r\n", " \r\n")))
    elif roll < 0.08:
        text = "\ufeff" + text
    elif roll < 0.1:
        text = text[: rng.randrange(len(text))]
    return text


def _delete_line(rng: random.Random, lines: list[str]) -> list[str]:
    del lines[rng.randrange(len(lines))]
    return lines


def _duplicate_line(rng: random.Random, lines: list[str]) -> list[str]:
    index = rng.randrange(len(lines))
    lines.insert(index, lines[index])
    return lines


def _swap_lines(rng: random.Random, lines: list[str]) -> list[str]:
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[a], lines[b] = lines[b], lines[a]
    return lines


def _change_numbers(rng: random.Random, lines: list[str]) -> list[str]:
    numbered = [i for i, line in enumerate(lines) if re.search(r"\d", line)]
    if numbered:
        index = rng.choice(numbered)
        count = 0 if rng.random() < 0.3 else 1
        lines[index] = re.sub(r"\d+", lambda _: rng.choice(_ODD_NUMBERS), lines[index], count=count)
    return lines


def _duplicate_mid(rng: random.Random, lines: list[str]) -> list[str]:
    mids = [i for i, line in enumerate(lines) if line.startswith("a=mid:")]
    if len(mids) >= 2:
        lines[mids[-1]] = lines[mids[0]]
    return lines


def _remove_key(rng: random.Random, lines: list[str]) -> list[str]:
    key = rng.choice(
        (
            "a=ice-ufrag:",
            "a=ice-pwd:",
            "a=fingerprint:",
            "a=setup:",
            "a=mid:",
            "a=rtpmap:",
            "a=group:",
            "a=rtcp-mux",
            "c=",
            "a=ssrc",
            "a=msid",
            "a=extmap",
        )
    )
    if rng.random() < 0.5:
        return [line for line in lines if not line.startswith(key)]
    matching = [i for i, line in enumerate(lines) if line.startswith(key)]
    if matching:
        del lines[rng.choice(matching)]
    return lines


def _media_port(rng: random.Random, lines: list[str]) -> list[str]:
    media = [i for i, line in enumerate(lines) if line.startswith("m=")]
    index = rng.choice(media) if media else 0
    port = rng.choice(("65536", "99999", "-9", "4294967305", "9/2", "x", "1e3"))
    lines[index] = re.sub(r"^(m=\S+) \S+", rf"\g<1> {port}", lines[index])
    return lines


def _insert_line(rng: random.Random, lines: list[str]) -> list[str]:
    pool = _ODD_MEDIA_LINES if rng.random() < 0.3 else _ODD_SDP_LINES
    lines.insert(rng.randrange(len(lines) + 1), rng.choice(pool))
    return lines


def _replace_line(rng: random.Random, lines: list[str]) -> list[str]:
    index = rng.randrange(len(lines))
    key = lines[index].split(":", 1)[0]
    value = rng.choice(_ODD_TEXTS_FOR_SDP)
    lines[index] = f"{key}:{value}" if key.startswith("a=") else f"{lines[index][:2]}{value}"
    return lines


_ODD_TEXTS_FOR_SDP = ("", " ", "x", "\x00", "☃", "a" * 2000, "-1", "1 2 3 4 5 6 7 8 9", "::")


def _change_kind(rng: random.Random, lines: list[str]) -> list[str]:
    media = [i for i, line in enumerate(lines) if line.startswith("m=")]
    if media:
        index = rng.choice(media)
        kind = rng.choice(("audio", "video", "application", "text", "AUDIO"))
        lines[index] = re.sub(r"^m=\S+", f"m={kind}", lines[index])
    return lines


def _direction(rng: random.Random, lines: list[str]) -> list[str]:
    direction = rng.choice(("a=inactive", "a=sendonly", "a=recvonly", "a=sendrecv"))
    return [direction if line in ("a=sendrecv", "a=sendonly") else line for line in lines]


def _reorder_sections(rng: random.Random, lines: list[str]) -> list[str]:
    sections = _sections(lines)
    if not sections:
        return lines
    head = lines[: sections[0][0]]
    bodies = [lines[start:end] for start, end in sections]
    roll = rng.random()
    if roll < 0.35:
        rng.shuffle(bodies)
    elif roll < 0.6:
        del bodies[rng.randrange(len(bodies))]
    elif roll < 0.8:
        bodies.append(list(rng.choice(bodies)))  # the same mid twice
    else:
        # One section repeated with fresh mids, past the number a browser ever sends.
        template = bodies[0]
        for n in range(rng.randint(1, 9)):
            bodies.append(
                [f"a=mid:extra{n}" if line.startswith("a=mid:") else line for line in template]
            )
    return head + [line for body in bodies for line in body]


def _rename_mids(rng: random.Random, lines: list[str]) -> list[str]:
    mid = rng.choice(("a" * 64, "a" * 65, "!#$", "0 1", "", "☃", "-", "audio"))
    return [f"a=mid:{mid}" if line.startswith("a=mid:") else line for line in lines]


def _many_lines(rng: random.Random, lines: list[str]) -> list[str]:
    extra = ["a=x"] * rng.choice((100, 1990, 2100))
    return lines[:-1] + extra + lines[-1:]


def _mutate_candidate_lines(rng: random.Random, lines: list[str]) -> list[str]:
    candidates = [i for i, line in enumerate(lines) if line.startswith("a=candidate:")]
    if not candidates:
        lines.insert(
            len(lines), "a=" + mutate_candidate(rng, "candidate:1 1 udp 1 127.0.0.1 9 typ host")
        )
        return lines
    index = rng.choice(candidates)
    lines[index] = "a=" + mutate_candidate(rng, lines[index].removeprefix("a="))
    return lines


def _codec(rng: random.Random, lines: list[str]) -> list[str]:
    rtpmaps = [i for i, line in enumerate(lines) if line.startswith("a=rtpmap:")]
    if rtpmaps:
        index = rng.choice(rtpmaps)
        codec = rng.choice(("OPUS/48000/2", "VP9/90000", "AV1/90000", "opus/1", "VP8/0", "x/90000"))
        lines[index] = re.sub(r" \S+$", f" {codec}", lines[index])
    return lines


_SDP_MUTATIONS: tuple[Callable[[random.Random, list[str]], list[str]], ...] = (
    _delete_line,
    _duplicate_line,
    _swap_lines,
    _change_numbers,
    _change_numbers,
    _duplicate_mid,
    _remove_key,
    _remove_key,
    _media_port,
    _insert_line,
    _insert_line,
    _replace_line,
    _change_kind,
    _direction,
    _reorder_sections,
    _rename_mids,
    _many_lines,
    _mutate_candidate_lines,
    _codec,
)

_ODD_ADDRESSES = (
    "localhost",
    "example.com",
    "evil.local",
    "4f0c1b2a-9c1d-4e2f-8a3b.local",
    "a" * 70 + ".local",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "[::1]",
    "::ffff:127.0.0.1",
    "0.0.0.0",
    "::",
    "255.255.255.255",
    "224.0.0.1",
    "ff02::1",
    "127.0.0.1.",
    "127.1",
    "0x7f000001",
    "1.2.3.4.5",
    "127.0.0.256",
    "",
    "192.0.2.1",
    "2001:db8::1",
)


def mutate_candidate(rng: random.Random, candidate: str) -> str:
    """A candidate with one field broken: too few fields, a bad port, address, priority ..."""
    bits = candidate.removeprefix("candidate:").split()
    roll = rng.randrange(12)
    if roll == 0:
        return rng.choice(
            (
                "candidate:1 2 3",
                "",
                "candidate:",
                "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
                "garbage",
                "candidate:1 1 udp 1 127.0.0.1 9 host",
                "candidate:1 1 udp 1 127.0.0.1 9 typ",
                " ".join(["candidate:1"] + ["x"] * 300),
            )
        )
    if len(bits) < 8:
        return candidate
    if roll == 1:
        bits[5] = rng.choice(("70000", "65536", "-1", "0", "65535", "abc", "9" * 30, "１"))
    elif roll == 2:
        bits[1] = rng.choice(("0", "3", "257", "999999999999", "-1", "x"))
    elif roll == 3:
        bits[3] = rng.choice(("4294967296", str(2**40), "-5", "1e9", "0", "4294967295"))
    elif roll in (4, 5):
        bits[4] = rng.choice(_ODD_ADDRESSES)
    elif roll == 6:
        bits[2] = rng.choice(("UDP", "sctp", "tls", "", "udp\x00"))
    elif roll == 7:
        bits[7] = rng.choice(("relay", "prflx", "host2", "", "srflx"))
    elif roll == 8:
        extra = rng.choice(
            (
                ["raddr"],
                ["raddr", "garbage"],
                ["rport", "70000"],
                ["tcptype", "sideways"],
                ["generation", "-1"],
                ["ufrag", "x" * 200],
                ["network-id", "1", "network-cost"],
                ["raddr", "::1", "rport", "0"],
            )
        )
        bits += extra
    elif roll == 9:
        bits[0] = rng.choice(("", "!!!", "x" * 100, "☃", "1/2"))
    elif roll == 10:
        bits += ["x" * 100] * 6  # longer than any candidate a server takes
    else:
        del bits[rng.randrange(len(bits))]
    return "candidate:" + " ".join(bits)


# --- the driver --------------------------------------------------------------------------------

#: How each fuzz socket behaves before it sends its fuzz frames, and how often.
PLANS: dict[str, float] = {
    "blind": 15,  # send at once: opened, perhaps queued for a Digital Person
    "established": 25,  # wait for established, then fuzz
    "bad-offer": 20,  # wait for established, send a mutated offer, then fuzz
    "starting": 10,  # send a real offer and fuzz at once, while the server starts it
    "accepted": 20,  # send a real offer, wait for the answer (ICE never completes), fuzz
    "connected": 10,  # a real peer connection through connected, then fuzz
}


@dataclass
class FuzzStats:
    """What one fuzz run sent, what came back, and how the sockets ended."""

    frames_sent: int = 0
    by_shape: Counter[str] = field(default_factory=Counter)
    sockets_opened: int = 0
    by_plan: Counter[str] = field(default_factory=Counter)
    #: Token requests and socket upgrades the server refused, by what and HTTP status.
    refused: Counter[str] = field(default_factory=Counter)
    #: Frames the server sent, by ``category/name``.
    received: Counter[str] = field(default_factory=Counter)
    #: The reasons of the server's ``close`` frames.
    close_reasons: Counter[str] = field(default_factory=Counter)
    #: The phases the fuzz sockets were seen to reach (established, accepted, connected).
    reached: Counter[str] = field(default_factory=Counter)
    #: Sockets the server closed without a ``close`` frame first (a server-rule break), not
    #: counting those it dropped for a frame past aiohttp's bound (``too_big_drops``).
    bare_closes: int = 0
    #: For each bare close: the socket's close code and the shape of the last frame sent.
    bare_close_examples: list[str] = field(default_factory=list)
    too_big_drops: int = 0
    #: Frames from the server that were not JSON objects (a server bug).
    unreadable: int = 0
    #: Sockets that did not finish within their time bound, and client-side errors.
    timeouts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0


class Listener:
    """Reads everything the server sends on one fuzz socket until it closes."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stats: FuzzStats) -> None:
        self.ws = ws
        self.stats = stats
        self.seen: set[str] = set()
        #: Every frame the server sent, decoded.
        self.frames: list[JSON] = []
        self.answer_sdp: str | None = None
        self.close_reason: str | None = None
        self.we_closed = False
        self.last_sent = ""
        #: Whether a frame past aiohttp's own bound (four times ``max_frame_bytes``) was sent.
        self.sent_past_bound = False
        self.done = asyncio.Event()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._take(message.data)
        finally:
            self.done.set()
            self._changed.set()
        if not self.we_closed and self.close_reason is None:
            if self.sent_past_bound:
                # Past aiohttp's bound the server cannot send a close frame; its close code
                # reaches the client as 1009, or as 1006 once the client's ack cannot be sent.
                self.stats.too_big_drops += 1
            else:
                self.stats.bare_closes += 1
                error = self.ws.exception()
                example = f"code {self.ws.close_code} ({error!r}) after {self.last_sent}"
                self.stats.bare_close_examples.append(example)

    def _take(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            self.stats.unreadable += 1
            return
        self.frames.append(frame)
        name = str(frame.get("name"))
        self.stats.received[f"{frame.get('category')}/{name}"] += 1
        raw_body = frame.get("body")
        body: dict[str, Any] = raw_body if isinstance(raw_body, dict) else {}
        # webrtc frames by name ("established"), the others by category too ("dpkit/queue").
        self.seen.add(f"{frame.get('category')}/{name}")
        if frame.get("category") == "webrtc":
            self.seen.add(name)
            if name == "answer":
                self.answer_sdp = str(body.get("sdp", ""))
            if name == "close":
                self.close_reason = str(body.get("reason"))
                self.stats.close_reasons[self.close_reason] += 1
            if name in ("established", "accepted", "connected"):
                self.stats.reached[name] += 1
        self._changed.set()

    async def wait_for(self, name: str, within: float) -> bool:
        """Whether the server sent frame ``name`` within ``within`` seconds (and not closed)."""
        try:
            async with asyncio.timeout(within):
                while name not in self.seen and not self.done.is_set():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        return name in self.seen and not self.done.is_set()


class FuzzDriver:
    """Sends hostile frames over ``sockets`` concurrent session sockets, a fresh token each."""

    def __init__(
        self,
        token_url: str,
        api_key: str,
        generator: FrameGenerator,
        *,
        sockets: int = 4,
        frames: int = 3000,
        max_seconds: float = 60.0,
        unit: float = 1.0,
        plans: dict[str, float] | None = None,
        frames_per_socket: tuple[int, int] = (1, 30),
    ) -> None:
        self.token_url = token_url
        self.api_key = api_key
        self.generator = generator
        self.sockets = sockets
        self.frames = frames
        self.max_seconds = max_seconds
        self.unit = unit
        self.plans = plans or PLANS
        self.frames_per_socket = frames_per_socket
        self.stats = FuzzStats()
        self._reserved = 0
        self._deadline = 0.0
        # The plans and frame counts come from their own generator, so the frames stay the
        # same for a seed whichever way the sockets interleave.
        self._rng = random.Random(generator.seed + 1)

    async def run(self) -> FuzzStats:
        """Fuzz until ``frames`` are sent or ``max_seconds`` pass; return what happened."""
        started = time.monotonic()
        self._deadline = started + self.max_seconds
        async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as workers:
            for _ in range(self.sockets):
                workers.create_task(self._worker(http))
        self.stats.elapsed_s = time.monotonic() - started
        return self.stats

    def _more(self) -> bool:
        return self._reserved < self.frames and time.monotonic() < self._deadline

    async def _worker(self, http: aiohttp.ClientSession) -> None:
        while self._more():
            await self._one_socket(http)

    async def _token(self, http: aiohttp.ClientSession) -> dict[str, str] | None:
        async with http.get(self.token_url, headers={"key": self.api_key}) as reply:
            if reply.status != 200:
                self.stats.refused[f"token {reply.status}"] += 1
                await asyncio.sleep(0.05)
                return None
            data: dict[str, str] = await reply.json()
            return data

    async def _one_socket(self, http: aiohttp.ClientSession) -> None:
        plan = self._rng.choices(list(self.plans), list(self.plans.values()))[0]
        try:
            async with asyncio.timeout(20 * self.unit):
                token = await self._token(http)
                if token is None:
                    return
                async with http.ws_connect(
                    token["url"],
                    params={"access_token": token["jwt"]},
                    max_msg_size=0,
                    autoclose=True,
                ) as ws:
                    self.stats.sockets_opened += 1
                    self.stats.by_plan[plan] += 1
                    await self._serve(plan, ws)
        except aiohttp.WSServerHandshakeError as exc:
            self.stats.refused[f"socket {exc.status}"] += 1
            await asyncio.sleep(0.05)
        except TimeoutError:
            self.stats.timeouts += 1
        except (aiohttp.ClientError, ConnectionError) as exc:
            self.stats.errors[type(exc).__name__] += 1

    async def _serve(self, plan: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        socket = Listener(ws, self.stats)
        reading = asyncio.create_task(socket.run())
        pc: RTCPeerConnection | None = None
        try:
            after_offer = False
            if plan != "blind" and await socket.wait_for("established", 3 * self.unit):
                if plan == "bad-offer":
                    mutated = self.generator.sdp_mutation_frame()
                    await self._send(socket, FuzzFrame("sdp-mutation", mutated))
                elif plan in ("starting", "accepted"):
                    offer = encode(self.generator.valid_frame("offer"))
                    after_offer = await self._send(socket, FuzzFrame("real-offer", offer))
                    if plan == "accepted":
                        await socket.wait_for("answer", 5 * self.unit)
                elif plan == "connected":
                    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                    after_offer = await self._connect(socket, pc)
            low, high = self.frames_per_socket
            for _ in range(self._rng.randint(low, high)):
                if socket.done.is_set():
                    break
                if not await self._send(socket, self.generator.frame(after_offer=after_offer)):
                    break
                await asyncio.sleep(0)
            await self._leave(socket)
        finally:
            socket.we_closed = True
            await ws.close()
            async with asyncio.timeout(5 * self.unit):
                await reading
            if pc is not None:
                await pc.close()

    async def _connect(self, socket: Listener, pc: RTCPeerConnection) -> bool:
        """Offer from a real peer connection and apply the answer; wait for ``connected``."""
        pc.addTransceiver("audio", "sendrecv")
        pc.addTransceiver("video", "sendrecv")
        with ice_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        offer = envelope(
            "webrtc",
            "offer",
            {"sdp": pc.localDescription.sdp, "type": "offer", "features": {}},
        )
        if not await self._send(socket, FuzzFrame("real-offer", encode(offer))):
            return False
        if await socket.wait_for("answer", 5 * self.unit) and socket.answer_sdp:
            await pc.setRemoteDescription(RTCSessionDescription(socket.answer_sdp, "answer"))
            await socket.wait_for("connected", 5 * self.unit)
        return True

    async def _leave(self, socket: Listener) -> None:
        """End the socket as a client may: close {normal}, a bare close, or an odd close code."""
        if socket.done.is_set():
            return
        roll = self._rng.random()
        if roll < 0.4:
            close = encode(envelope("webrtc", "close", {"reason": "normal"}))
            if await self._send(socket, FuzzFrame("close-normal", close)):
                async with asyncio.timeout(2 * self.unit):
                    await socket.done.wait()
        elif roll < 0.6:
            socket.we_closed = True
            await socket.ws.close(code=self._rng.choice((1001, 1011, 3000, 4999)))

    async def _send(self, socket: Listener, frame: FuzzFrame) -> bool:
        """Send one frame within the budget; False once out of budget or the socket is gone."""
        if not self._more() or socket.ws.closed:
            return False
        self._reserved += 1
        # A client's close frame ends the session with no close frame back (the client asked).
        socket.we_closed = socket.we_closed or is_client_close(frame.payload)
        bound = 4 * self.generator.max_frame_bytes
        socket.sent_past_bound = socket.sent_past_bound or len(frame.payload) > bound
        try:
            if isinstance(frame.payload, bytes):
                await socket.ws.send_bytes(frame.payload)
            else:
                await socket.ws.send_str(frame.payload)
        except (ConnectionError, aiohttp.ClientError):
            self._reserved -= 1
            return False
        socket.last_sent = f"{frame.shape} {frame.payload[:100]!r}"
        self.stats.frames_sent += 1
        self.stats.by_shape[frame.shape] += 1
        return True


def is_client_close(payload: Payload) -> bool:
    """Whether the server reads ``payload`` as the client's ``close`` (by the server's parser)."""
    text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
    if "close" not in text:
        return False
    try:
        return isinstance(parse_frame(payload), Close)
    except ProtocolError:
        return False
