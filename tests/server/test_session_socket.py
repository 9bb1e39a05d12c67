"""The session socket spoken to frame by frame: server rules, bad frames, scene requests."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from dpkit import Scene
from dpkit.protocol.actions import AddRemoteCandidate
from dpkit.protocol.messages import (
    Accepted,
    Answer,
    Close,
    Connected,
    DpkitEvent,
    Established,
    Ice,
    SceneResponse,
)
from dpkit.server import DpkitServer
from dpkit.server.rtc import PersonaPeer
from tests.raw_client import RawClient, raw_client, token_for
from tests.support import ServerFactory, until


async def test_session_frames_come_in_the_protocol_order(server: DpkitServer) -> None:
    """established first; accepted, answer, then connected with accepted's session id."""
    async with raw_client(server) as client:
        established = await client.receive()
        assert isinstance(established, Established)
        await client.offer()
        accepted, answer = await client.receive(), await client.receive()
        assert isinstance(accepted, Accepted)
        assert isinstance(answer, Answer)
        await client.answer(answer.sdp)
        connected = await client.receive()
        assert isinstance(connected, Connected)
        assert connected.session_id == accepted.session_id
        assert list(server.state.sessions) == [accepted.session_id]
        assert accepted.server == server.settings.node_id


async def test_answer_carries_persona_audio_and_video_on_one_stream(server: DpkitServer) -> None:
    """The answer's persona media sections share one msid stream id (the browser needs it)."""
    async with raw_client(server) as client:
        await client.receive()
        await client.offer()
        await client.receive()
        answer = await client.receive()
        assert isinstance(answer, Answer)
        msids = [line.split()[0] for line in answer.sdp.splitlines() if line.startswith("a=msid:")]
        assert len(msids) == 2
        assert len(set(msids)) == 1


async def test_busy_server_sends_close_no_scene_before_closing(
    start_server: ServerFactory,
) -> None:
    """With no Digital Person free, the socket gets close {noScene} and only then closes."""
    server = await start_server(capacity=1, queue_max_length=0)
    holder = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    await holder.connect()
    try:
        async with raw_client(server) as client:
            frames = [await client.receive(), await client.receive()]
            assert frames == [Close("noScene"), None]
    finally:
        await holder.disconnect()


async def test_malformed_frames_get_a_protocol_error_and_the_session_goes_on(
    server: DpkitServer,
) -> None:
    """Each malformed frame is answered with dpkit/protocolError; the socket stays open."""
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        bad = [
            "this is not json",
            "[1, 2, 3]",
            json.dumps({"category": "webrtc", "kind": "event", "body": {}}),
            json.dumps({"category": "webrtc", "kind": "event", "name": "offer", "body": {}}),
            json.dumps(
                {"category": "webrtc", "kind": "event", "name": "answer", "body": {"sdp": "x"}}
            ),
        ]
        messages = []
        for text in bad:
            await client.send(text)
            reply = await client.receive()
            assert isinstance(reply, DpkitEvent)
            assert reply.name == "protocolError"
            messages.append(reply.body["message"])
        assert "not JSON" in messages[0]
        assert "JSON object" in messages[1]
        assert "'name'" in messages[2]
        assert "'sdp'" in messages[3]
        assert "unexpected server-only frame" in messages[4]
        # The same socket still completes a session.
        await client.offer()
        assert isinstance(await client.receive(), Accepted)


async def test_unknown_frames_are_ignored_and_scene_requests_always_answered(
    server: DpkitServer,
) -> None:
    """Unknown categories and names are ignored; an unsupported scene request gets status != 0."""
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        await client.send(
            json.dumps({"category": "mystery", "kind": "event", "name": "x", "body": {}})
        )
        await client.send(json.dumps({"category": "webrtc", "kind": "event", "name": "newThing"}))
        await client.send(
            json.dumps(
                {
                    "category": "scene",
                    "kind": "request",
                    "name": "teleport",
                    "transaction": "scene_7",
                    "body": {"personaId": 1},
                }
            )
        )
        reply = await client.receive()
        assert isinstance(reply, SceneResponse)
        assert (reply.name, reply.transaction) == ("teleport", "scene_7")
        assert reply.status != 0


