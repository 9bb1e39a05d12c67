"""The Python SDK's conversation surface and its Web SDK semantics, on loopback.

Against a real server: state events, the conversation state through a typed turn, requests that
fail, disconnect events, is_connected, the connection result, and the microphone muted for the
persona's speech. Frames the server does not send yet (recognizeResults, speechMarker, userText)
are slipped in by a relay between the Scene and the real server, so they go through the client's
real frame-handling path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dpkit import (
    ConnectionStateData,
    ConnectionStateName,
    ConversationStateName,
    NoScene,
    NoSession,
    Persona,
    RecognizeResult,
    RetryOptions,
    Scene,
    SceneResponseError,
    SpeechMarker,
    SyntheticDevices,
)
from dpkit.server import DpkitServer
from dpkit.server.settings import PersonaSettings
from tests.relay import relay_frames
from tests.support import UNIT, ServerFactory, until

S = ConversationStateName
QUIET = PersonaSettings(video_width=320, video_height=240, greet_at_start=False, greet_wait_s=30.0)


def scene_for(server: DpkitServer, **options: Any) -> Scene:
    return Scene(server.api_key(), requested_media_devices={}, required_media_devices={}, **options)


def conversation_states(scene: Scene) -> list[ConversationStateName]:
    seen: list[ConversationStateName] = []
    scene.conversation.on_conversation_state_updated.add_listener(seen.append)
    return seen


class Relay:
    """Passes every frame between a Scene and a real server; :meth:`inject` adds server frames."""

    def __init__(self, server: DpkitServer) -> None:
        self._server = server
        self._downstream: web.WebSocketResponse | None = None
        self.connected = asyncio.Event()

    async def inject(self, frame: dict[str, Any] | str) -> None:
        assert self._downstream is not None
        await self._downstream.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        downstream = web.WebSocketResponse()
        await downstream.prepare(request)
        self._downstream = downstream

        async def after(name: str) -> None:
            if name == "connected":
                self.connected.set()

        await relay_frames(downstream, self._server.url, request.query, after)
        return downstream

    async def run(self) -> AsyncGenerator[str, None]:
        app = web.Application()
        app.router.add_get("/session", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"ws://127.0.0.1:{runner.addresses[0][1]}/session"
        finally:
            await runner.cleanup()


async def token_for(server: DpkitServer) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url + "/api/token", headers={"key": server.api_key()}) as reply,
    ):
        jwt: str = (await reply.json())["jwt"]
        return jwt


def scene_event(name: str, body: Any) -> dict[str, Any]:
    return {"category": "scene", "kind": "event", "name": name, "body": body}


def recognize(final: bool, transcript: str, status: int = 0) -> dict[str, Any]:
    alternatives = [{"confidence": 0.8, "transcript": transcript}]
    return scene_event(
        "recognizeResults",
        {
            "status": status,
            "errorMessage": "",
            "results": [{"final": final, "alternatives": alternatives}],
        },
    )


# --- against the real server --------------------------------------------------------------


async def test_disconnect_fires_no_disconnect_event_but_resets_the_conversation(
    start_server: ServerFactory,
) -> None:
    """The app hanging up fires no on_disconnected_event (the Web SDK fires none); the
    conversation is reset to idle, and the server still records reason normal."""
    server = await start_server(persona=QUIET)
    scene = scene_for(server)
    ended: list[tuple[str, str]] = []
    scene.on_disconnected_event.add_listener(lambda _s, sid, reason: ended.append((sid, reason)))
    states = conversation_states(scene)
    session_id = await scene.connect()
    await scene.disconnect()
    assert ended == []
    assert states == [S.IDLE]
    assert not scene.is_connected()
    await until(lambda: [i.ending for i in server.state.ended] == ["normal"])
    assert server.state.ended[0].session_id == session_id


async def test_a_server_ended_session_fires_the_event_and_resets_the_conversation(
    start_server: ServerFactory,
) -> None:
    """The server ending it still fires on_disconnected_event with the reason; idle follows."""
    server = await start_server(persona=QUIET)
    scene = scene_for(server)
    ended: asyncio.Queue[str] = asyncio.Queue()
    scene.on_disconnected_event.add_listener(lambda _s, _sid, reason: ended.put_nowait(reason))
    states = conversation_states(scene)
    session_id = await scene.connect()
    await server.state.sessions[session_id].end("conversationEnded")
    assert await asyncio.wait_for(ended.get(), 5 * UNIT) == "conversationEnded"
    assert states == [S.IDLE]
    await scene.close()
    assert ended.empty()  # closing afterwards adds nothing


async def test_is_connected_is_true_once_the_socket_is_open(server: DpkitServer) -> None:
    """is_connected() is already true in SearchingForDigitalPerson (the socket is open), as the
    Web SDK's, and false again once disconnected."""
    scene = scene_for(server)
    seen: list[tuple[ConnectionStateName, bool]] = []

    def on_state(data: ConnectionStateData) -> None:
        seen.append((data.name, scene.is_connected()))

    scene.connection_state.on_connection_state_updated.add_listener(on_state)
    assert not scene.is_connected()
    await scene.connect()
    await scene.disconnect()
    assert seen == [
        (ConnectionStateName.SEARCHING_FOR_DIGITAL_PERSON, True),
        (ConnectionStateName.DOWNLOADING_ASSETS, True),
        (ConnectionStateName.CONNECTING_TO_DIGITAL_PERSON, True),
        (ConnectionStateName.CONNECTED, True),
        (ConnectionStateName.DISCONNECTED, False),
    ]


