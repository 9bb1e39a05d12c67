"""The admin API: sessions, closing one, the live feed, metrics, and dpkit watch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dpkit import NoScene, RetryOptions, Scene
from dpkit.server import DpkitServer
from tests.support import UNIT, ServerFactory, until
from tests.test_cli import run_cli


def quiet_scene(server: DpkitServer) -> Scene:
    return Scene(server.api_key(), requested_media_devices={}, required_media_devices={})


def admin(server: DpkitServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_token}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/sessions"),
        ("GET", "/api/sessions/x"),
        ("POST", "/api/sessions/x/close"),
        ("GET", "/api/events"),
    ],
)
async def test_admin_api_needs_the_token(server: DpkitServer, method: str, path: str) -> None:
    """Without the admin token (or with a wrong one) every admin call is refused with 401."""
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.request(method, server.url + path, headers=headers) as reply:
                assert reply.status == 401
                assert "admin token" in (await reply.json())["error"]


async def test_sessions_are_listed_shown_and_closed(server: DpkitServer) -> None:
    """A live session is listed; closing it through the API ends it with the given reason."""
    scene = quiet_scene(server)
    ended: asyncio.Queue[str] = asyncio.Queue()
    scene.on_disconnected_event.add_listener(lambda _s, _id, reason: ended.put_nowait(reason))
    session_id = await scene.connect()
    async with aiohttp.ClientSession(headers=admin(server)) as http:
        async with http.get(server.url + "/api/sessions") as reply:
            listed = (await reply.json())["sessions"]
        assert [(s["session_id"], s["ending"]) for s in listed] == [(session_id, None)]
        async with http.post(
            server.url + f"/api/sessions/{session_id}/close", json={"reason": "conversationEnded"}
        ) as reply:
            assert reply.status == 200
        assert await asyncio.wait_for(ended.get(), 5 * UNIT) == "conversationEnded"
        await until(lambda: server.state.pool.in_use == 0)
        async with http.get(server.url + f"/api/sessions/{session_id}") as reply:
            shown = await reply.json()
        assert shown["ending"] == "conversationEnded"
        assert [e["detail"] for e in shown["events"] if e["kind"] == "state"][-2:] == [
            "Connected",
            "Disconnected",
        ]
        async with http.get(server.url + "/api/sessions/unknown") as reply:
            assert reply.status == 404
    await scene.close()


async def read_feed(server: DpkitServer, count: int, ready: asyncio.Event) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession(headers=admin(server)) as http,
        http.get(server.url + "/api/events") as reply,
    ):
        assert reply.headers["Content-Type"] == "text/event-stream"
        ready.set()
        async for raw in reply.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == count:
                    return events
    return events


async def test_the_live_feed_streams_every_state_change(server: DpkitServer) -> None:
    """Server-Sent Events carry the socket opening, each state in order, and the ending."""
    ready = asyncio.Event()
    reading = asyncio.create_task(read_feed(server, 7, ready))
    await asyncio.wait_for(ready.wait(), 5 * UNIT)
    await until(lambda: server.state.feed.subscribers == 1)
    scene = quiet_scene(server)
    session_id = await scene.connect()
    await scene.disconnect()
    events = await asyncio.wait_for(reading, 10 * UNIT)
    assert [(e["type"], e.get("state") or e.get("reason") or e.get("client")) for e in events] == [
        ("opened", "python"),
        ("state", "SearchingForDigitalPerson"),
        ("state", "DownloadingAssets"),
        ("state", "ConnectingToDigitalPerson"),
        ("state", "Connected"),
        ("state", "Disconnected"),
        ("ended", "normal"),
    ]
    assert events[4]["sessionId"] == session_id
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


async def test_metrics_count_states_errors_and_disconnects(start_server: ServerFactory) -> None:
    """/metrics (Prometheus text) counts sessions by state, connect errors and disconnects."""
    server = await start_server(capacity=1, queue_max_length=0)
    holder = quiet_scene(server)
    await holder.connect()
    with pytest.raises(NoScene):
        await quiet_scene(server).connect(retry_options=RetryOptions(max_retries=1))
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/metrics") as reply:
            live = await reply.text()
        await holder.disconnect()
        await until(lambda: server.state.pool.in_use == 0)
        async with http.get(server.url + "/metrics") as reply:
            after = await reply.text()
    live_values, after_values = samples(live), samples(after)
    assert live_values[("dpkit_sessions", (("state", "Connected"),))] == 1
    assert live_values[("dpkit_connect_errors_total", (("name", "noScene"),))] == 1
    assert after_values[("dpkit_sessions", (("state", "Connected"),))] == 0
    assert after_values[("dpkit_disconnects_total", (("reason", "normal"),))] == 1
    steps = after_values[("dpkit_connect_step_seconds_count", (("step", "DownloadingAssets"),))]
    assert steps == 1
    assert after_values[("dpkit_queue_length", ())] == 0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, read with the Prometheus client's own text parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_dpkit_watch_prints_the_feed(server: DpkitServer) -> None:
    """`dpkit watch --json --max-events N` prints the first N events of the live feed."""
    watching = asyncio.create_task(
        run_cli(
            "watch", server.url, "--admin-token", server.admin_token, "--json", "--max-events", "3"
        )
    )
    # The command subscribes once it has started; if it stops first, its output says why.
    await until(lambda: server.state.feed.subscribers == 1 or watching.done(), within=40 * UNIT)
    assert not watching.done(), watching.result()
    scene = quiet_scene(server)
    await scene.connect()
    code, out, err = await watching
    await scene.disconnect()
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["opened", "state", "state"]
