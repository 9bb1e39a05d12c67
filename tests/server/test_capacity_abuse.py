"""Capacity cannot be starved: idle sockets, per-key and per-address limits, leaving, freezing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from dpkit import Scene
from dpkit.errors import TooManySockets
from dpkit.protocol.messages import Close, Established
from dpkit.server import DpkitServer, PersonaSettings
from dpkit.server.assets import BUILTIN_BUNDLE, write_manifest
from tests.raw_client import raw_client, token_for
from tests.served import stop
from tests.support import NO_MEDIA_ARGS, UNIT, ServerFactory, serving, spawn_dpkit, until


def quiet_scene(server: DpkitServer, label: str = "default") -> Scene:
    return Scene(server.api_key(label), requested_media_devices={}, required_media_devices={})


# --- idle sockets -------------------------------------------------------------------------------


async def hold_idle_sockets(
    server: DpkitServer, http: aiohttp.ClientSession, count: int, stop_at: asyncio.Event
) -> list[str]:
    """Keep ``count`` sockets open that never offer, reopening each as the server reaps it."""
    seen: list[str] = []

    async def one() -> None:
        while not stop_at.is_set():
            token = await token_for(http, server, "attacker")
            try:
                async with http.ws_connect(
                    token["url"], params={"access_token": token["jwt"]}
                ) as ws:
                    async for message in ws:  # established, queue places, then a close
                        if message.type is aiohttp.WSMsgType.TEXT:
                            seen.append(json.loads(message.data)["name"])
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await stop_at.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return seen


async def test_idle_sockets_from_one_key_do_not_keep_another_keys_client_out(
    start_server: ServerFactory,
) -> None:
    """20 sockets that never offer, reopened as reaped, and another key's client still connects."""
    server = await start_server(
        capacity=2, offer_timeout_s=1.0 * UNIT, rate_per_address=1000, rate_burst=1000
    )
    server.state.keys.add("attacker")
    server.state.keys.add("honest")
    stop_at = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        attack = asyncio.create_task(hold_idle_sockets(server, http, 20, stop_at))
        await until(lambda: server.state.pool.in_use == 2)
        started = time.monotonic()
        try:
            # The honest client comes from another address of this machine, as a user would.
            async with raw_client(server, label="honest", local_address="127.0.0.2") as honest:
                connected = await honest.connect()
                waited = time.monotonic() - started
                assert server.state.sessions[connected.session_id].info.key_id != ""
        finally:
            stop_at.set()
            seen = await attack
    refused = server.state.refusals["max_sockets_per_address"]
    assert refused > 0  # the attacker's address hit its socket limit
    assert "established" in seen  # the idle sockets really held Digital Persons
    # Served as soon as the first idle socket's offer deadline freed a Digital Person: its key
    # held none, the attacker's held the other, so it went ahead of the attacker's waiters.
    assert waited < 4 * server.settings.offer_timeout_s
    await until(lambda: server.state.pool.in_use == 0)


async def test_sockets_past_the_per_key_limit_are_refused_by_name(
    start_server: ServerFactory,
) -> None:
    """A key over max_sockets_per_key gets close {tooManySockets}; the Python client names it."""
    server = await start_server(max_sockets_per_key=1)
    first = quiet_scene(server)
    await first.connect()
    second = quiet_scene(server)
    with pytest.raises(TooManySockets) as refused:
        await second.connect()
    assert "max_sockets_per_key" in refused.value.advice
    assert [info.ending for info in server.state.ended] == ["tooManySockets"]
    await first.disconnect()
    await until(lambda: server.state.sockets_per_key.count(first_key(server)) == 0)
    await second.connect()
    await second.disconnect()


def first_key(server: DpkitServer) -> str:
    return server.state.keys.keys[0].key_id


async def test_sockets_past_the_per_address_limit_are_refused(start_server: ServerFactory) -> None:
    """Past max_sockets_per_address one address gets tooManySockets; another address does not."""
    server = await start_server(max_sockets_per_address=2, capacity=4)
    async with (
        raw_client(server) as one,
        raw_client(server) as two,
        raw_client(server) as three,
        raw_client(server, local_address="127.0.0.2") as elsewhere,
    ):
        assert isinstance(await one.receive(), Established)
        assert isinstance(await two.receive(), Established)
        assert await three.until_closed() == [Close("tooManySockets")]
        assert isinstance(await elsewhere.receive(), Established)
    assert server.state.refusals["max_sockets_per_address"] == 1


