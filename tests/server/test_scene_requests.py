"""Every scene request of the Web SDK 15.8.1: carried out, or refused with a specific error."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from dpkit import Scene
from dpkit.protocol.messages import Frame, SceneEvent, SceneRequest, SceneResponse, parse_frame
from dpkit.server import DpkitServer, PersonaSettings
from dpkit.server.assets import BUILTIN_BUNDLE, write_manifest
from dpkit.server.scene_requests import PLATFORM_ONLY, WEB_SDK_REQUESTS
from dpkit.server.speech import parse_markers
from dpkit.server.talk import PersonaTalk
from dpkit.server.variables import ConversationVariables, VariablesError, render
from tests.raw_client import RawClient, raw_client
from tests.support import ServerFactory, serving, until

WEB_SDK_LIB = Path(__file__).resolve().parents[2] / "node_modules/@soulmachines/smwebsdk/lib"


def quiet_persona(**overrides: Any) -> PersonaSettings:
    values: dict[str, Any] = {"video_width": 160, "video_height": 120, "greet_at_start": False}
    values.update(overrides)
    return PersonaSettings(**values)


class Session:
    """A raw client's session: requests answered by transaction, every event kept in order."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.events: list[Frame] = []
        self._ids = itertools.count(1)

    async def ask(self, name: str, body: dict[str, Any] | None = None) -> SceneResponse:
        transaction = f"test_{next(self._ids)}"
        await self.client.send(SceneRequest(name, transaction, body or {}))
        while True:
            frame = await self.client.receive()
            assert frame is not None, f"socket closed before {name} was answered"
            if isinstance(frame, SceneResponse) and frame.transaction == transaction:
                assert frame.name == name
                return frame
            self.events.append(frame)

    async def next_event(self) -> SceneEvent:
        """The next scene event, of any name (kept events first)."""
        while True:
            frame = self.events.pop(0) if self.events else await self.client.receive()
            assert frame is not None, "socket closed before the next event"
            if isinstance(frame, SceneEvent):
                return frame

    async def event(self, name: str, /, **match: Any) -> SceneEvent:
        """The next scene event called ``name`` whose body has ``match`` (kept events first)."""
        while True:
            while self.events:
                frame = self.events.pop(0)
                if (
                    isinstance(frame, SceneEvent)
                    and frame.name == name
                    and all(frame.body.get(k) == v for k, v in match.items())
                ):
                    return frame
            received = await self.client.receive()
            assert received is not None, f"socket closed before a {name} event"
            self.events.append(received)


@asynccontextmanager
async def session(server: DpkitServer) -> AsyncIterator[Session]:
    async with raw_client(server) as client:
        await client.connect()
        yield Session(client)


def talk_of(server: DpkitServer) -> PersonaTalk:
    (live,) = server.state.sessions.values()
    talk = live._talk
    assert talk is not None
    return talk


def templated_bundle(folder: Path) -> Path:
    """Ava's bundle with a templated welcome (and a speech marker) and a templated intent."""
    shutil.copytree(BUILTIN_BUNDLE, folder)
    corpus = json.loads((folder / "corpus.json").read_text())
    corpus["WELCOME_MESSAGE"] = "Hello {{name|there}}! @showcards(menu) How can I help?"
    corpus["intents"].append(
        {
            "name": "WHERE",
            "patterns": ["where do i live"],
            "answer": "You live in {{profile.city|a place you have not told me}}.",
        }
    )
    (folder / "corpus.json").write_text(json.dumps(corpus))
    write_manifest(folder, "Ava", "1")
    return folder


# --- the table -------------------------------------------------------------------------------


def test_the_table_lists_every_request_the_web_sdk_sends() -> None:
    """WEB_SDK_REQUESTS is exactly the set of names the Web SDK's code passes to sendRequest."""
    if not WEB_SDK_LIB.is_dir():
        pytest.fail(f"{WEB_SDK_LIB} is missing: scripts/setup installs the Web SDK (npm ci)")
    names: set[str] = set()
    for path in WEB_SDK_LIB.glob("*.js"):
        if path.name.endswith(".spec.js"):
            continue
        text = path.read_text("utf-8")
        names.update(re.findall(r"sendRequest\('([A-Za-z]+)'", text))
        names.update(re.findall(r"sendOnewaySceneRequest\('([A-Za-z]+)'", text))
    assert names == set(WEB_SDK_REQUESTS)


