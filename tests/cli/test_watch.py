"""``dpkit watch``: a refused token says which one was used and where it was found; a server
that sends what is not an event stream is reported, never a traceback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from dpkit import Scene
from dpkit.server import DpkitServer
from dpkit.server.keys import KeyStore
from tests.cli.helpers import environment, run_dpkit
from tests.support import UNIT, serving, spawn_dpkit


async def test_a_refused_token_says_where_it_came_from(server: DpkitServer, tmp_path: Path) -> None:
    """HTTP 401 names the token's source: another data dir's keys.json, --admin-token, or
    DPKIT_ADMIN_TOKEN, and says to pass the server's --data-dir."""
    other = tmp_path / "other"
    KeyStore.load_or_create(other)  # another server's data directory: another token
    home = environment(tmp_path / "home")
    code, _out, err = await run_dpkit("watch", server.url, "--data-dir", str(other), environ=home)
    assert code == 1
    assert "the server refused the feed: HTTP 401" in err
    assert f"(adminToken in {other / 'keys.json'})" in err
    assert "Pass the server's --data-dir" in err

    code, _out, err = await run_dpkit("watch", server.url, "--admin-token", "nope", environ=home)
    assert code == 1
    assert "(--admin-token)" in err

    with_variable = environment(tmp_path / "home", DPKIT_ADMIN_TOKEN="nope")
    code, _out, err = await run_dpkit("watch", server.url, environ=with_variable)
    assert code == 1
    assert "(DPKIT_ADMIN_TOKEN)" in err


async def test_the_right_token_from_the_environment_is_taken(
    server: DpkitServer, tmp_path: Path
) -> None:
    """DPKIT_ADMIN_TOKEN, as serve reads it, opens the feed with no data directory at all."""
    with_variable = environment(tmp_path / "home", DPKIT_ADMIN_TOKEN=server.admin_token)
    watch = await spawn_dpkit(
        "watch", server.url, "--json", "--max-events", "1", environ=with_variable
    )
    assert watch.stderr is not None
    first = await asyncio.wait_for(watch.stderr.readline(), 30 * UNIT)
    assert b"following" in first, first
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    await scene.connect()
    out, err = await asyncio.wait_for(watch.communicate(), 30 * UNIT)
    await scene.disconnect()
    assert watch.returncode == 0, err.decode()
    assert json.loads(out)["type"] == "opened"


def stream_of(*chunks: bytes) -> web.Application:
    """A server whose /api/events sends ``chunks`` as an event stream, then ends."""

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        return response

    app = web.Application()
    app.router.add_get("/api/events", events)
    return app


async def test_a_stream_that_is_not_events_is_reported(tmp_path: Path) -> None:
    """Data that is not JSON, or not an object, is skipped with a line saying so; a bad
    event's text is printed with its control characters made visible."""
    app = stream_of(
        b"data: {not json\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"type": "state", "sessionId": "s\\u001b[2J", "state": "Connected"}\n\n',
    )
    async with serving(app) as url:
        code, out, err = await run_dpkit(
            "watch", url, "--admin-token", "t", environ=environment(tmp_path)
        )
    assert code == 1  # the server ended the feed
    assert "skipped an event that is not JSON: data: {not json" in err
    assert "skipped an event that is not an object: data: [1, 2]" in err
    assert "s\\x1b[2J" in out
    assert "\x1b" not in out
    assert f"the server at {url} ended the feed" in err
    assert "Traceback" not in err


async def test_an_endless_line_is_reported(tmp_path: Path) -> None:
    """A line longer than the reader buffers ends watch with a message, not a traceback."""
    async with serving(stream_of(b"data: " + b"x" * 1_000_000)) as url:
        code, _out, err = await run_dpkit(
            "watch", url, "--admin-token", "t", environ=environment(tmp_path)
        )
    assert code == 1
    assert f"cannot follow {url}" in err
    assert "Traceback" not in err