# --- a client that leaves while the assets load -------------------------------------------------


class SlowBundle:
    """The built-in bundle over HTTP, with one big file sent slowly: a download takes minutes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.big_started = asyncio.Event()
        self.big_ended = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name != "big.bin":
            return web.Response(body=(self.folder / name).read_bytes())
        response = web.StreamResponse()
        response.content_length = (self.folder / name).stat().st_size
        await response.prepare(request)
        self.big_started.set()
        try:
            for _ in range(10_000):
                await response.write(b"\0" * 1024)
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass  # the downloader hung up: what the test waits for
        finally:
            self.big_ended.set()
        return response


@pytest.fixture
async def slow_bundle(tmp_path: Path) -> AsyncIterator[tuple[str, SlowBundle]]:
    folder = tmp_path / "bundle"
    shutil.copytree(BUILTIN_BUNDLE, folder)
    (folder / "big.bin").write_bytes(b"\0" * (8 * 1024 * 1024))
    write_manifest(folder, "Ava", "slow")
    bundle = SlowBundle(folder)
    app = web.Application()
    app.router.add_get("/ava/{name}", bundle.handle)
    async with serving(app) as base:
        yield f"{base}/ava/", bundle


async def test_a_client_leaving_while_assets_load_frees_its_person_at_once(
    start_server: ServerFactory, slow_bundle: tuple[str, SlowBundle]
) -> None:
    """Closing the socket in DownloadingAssets cancels the download and frees the person."""
    url, bundle = slow_bundle
    server = await start_server(
        capacity=1, persona=PersonaSettings(video_width=320, video_height=240, assets=url)
    )
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        await client.offer()
        await asyncio.wait_for(bundle.big_started.wait(), 10 * UNIT)
        assert server.state.pool.in_use == 1
        await client.ws.close()
        left = time.monotonic()
    await until(lambda: server.state.pool.in_use == 0, within=1.0)
    freed_after = time.monotonic() - left
    assert freed_after < 1.0
    await asyncio.wait_for(bundle.big_ended.wait(), 5 * UNIT)  # the download was dropped
    cache = server.settings.data_dir / "assets"
    assert not [path.name for path in cache.iterdir() if path.name.startswith(".part-")]
    # The socket closed without dpkit's close frame: the session's ending says so.
    assert [info.ending for info in server.state.ended] == ["connectionLost"]


# --- a client that freezes ----------------------------------------------------------------------


async def test_a_frozen_client_frees_its_person_within_five_seconds(server: DpkitServer) -> None:
    """A connected client stopped with SIGSTOP (no FIN, no close) is gone within 5 s."""
    process = await spawn_dpkit(
        "connect",
        server.api_key(),
        "--json",
        "--duration",
        "120",
        *NO_MEDIA_ARGS,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await until(lambda: any(s.info.connected_at for s in server.state.sessions.values()))
        assert server.state.pool.in_use == 1
        os.kill(process.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        await until(lambda: server.state.pool.in_use == 0, within=8.0)
        gone_after = time.monotonic() - frozen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        await stop(process)
    assert gone_after < 5.0
    assert [info.ending for info in server.state.ended] == ["connectionLost"]


async def test_media_that_goes_silent_is_noticed_by_ice_consent(server: DpkitServer) -> None:
    """The socket stays open but the client's UDP goes quiet: ICE consent ends the session."""
    async with raw_client(server) as client:
        await client.connect()
        assert server.state.pool.in_use == 1
        # Drop the client's ICE sockets without a word: no DTLS close, no STUN answers.
        for transceiver in client.pc.getTransceivers():
            connection = transceiver.sender.transport.transport._connection
            for protocol in connection._protocols:
                protocol.transport.abort()
        silenced = time.monotonic()
        frames = await client.until_closed(within=15 * UNIT)
        noticed_after = time.monotonic() - silenced
    assert frames[-1] == Close("mediaStreamFailed")
    # Consent is checked every second and four misses end it, then the server gives the
    # client's close frame its grace of 2 s: well under aioice's 30 s.
    assert noticed_after < 10.0
    assert server.state.pool.in_use == 0