async def test_requests_raise_on_failure_and_return_the_body_on_success(
    start_server: ServerFactory,
) -> None:
    """A non-zero status raises SceneResponseError with the request's name, the status and the
    body; status 0 returns the body; without a session, noSession; keep_alive does nothing."""
    server = await start_server(persona=QUIET)
    scene = scene_for(server)
    persona = Persona(scene)
    with pytest.raises(NoSession) as no_session:
        await persona.conversation_send("hello")
    assert no_session.value.name == "noSession"
    await scene.keep_alive()  # not connected: does nothing, raises nothing (the Web SDK)
    await scene.connect()
    try:
        with pytest.raises(SceneResponseError) as refused:
            await scene.send_request("noSuchRequest", {"x": 1})
        assert refused.value.request_name == "noSuchRequest"
        assert refused.value.status != 0
        assert isinstance(refused.value.response_body, dict)
        assert refused.value.message.startswith(
            f"Scene response failed, status: {refused.value.status}"
        )
        with pytest.raises(SceneResponseError) as too_long:
            await persona.conversation_send("word " * 800)  # over max_text_chars
        assert too_long.value.request_name == "conversationSend"
        body = await persona.conversation_send("hello")
        assert isinstance(body, dict)
        await scene.keep_alive()
    finally:
        await scene.disconnect()
    with pytest.raises(NoSession):
        await scene.send_request("conversationSend", {"personaId": 1, "text": "hi"})


async def test_connection_result_records_each_attempt(start_server: ServerFactory) -> None:
    """connection_result: 'success' with the session id, or 'failed' with every attempt's
    error (the Web SDK's retries) and each attempt's timing."""
    server = await start_server(capacity=1, queue_max_length=0)
    first = scene_for(server)
    assert first.connection_result is None
    session_id = await first.connect()
    result = first.connection_result
    assert result is not None
    assert (result.message, result.value, result.retries) == ("success", session_id, ())
    assert [attempt.error for attempt in result.attempts] == [None]
    assert result.attempts[0].duration_s >= 0
    second = scene_for(server)
    try:
        with pytest.raises(NoScene):
            await second.connect(retry_options=RetryOptions(max_retries=3, delay_ms=20))
        failed = second.connection_result
        assert failed is not None
        assert (failed.message, failed.value, failed.succeeded) == ("failed", None, False)
        assert [error.name for error in failed.retries] == ["noScene"] * 3
        assert [attempt.error for attempt in failed.attempts] == list(failed.retries)
        starts = [attempt.started_s for attempt in failed.attempts]
        assert starts == sorted(starts)
    finally:
        await first.disconnect()