async def test_a_misbehaving_client_does_not_stop_other_sessions(server: DpkitServer) -> None:
    """While one socket sends garbage, a Python client connects and disconnects normally."""
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        for _ in range(20):
            await client.send("{broken")
        scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
        session_id = await scene.connect()
        assert scene.is_connected()
        await scene.disconnect()
        assert session_id in [info.session_id for info in server.state.ended]


async def test_token_endpoint_answers_cors_preflight_for_the_key_header(
    server: DpkitServer,
) -> None:
    """A page on another origin may send the key header; a key allowing its origin works."""
    server.state.keys.add("kiosk", origins=("http://example.test:9000",))
    async with aiohttp.ClientSession() as http:
        async with http.options(
            server.url + "/api/token",
            headers={
                "Origin": "http://example.test:9000",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "key",
            },
        ) as reply:
            assert reply.status == 204
            assert reply.headers["Access-Control-Allow-Origin"] == "http://example.test:9000"
            assert "key" in reply.headers["Access-Control-Allow-Headers"]
        async with http.get(
            server.url + "/api/token",
            headers={"key": server.api_key("kiosk"), "Origin": "http://example.test:9000"},
        ) as reply:
            assert reply.headers["Access-Control-Allow-Origin"] == "http://example.test:9000"
            data = await reply.json()
            assert data["url"].startswith("ws://127.0.0.1:")
            assert data["jwt"].count(".") == 2


async def test_token_endpoint_errors_are_json_without_url_or_jwt(server: DpkitServer) -> None:
    """The Web SDK never checks the status: errors are JSON with 'error' and no url/jwt."""
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"key": "garbage"}):
            async with http.get(server.url + "/api/token", headers=headers) as reply:
                data = await reply.json()
                assert set(data) == {"error"}


async def test_telemetry_endpoints_answer(server: DpkitServer) -> None:
    """The telemetry token is issued for a session token; traces posted with it are accepted."""
    async with aiohttp.ClientSession() as http:
        token = await token_for(http, server)
        auth = {"Authorization": f"Bearer {token['jwt']}"}
        async with http.get(server.url + "/api/telemetry/jwt", headers=auth) as reply:
            data = await reply.json()
        assert data["success"] is True
        traces = {"Authorization": f"Bearer {data['telemetryJwt']}"}
        async with http.post(
            server.url + "/api/telemetry/v1/traces", headers=traces, json={"resourceSpans": []}
        ) as reply:
            assert reply.status == 200
        async with http.get(
            server.url + "/api/telemetry/jwt", headers={"Authorization": "Bearer nope"}
        ) as reply:
            assert await reply.json() == {"success": False}
    assert server.state.telemetry_batches == 1


async def test_trickled_candidates_are_taken_and_mdns_names_skipped_on_loopback(
    server: DpkitServer,
) -> None:
    """Browser-style trickle after accepted (an mDNS name among them) is accepted silently."""
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        await client.offer()
        accepted = await client.receive()
        assert isinstance(accepted, Accepted)
        answer = await client.receive()
        assert isinstance(answer, Answer)
        for candidate in (
            "candidate:1 1 udp 2122260223 4f0c1b2a-9c1d-4e2f-8a3b.local 50000 typ host",
            "candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host",
        ):
            await client.send(Ice(candidate, "0", 0, session_id=accepted.session_id))
        await client.send(Ice("", "", 0, complete=True, session_id=accepted.session_id))
        await client.answer(answer.sdp)
        assert isinstance(await client.receive(), Connected)


async def test_legacy_jwt_endpoint_gives_a_working_token(server: DpkitServer) -> None:
    """GET /api/jwt (pages served by dpkit itself) returns a url and jwt that open a session."""
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/api/jwt") as reply:
            token = await reply.json()
        async with http.ws_connect(token["url"], params={"access_token": token["jwt"]}) as ws:
            client = RawClient(ws)
            try:
                assert isinstance(await client.receive(), Established)
            finally:
                await client.pc.close()


