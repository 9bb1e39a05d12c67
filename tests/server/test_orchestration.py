"""Orchestration: the client relays between the session server and an orchestration server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from dpkit import Scene
from dpkit.errors import ControlFailed
from dpkit.orchestrator import CONTROL_PATH, Orchestrator, create_orchestrator_app
from dpkit.protocol.messages import Frame, SceneEvent
from dpkit.server import DpkitServer, PersonaSettings
from tests.support import UNIT, ServerFactory, until


class RunningOrchestrator:
    def __init__(self, orchestrator: Orchestrator, runner: web.AppRunner, url: str) -> None:
        self.orchestrator = orchestrator
        self.runner = runner
        self.url = url


@pytest.fixture
async def orchestration() -> AsyncIterator[RunningOrchestrator]:
    """The reference orchestration server on a free loopback port."""
    orchestrator = Orchestrator()
    runner = web.AppRunner(create_orchestrator_app(orchestrator))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}{CONTROL_PATH}"
    yield RunningOrchestrator(orchestrator, runner, url)
    await runner.cleanup()


def persona(control_url: str) -> PersonaSettings:
    return PersonaSettings(video_width=160, video_height=120, control_url=control_url)


def watched(server: DpkitServer) -> tuple[Scene, asyncio.Queue[str], list[SceneEvent]]:
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    ended: asyncio.Queue[str] = asyncio.Queue()
    results: list[SceneEvent] = []
    scene.on_disconnected_event.add_listener(lambda _s, _id, reason: ended.put_nowait(reason))

    def on_message(frame: Frame) -> None:
        # The orchestration server's answers (the persona's own welcome comes from its corpus).
        if (
            isinstance(frame, SceneEvent)
            and frame.name == "conversationResult"
            and frame.body["provider"]["kind"] == "orchestration"
        ):
            results.append(frame)

    scene.on_message.add_listener(on_message)
    return scene, ended, results


async def test_a_relayed_conversation_and_the_orchestrator_ending_it(
    start_server: ServerFactory, orchestration: RunningOrchestrator
) -> None:
    """Text goes session server -> client -> orchestrator and back; 'bye' ends the conversation."""
    server = await start_server(persona=persona(orchestration.url))
    scene, ended, results = watched(server)
    await scene.connect()
    await until(lambda: orchestration.orchestrator.connections == 1)
    reply = await scene.send_request("conversationSend", {"personaId": 1, "text": "hello there"})
    assert isinstance(reply, dict)  # status 0: the response's body
    await until(lambda: len(results) == 1)
    assert results[0].body["output"]["text"] == "Hello from the orchestration server!"
    assert results[0].body["provider"] == {"kind": "orchestration", "meta": {}}

    await scene.send_request("conversationSend", {"personaId": 1, "text": "ok, bye"})
    assert await asyncio.wait_for(ended.get(), 5 * UNIT) == "conversationEnded"
    assert orchestration.orchestrator.requests == ["hello there", "ok, bye"]
    assert [info.ending for info in server.state.ended] == ["conversationEnded"]
    await scene.close()


async def test_orchestration_down_gives_control_failed(start_server: ServerFactory) -> None:
    """A controlUrl where nothing listens: connect() fails with controlFailed."""
    server = await start_server(persona=persona("ws://127.0.0.1:9/control"))
    scene, _, _ = watched(server)
    with pytest.raises(ControlFailed) as caught:
        await scene.connect()
    assert caught.value.name == "controlFailed"
    await until(lambda: server.state.pool.in_use == 0)


async def test_orchestration_closing_gives_control_disconnected(
    start_server: ServerFactory, orchestration: RunningOrchestrator
) -> None:
    """The orchestration server going away ends the session with controlDisconnected."""
    server = await start_server(persona=persona(orchestration.url))
    scene, ended, _ = watched(server)
    await scene.connect()
    await until(lambda: orchestration.orchestrator.connections == 1)
    await orchestration.runner.cleanup()
    assert await asyncio.wait_for(ended.get(), 10 * UNIT) == "controlDisconnected"
    await until(lambda: server.state.pool.in_use == 0)
    await scene.close()