async def test_state_events_and_a_typed_turn_drive_the_conversation_state(
    start_server: ServerFactory,
) -> None:
    """conversation_send: on_state_event gets each state body, the persona answers
    (conversationResult), and the conversation goes dpSpeaking then idle."""
    server = await start_server(persona=QUIET)
    scene = scene_for(server)
    persona = Persona(scene)
    bodies: list[dict[str, Any]] = []
    scene.on_state_event.add_listener(
        lambda who, body: bodies.append(body) if who is scene else None
    )
    results: list[dict[str, Any]] = []
    persona.on_conversation_result.add_listener(lambda _p, result: results.append(result))
    states = conversation_states(scene)
    await scene.connect()
    try:
        await persona.conversation_send("hello")
        await until(lambda: states[-2:] == [S.DP_SPEAKING, S.IDLE], within=20 * UNIT)
        assert states == [S.DP_SPEAKING, S.IDLE]
        assert scene.conversation.state is S.IDLE
        assert len(results) == 1
        speech_states = [
            body["persona"]["1"]["speechState"]
            for body in bodies
            if "speechState" in body.get("persona", {}).get("1", {})
        ]
        assert speech_states[0] == "speaking"
        assert speech_states[-1] == "idle"
    finally:
        await scene.disconnect()


async def test_the_microphone_muted_for_speech_is_not_active(start_server: ServerFactory) -> None:
    """microphoneMuteDelay: is_microphone_active() is false while the persona speaks, and
    on_microphone_active(active) says so at connect, at the muting and at the unmuting."""
    server = await start_server(persona=QUIET, microphone_mute_delay_ms=int(200 * UNIT))
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=SyntheticDevices(),
    )
    persona = Persona(scene)
    reported: list[bool] = []
    scene.on_microphone_active.add_listener(reported.append)
    cameras: list[bool] = []
    scene.on_camera_active.add_listener(cameras.append)
    while_speaking: list[bool] = []
    persona.on_speech.add_listener(
        lambda _p, state, _t: (
            while_speaking.append(scene.is_microphone_active()) if state == "speaking" else None
        )
    )
    await scene.connect()
    try:
        assert (reported, cameras) == ([True], [False])
        await persona.conversation_send("hello")
        await until(lambda: reported == [True, False, True], within=20 * UNIT)
        assert while_speaking == [False]
        assert scene.is_microphone_active()
    finally:
        await scene.disconnect()


# --- frames the relay slips in ---------------------------------------------------------------


@pytest.fixture
async def relayed(start_server: ServerFactory) -> AsyncIterator[tuple[Scene, Relay]]:
    """A scene connected through a relay to a server whose persona does not greet."""
    server = await start_server(persona=QUIET)
    relay = Relay(server)
    running = relay.run()
    url = await anext(running)
    scene = scene_for(server)
    try:
        await scene.connect(url, await token_for(server))
        yield scene, relay
    finally:
        await scene.disconnect()
        await running.aclose()


async def test_recognize_results_reach_the_listeners_and_the_state(
    relayed: tuple[Scene, Relay],
) -> None:
    """Interim then final recognizeResults: on_recognize_results gets (scene, status,
    error_message, results) parsed, and the state goes userSpeaking then dpProcessing."""
    scene, relay = relayed
    got: asyncio.Queue[tuple[int, str, tuple[RecognizeResult, ...]]] = asyncio.Queue()
    scene.on_recognize_results.add_listener(
        lambda _s, status, message, results: got.put_nowait((status, message, results))
    )
    states = conversation_states(scene)
    await relay.inject(recognize(False, "what is"))
    status, message, results = await asyncio.wait_for(got.get(), 5 * UNIT)
    assert (status, message, [(r.final, r.transcript) for r in results]) == (
        0,
        "",
        [(False, "what is")],
    )
    await relay.inject(recognize(True, "what is your name"))
    _, _, results = await asyncio.wait_for(got.get(), 5 * UNIT)
    assert [(r.final, r.transcript, r.alternatives[0].confidence) for r in results] == [
        (True, "what is your name", 0.8)
    ]
    assert states == [S.USER_SPEAKING, S.DP_PROCESSING]
    await relay.inject(recognize(False, "x", status=2))
    status, _, _ = await asyncio.wait_for(got.get(), 5 * UNIT)
    assert status == 2
    assert states == [S.USER_SPEAKING, S.DP_PROCESSING]  # a failure changes nothing