async def test_browser_events_are_taken_without_complaint(start_server: ServerFactory) -> None:
    """keepAlive, ui, videoBounds, diagnostics logs and stopSpeaking: recorded or answered."""
    server = await start_server(log_to_server=True)
    async with raw_client(server) as client:
        established = await client.receive()
        assert isinstance(established, Established)
        assert established.settings.log_to_server is True
        for frame in (
            '{"category":"webrtc","kind":"event","name":"keepAlive","body":{}}',
            '{"category":"webrtc","kind":"event","name":"ui","body":{"visible":false}}',
            '{"category":"webrtc","kind":"event","name":"videoBounds","body":{"width":1,"height":2}}',
            '{"category":"diagnostics","kind":"event","name":"log","body":'
            '{"name":"browser","text":["hello from the page"]}}',
            '{"category":"scene","kind":"request","name":"stopSpeaking","transaction":"s_1",'
            '"body":{"personaId":1}}',
        ):
            await client.send(frame)
        reply = await client.receive()
        assert isinstance(reply, SceneResponse)
        assert reply.transaction == "s_1"
        session = next(iter(server.state.live))
        assert session.info.events == ["keepAlive", "ui", "videoBounds"]


async def test_the_server_times_each_offer_until_accepted_and_logs_it(
    server: DpkitServer, caplog: pytest.LogCaptureFixture
) -> None:
    """offer -> accepted is measured on the server and named in the session's 'connected' line."""
    caplog.set_level(logging.INFO, logger="dpkit.server")
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        await client.offer()
        accepted, answer = await client.receive(), await client.receive()
        assert isinstance(accepted, Accepted)
        assert isinstance(answer, Answer)
        seconds = server.state.sessions[accepted.session_id].info.offer_to_accepted_s
        assert seconds is not None
        assert seconds > 0
        await client.answer(answer.sdp)
        assert isinstance(await client.receive(), Connected)
        await until(lambda: "offer answered in" in caplog.text)
    answered = f"offer answered in {seconds * 1000:.1f} ms"
    line = f"session {accepted.session_id}: connected (Ava #0, from 127.0.0.1; {answered})"
    assert line in caplog.text


async def test_candidates_trickled_before_the_answer_are_added_once_accepted_is_sent(
    server: DpkitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser's early candidates wait for accepted to go out, then are all added; it connects."""
    added: list[tuple[str, bool]] = []
    original = PersonaPeer.add_candidate

    async def add_candidate(peer: PersonaPeer, action: AddRemoteCandidate) -> None:
        session = next(iter(server.state.live))
        added.append((action.ice.candidate, session.info.offer_to_accepted_s is not None))
        await original(peer, action)

    answer = PersonaPeer.answer

    async def answer_after_the_trickle(peer: PersonaPeer, sdp: str) -> str:
        # Answered only once both candidates are in: they came before the answer, surely.
        session = next(iter(server.state.live))
        await until(lambda: len(session._early_candidates) == len(trickled))
        return await answer(peer, sdp)

    monkeypatch.setattr(PersonaPeer, "add_candidate", add_candidate)
    monkeypatch.setattr(PersonaPeer, "answer", answer_after_the_trickle)
    trickled = [
        "candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host",
        "candidate:3 1 udp 2122260222 127.0.0.1 50002 typ host",
    ]
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        await client.offer()
        for candidate in trickled:
            await client.send(Ice(candidate, "0", 0))
        accepted, answered = await client.receive(), await client.receive()
        assert isinstance(accepted, Accepted)
        assert isinstance(answered, Answer)
        await client.answer(answered.sdp)
        assert isinstance(await client.receive(), Connected)
    assert added == [(candidate, True) for candidate in trickled]


async def test_the_journal_records_the_session_and_its_devices_once_accepted(
    server: DpkitServer,
) -> None:
    """The journal's row gets the session id and the offered devices (written after accepted)."""
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        await client.offer()
        accepted = await client.receive()
        assert isinstance(accepted, Accepted)
        await until(lambda: server.state.store.show(accepted.session_id) is not None)
        record = server.state.store.show(accepted.session_id)
        assert record is not None
        assert (record.microphone, record.camera) == (False, False)