# --- the pure parts -------------------------------------------------------------------------


def test_templates_fill_in_variables_defaults_and_paths() -> None:
    """{{name}}, {{a.b}} and {{name|default}}; a missing one without default leaves no gap."""
    values = {"name": "Sam", "profile": {"city": "Oslo"}, "age": 30.0, "vip": True}
    assert render("Hi {{name}}, from {{ profile.city }}.", values) == "Hi Sam, from Oslo."
    assert render("Hi {{nobody|friend}}!", values) == "Hi friend!"
    assert render("Hi {{nobody}}!", values) == "Hi!"
    assert render("{{age}} {{vip}}", values) == "30 yes"
    assert render("No  placeholders ... here", values) == "No  placeholders ... here"
    assert render("{{name}}", {"name": "@hidecards()"}, literal_markers=True) == "\\@hidecards()"


def test_markers_are_taken_out_of_the_speech_at_their_place() -> None:
    """@name(args) is not spoken; its offset is its share of the spoken text; \\@ is literal."""
    spoken, markers = parse_markers("@showcards(a, b) Hello @marker(wave) there @hidecards()")
    assert spoken == "Hello there"
    assert [(m.name, m.arguments) for m in markers] == [
        ("showcards", ("a", "b")),
        ("marker", ("wave",)),
        ("hidecards", ()),
    ]
    assert [round(m.offset, 2) for m in markers] == [0.0, 0.45, 1.0]
    assert parse_markers("mail me \\@home(x)") == ("mail me @home(x)", ())


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ("Sam", "must be an object, got a string"),
        ({f"k{i}": i for i in range(65)}, "(max_variables)"),
        ({"k" * 65: 1}, "(max_key_chars)"),
        ({"1abc": 1}, "must start with a letter"),
        ({"deep": [[[[[1]]]]]}, "(max_depth)"),
        ({"big": "x" * 5000}, "(max_value_bytes)"),
        ({"nan": float("nan")}, "not plain JSON"),
    ],
)
def test_bad_variables_are_refused_by_name(variables: object, fragment: str) -> None:
    """Each bound is checked and named; a refused request stores nothing."""
    store = ConversationVariables()
    store.set({"kept": 1})
    with pytest.raises(VariablesError) as caught:
        store.set(variables)
    assert fragment in str(caught.value)
    assert store.snapshot() == {"kept": 1}


# --- on a real session ------------------------------------------------------------------------


async def test_variables_round_trip_and_null_removes(start_server: ServerFactory) -> None:
    """Set merges into the session's variables; get answers {variables}; null removes one."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        assert (await s.ask("conversationGetVariables", {"personaId": "1"})).body == {
            "variables": {}
        }
        reply = await s.ask(
            "conversationSetVariables",
            {"personaId": 1, "variables": {"name": "Sam", "profile": {"city": "Oslo"}}},
        )
        assert (reply.status, reply.body) == (0, {})
        await s.ask("conversationSetVariables", {"personaId": 1, "variables": {"name": None}})
        got = await s.ask("conversationGetVariables", {"personaId": 1})
        assert (got.status, got.body) == (0, {"variables": {"profile": {"city": "Oslo"}}})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"personaId": 1, "variables": [1, 2]}, "badVariables: conversationSetVariables: "),
        ({"personaId": 1}, "badVariables: conversationSetVariables: 'variables' must be"),
        ({"personaId": 1, "variables": {"x" * 100: 1}}, "(max_key_chars)"),
        ({"personaId": 7, "variables": {"a": 1}}, "unknownPersona: conversationSetVariables"),
        # Found by the fuzz test: an id that cannot be hashed ended the session (TypeError).
        ({"personaId": [1], "variables": {"a": 1}}, "unknownPersona: conversationSetVariables"),
        ({"personaId": {"1": 1}, "variables": {"a": 1}}, "unknownPersona: "),
        ({"personaId": True, "variables": {"a": 1}}, "unknownPersona: "),
    ],
)
async def test_bad_variables_get_status_1_and_a_named_error(
    start_server: ServerFactory, body: dict[str, Any], error: str
) -> None:
    """Refused variables: status 1, an error naming the problem, the session goes on."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        reply = await s.ask("conversationSetVariables", body)
        assert reply.status == 1
        assert error in reply.body["error"]
        assert (await s.ask("conversationGetVariables")).body == {"variables": {}}