async def test_a_full_spoken_turn_passes_through_the_four_states(
    relayed: tuple[Scene, Relay],
) -> None:
    """Recognized speech, then the persona's real answer: userSpeaking, dpProcessing,
    dpSpeaking, idle."""
    scene, relay = relayed
    persona = Persona(scene)
    states = conversation_states(scene)
    await relay.inject(recognize(False, "hel"))
    await relay.inject(recognize(True, "hello"))
    await until(lambda: states == [S.USER_SPEAKING, S.DP_PROCESSING])
    await persona.conversation_send("hello")  # the server answers typed text by voice today
    await until(lambda: states[-1:] == [S.IDLE] and len(states) > 2, within=20 * UNIT)
    assert states == [S.USER_SPEAKING, S.DP_PROCESSING, S.DP_SPEAKING, S.IDLE]


async def test_speech_markers_reach_their_personas_only(relayed: tuple[Scene, Relay]) -> None:
    """speechMarker {personaId, name, arguments}: each Persona gets its own, parsed; markers
    without a persona id or name, or with a bad body, are skipped; the session goes on."""
    scene, relay = relayed
    one, two = Persona(scene, 1), Persona(scene, "2")
    got: asyncio.Queue[tuple[Persona, SpeechMarker]] = asyncio.Queue()
    for persona in (one, two):
        persona.on_speech_marker.add_listener(lambda p, marker: got.put_nowait((p, marker)))
    for body in (
        {"name": "showcards", "arguments": ["a"]},
        {"personaId": 1, "arguments": ["a"]},
        {"personaId": 1, "name": "showcards", "arguments": "a"},
        {"personaId": 2, "name": "marker", "arguments": ["wave", 3]},
        {"personaId": 1, "name": "hidecards", "arguments": []},
    ):
        await relay.inject(scene_event("speechMarker", body))
    await relay.inject(scene_event("speechMarker", []))
    markers = [await asyncio.wait_for(got.get(), 5 * UNIT) for _ in range(3)]
    assert markers == [
        (one, SpeechMarker("1", "showcards", ())),
        (two, SpeechMarker("2", "marker", ("wave",))),
        (one, SpeechMarker("1", "hidecards", ())),
    ]
    assert scene.is_connected()


async def test_user_text_frames_and_hostile_bodies(relayed: tuple[Scene, Relay]) -> None:
    """webrtc userText reaches on_user_text(scene, text); garbage recognizeResults and state
    bodies are tolerated (no traceback, no state change) and the session goes on."""
    scene, relay = relayed
    texts: asyncio.Queue[str] = asyncio.Queue()
    scene.on_user_text.add_listener(lambda _s, text: texts.put_nowait(text))
    results: list[int] = []
    scene.on_recognize_results.add_listener(lambda _s, status, _m, _r: results.append(status))
    states = conversation_states(scene)
    for body in ({}, {"status": "0", "results": {"a": 1}}, {"status": 0, "results": [None, 5]}):
        await relay.inject(scene_event("recognizeResults", body))
    await relay.inject(scene_event("state", {"persona": ["not", "a", "map"]}))
    await relay.inject(scene_event("state", {"persona": {"1": {"speechState": 7}}}))
    await relay.inject({"category": "webrtc", "kind": "event", "name": "userText", "body": {}})
    await relay.inject(
        {"category": "webrtc", "kind": "event", "name": "userText", "body": {"userText": "hi"}}
    )
    assert await asyncio.wait_for(texts.get(), 5 * UNIT) == "hi"
    assert results == [-1, -1, 0]
    assert states == [S.USER_SPEAKING]  # only the status-0 frame, with no final result
    assert scene.is_connected()