async def test_variables_set_before_init_fill_the_welcome_and_answers(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Variables set before the init greeting are in it; a request's own win for that answer."""
    bundle = templated_bundle(tmp_path / "ava")
    server = await start_server(persona=quiet_persona(assets=str(bundle)))
    async with session(server) as s:
        variables = {"name": "Sam", "profile": {"city": "Oslo"}}
        await s.ask("conversationSetVariables", {"personaId": 1, "variables": variables})
        init = {"personaId": 1, "text": "", "optionalArgs": {"kind": "init"}}
        assert (await s.ask("conversationSend", init)).status == 0
        welcome = await s.event("conversationResult")
        assert welcome.body["output"]["text"] == "Hello Sam! @showcards(menu) How can I help?"
        marker = await s.event("speechMarker")
        assert marker.body == {"personaId": "1", "name": "showcards", "arguments": ["menu"]}
        await s.event("state")
        assert talk_of(server).speaker.spoken[0] == "Hello Sam! How can I help?"

        ask = {"personaId": 1, "text": "where do I live?", "variables": {"profile": {}}}
        await s.ask("conversationSend", ask)
        answer = await s.event("conversationResult")
        assert answer.body["output"]["text"] == "You live in a place you have not told me."
        await s.ask("conversationSend", {"personaId": 1, "text": "where do I live?"})
        answer = await s.event("conversationResult")
        assert answer.body["output"]["text"] == "You live in Oslo."


async def test_speech_markers_arrive_in_step_with_the_speech(start_server: ServerFactory) -> None:
    """startSpeaking: speaking, then each marker in text order, the last before idle."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        text = "@showcards(a, b) Hello there, @marker(wave) nice to see you. @hidecards()"
        assert (await s.ask("startSpeaking", {"personaId": 1, "text": text})).status == 0
        seen: list[object] = []
        while "idle" not in seen:
            frame = await s.next_event()
            if frame.name == "state":
                persona = frame.body["persona"]["1"]
                seen.append(persona["speechState"])
                if persona["speechState"] == "speaking":
                    assert persona["currentSpeech"] == "Hello there, nice to see you."
            elif frame.name == "speechMarker":
                assert frame.body["personaId"] == "1"
                seen.append((frame.body["name"], frame.body["arguments"]))
        assert seen == [
            "speaking",
            ("showcards", ["a", "b"]),
            ("marker", ["wave"]),
            ("hidecards", []),
            "idle",
        ]


async def test_stop_speaking_drops_the_markers_not_reached(start_server: ServerFactory) -> None:
    """A marker after the point where stopSpeaking cut the speech never fires."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        long = "This is a long sentence that takes a while to say. " * 12
        text = f"@marker(start) {long} @marker(end)"
        await s.ask("startSpeaking", {"personaId": 1, "text": text})
        await s.event("speechMarker", name="marker", arguments=["start"])
        await s.ask("stopSpeaking", {"personaId": 1})
        await s.event("state")
        await s.ask("getState")
        names = [f.body for f in s.events if isinstance(f, SceneEvent) and f.name == "speechMarker"]
        assert names == []
        assert [m.arguments for m in talk_of(server).markers_sent] == [("start",)]


async def test_configure_applies_what_dpkit_has_and_names_the_rest(
    start_server: ServerFactory,
) -> None:
    """Audio levels and the statistics interval are applied; render and preset named ignored."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        body = {
            "audio": {"squelchLevel": 0.4, "ambientNoiseLevel": 0.1},
            "statistics": {"intervalSeconds": 5},
            "render": {"projection": "perspective"},
            "preset": "studio",
        }
        reply = await s.ask("configure", body)
        assert (reply.status, reply.body) == (
            0,
            {
                "applied": [
                    "audio.squelchLevel",
                    "audio.ambientNoiseLevel",
                    "statistics.intervalSeconds",
                ],
                "ignored": ["render", "preset"],
            },
        )
        configuration = talk_of(server).configuration
        assert (configuration.squelch_level, configuration.ambient_noise_level) == (0.4, 0.1)
        assert configuration.statistics_interval_s == 5.0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"audio": "loud"}, "configure: 'audio' must be an object"),
        ({"audio": {"squelchLevel": "high"}}, "'audio.squelchLevel' must be a finite number"),
        ({"audio": {"squelchLevel": 10**400}}, "'audio.squelchLevel' must be a finite number"),
        ({"statistics": {"intervalSeconds": 0}}, "must be over 0 and at most 3600"),
        ({"preset": 3}, "'preset' must be a string"),
    ],
)
async def test_configure_refuses_wrong_types(
    start_server: ServerFactory, body: dict[str, Any], error: str
) -> None:
    """A configure field of the wrong type: status 1 naming it, and nothing applied."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        reply = await s.ask("configure", body)
        assert reply.status == 1
        assert error in reply.body["error"]
        assert talk_of(server).configuration.applied == ()


async def test_camera_content_awareness_and_state(start_server: ServerFactory) -> None:
    """animateToNamedCamera and updateContentAwareness: 0 when well formed, 1 naming the field."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        camera = {"personaId": 1, "cameraName": "CloseUp", "time": 1.5, "orbitDegX": 0}
        assert ((r := await s.ask("animateToNamedCamera", camera)).status, r.body) == (0, {})
        assert talk_of(server).camera is not None
        bad = await s.ask("animateToNamedCamera", {"personaId": 1, "cameraName": ""})
        assert bad.status == 1
        assert "'cameraName' must be a non-empty string" in bad.body["error"]

        box = {"x1": 0, "y1": 0, "x2": 640, "y2": 480}
        geometry = {
            "viewWidth": 1280,
            "viewHeight": 800,
            "videoFrame": box,
            "content": [{"id": "card", "x1": 10, "y1": 10, "x2": 100, "y2": 50}],
        }
        assert (await s.ask("updateContentAwareness", geometry)).status == 0
        page = talk_of(server).page_geometry
        assert page is not None
        assert page.content[0]["id"] == "card"
        too_many = {**geometry, "content": [box] * 257}
        refused = await s.ask("updateContentAwareness", too_many)
        assert (refused.status, "over the limit of 256" in refused.body["error"]) == (1, True)

        state = await s.ask("getState")
        assert state.status == 0
        assert state.body["persona"]["1"]["speechState"] == "idle"
        assert state.body["session"]["sessionId"] == talk_of(server).session_id


async def test_every_other_request_is_refused_by_name(start_server: ServerFactory) -> None:
    """The platform's internal requests: platformOnly; anything else: unknownRequest."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        for name in sorted(PLATFORM_ONLY):
            reply = await s.ask(name, {"personaId": 1})
            assert reply.status == 1
            assert reply.body["error"].startswith(f"platformOnly: {name!r} is an internal")
        reply = await s.ask("makeCoffee" * 50, {})
        assert reply.status == 1
        assert reply.body["error"].startswith("unknownRequest: 'makeCoffee")
        assert len(reply.body["error"]) < 400


async def test_no_web_sdk_request_is_answered_not_supported(start_server: ServerFactory) -> None:
    """Each request of the table gets an answer, none of them 'not supported yet'."""
    server = await start_server(persona=quiet_persona())
    async with session(server) as s:
        for name in WEB_SDK_REQUESTS:
            body: dict[str, Any] = {"personaId": 1}
            if name == "conversationSetVariables":
                body["variables"] = {"a": 1}
            reply = await s.ask(name, body)
            assert "not supported" not in json.dumps(reply.body), name


# --- the orchestrator -------------------------------------------------------------------------


async def test_variables_reach_the_orchestration_server(start_server: ServerFactory) -> None:
    """conversationRequest.variables: the session's variables with the request's own on top."""
    requests: list[dict[str, Any]] = []

    async def control(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                frame = parse_frame(message.data)
                if isinstance(frame, SceneEvent) and frame.name == "conversationRequest":
                    requests.append(frame.body)
        return ws

    app = web.Application()
    app.router.add_get("/control", control)
    async with serving(app) as url:
        control_url = url.replace("http://", "ws://") + "/control"
        server = await start_server(persona=quiet_persona(control_url=control_url))
        scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
        try:
            await scene.connect()
            await scene.send_request(
                "conversationSetVariables",
                {"personaId": 1, "variables": {"name": "Sam", "mood": "calm"}},
            )
            await scene.send_request(
                "conversationSend",
                {"personaId": 1, "text": "hello", "variables": {"mood": "happy"}},
            )
            await until(lambda: len(requests) == 1)
        finally:
            await scene.close()
    assert requests[0]["input"] == {"text": "hello"}
    assert requests[0]["variables"] == {"name": "Sam", "mood": "happy"}
