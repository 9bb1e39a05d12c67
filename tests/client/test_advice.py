"""Each way of failing carries advice for its own cause, naming what to check or run.

The seed has one name for many causes (``serverConnectionFailed``, ``noUserMedia``); the message
keeps the seed's words and ``advice`` says what to do about this cause.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from dpkit import (
    ConfigurationError,
    DeviceError,
    MediaDevices,
    NoDevices,
    NoUserMedia,
    Scene,
    ServerConnectionFailed,
    TokenServer,
)
from dpkit.apikey import ApiKey, decode_api_key
from dpkit.media.files import MediaFileDevices
from dpkit.server import DpkitServer
from tests.support import serving

GENERAL_ADVICE = "try again from a different network"


def refusing_port() -> int:
    """A loopback port nothing listens on: 9 (the issue's), unless something answers there."""
    for port in (9, 0):
        probe = socket.socket()
        try:
            if port == 0:
                probe.bind(("127.0.0.1", 0))
                return int(probe.getsockname()[1])  # closed at once: nothing listens on it
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
        finally:
            probe.close()
    raise AssertionError("unreachable")


def quiet_scene(api_key: str | None = None) -> Scene:
    return Scene(
        api_key,
        requested_media_devices={},
        required_media_devices={},
        devices=NoDevices(),
        play_audio=False,
    )


@asynccontextmanager
async def raw_listener() -> AsyncIterator[tuple[str, list[str]]]:
    """A bare TCP listener on loopback that records every connection it accepts."""
    accepted: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(str(writer.get_extra_info("peername")))
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        listener.close()
        await listener.wait_closed()


async def test_refused_token_endpoint_names_the_url_and_asks_for_dpkit_serve() -> None:
    """Nothing on 127.0.0.1:9: the advice names that address and asks if dpkit serve runs."""
    port = refusing_port()
    key = ApiKey(f"http://127.0.0.1:{port}/api/token", "k", "s").encode()
    with pytest.raises(ServerConnectionFailed) as caught:
        await quiet_scene(key).connect()
    advice = caught.value.advice
    assert f"http://127.0.0.1:{port}" in advice
    assert "is `dpkit serve` running there?" in advice
    assert GENERAL_ADVICE not in advice
    assert caught.value.message.startswith(
        f"cannot reach the token endpoint http://127.0.0.1:{port}"
    )


async def test_refused_session_socket_names_the_url_and_asks_for_dpkit_serve() -> None:
    """A socket URL where nothing listens: the same advice, naming the socket's address."""
    port = refusing_port()
    with pytest.raises(ServerConnectionFailed) as caught:
        await quiet_scene().connect(f"ws://127.0.0.1:{port}/session", "token")
    assert f"ws://127.0.0.1:{port}" in caught.value.advice
    assert "is `dpkit serve` running there?" in caught.value.advice


@pytest.mark.parametrize(
    "target",
    ["ftp://127.0.0.1:8080", "ftp://example.com/api/token", "gopher://127.0.0.1/"],
)
async def test_a_url_with_another_scheme_as_the_api_key_names_its_scheme(target: str) -> None:
    """``ftp://...`` where an API key goes: the message says the scheme is not http(s) or ws(s),
    never "not base64-encoded JSON"."""
    scheme = target.split("://")[0]
    with pytest.raises(ServerConnectionFailed) as caught:
        await quiet_scene(target).connect()
    message = caught.value.message
    assert f"scheme {scheme!r} is not http(s) or ws(s)" in message
    assert "base64" not in message
    assert f"not {scheme}://" in caught.value.advice
    with pytest.raises(ConfigurationError, match="is not http"):
        decode_api_key(target)


async def test_an_http_url_as_the_api_key_says_it_is_a_url() -> None:
    """A server URL where the key goes says so, and how to get the key."""
    with pytest.raises(ServerConnectionFailed, match=r"it is a http:// URL, not an API key") as e:
        await quiet_scene("http://127.0.0.1:8080").connect()
    assert "dpkit keys list" in e.value.advice


@pytest.mark.parametrize("kind", ["server_uri", "token_server"])
async def test_a_server_url_with_another_scheme_names_its_scheme(kind: str) -> None:
    """connect("ftp://...", token) and TokenServer("ftp://...") fail before any socket."""
    scene = quiet_scene()
    url = "ftp://127.0.0.1:21/session"
    connecting = (
        scene.connect(url, "token")
        if kind == "server_uri"
        else scene.connect(token_server=TokenServer(url, "token"))
    )
    with pytest.raises(ServerConnectionFailed) as caught:
        await connecting
    assert "has the scheme 'ftp'" in caught.value.message
    assert "ws://" in caught.value.message
    assert "ftp://" in caught.value.advice


async def test_an_api_key_whose_token_endpoint_is_ftp_names_the_scheme() -> None:
    """A key whose authServer is ftp:// says which scheme it has."""
    key = ApiKey("ftp://127.0.0.1/api/token", "k", "s").encode()
    with pytest.raises(ServerConnectionFailed, match=r"its scheme is 'ftp'"):
        await quiet_scene(key).connect()


async def test_a_token_answer_with_a_socket_url_of_another_scheme_is_refused() -> None:
    """A token endpoint that hands out ``ftp://`` as the socket: refused, naming the scheme,
    and nothing is connected to."""
    asked: list[str] = []

    async def token(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"url": "ftp://127.0.0.1:21/session", "jwt": "j"})

    app = web.Application()
    app.router.add_get("/api/token", token)
    async with serving(app) as url:
        key = ApiKey(f"{url}/api/token", "k", "s").encode()
        with pytest.raises(ServerConnectionFailed, match="has the scheme 'ftp'"):
            await quiet_scene(key).connect()
    assert asked == ["/api/token"]


async def test_a_token_endpoint_that_answers_too_much_is_refused() -> None:
    """An endpoint answering megabytes is cut off at MAX_TOKEN_ANSWER_BYTES, saying so."""

    async def token(request: web.Request) -> web.Response:
        return web.Response(text="x" * (2 * 1024 * 1024))

    app = web.Application()
    app.router.add_get("/api/token", token)
    async with serving(app) as url:
        key = ApiKey(f"{url}/api/token", "k", "s").encode()
        with pytest.raises(ServerConnectionFailed, match="MAX_TOKEN_ANSWER_BYTES"):
            await quiet_scene(key).connect()


async def test_an_unknown_api_key_points_at_the_servers_keys(server: DpkitServer) -> None:
    """A well-formed key the server never issued: advice to use one it issued."""
    real = decode_api_key(server.api_key())
    forged = ApiKey(real.auth_server, real.key_id, "wrong-secret").encode()
    with pytest.raises(ServerConnectionFailed, match="this server does not know it") as caught:
        await quiet_scene(forged).connect()
    assert "dpkit keys list" in caught.value.advice


async def test_a_missing_media_file_is_named_in_the_advice(tmp_path: Path) -> None:
    """``--media-file /nonexistent.mp4``: noUserMedia with the seed's message, advice naming
    the file, and no socket opened."""
    missing = tmp_path / "nonexistent.mp4"
    async with raw_listener() as (url, accepted):
        scene = Scene(
            ApiKey(f"{url}/api/token", "k", "s").encode(),
            requested_media_devices={"microphone": True, "camera": True},
            required_media_devices={"microphone": True},
            devices=MediaFileDevices(missing),
            play_audio=False,
        )
        with pytest.raises(NoUserMedia) as caught:
            await scene.connect()
    assert caught.value.message == "the user microphone and/or camera is not available"
    assert str(missing) in caught.value.advice
    assert "does not exist" in caught.value.advice
    assert "allow access" not in caught.value.advice.lower()
    assert accepted == []


async def test_a_directory_as_the_media_file_says_it_is_not_a_file(tmp_path: Path) -> None:
    """A directory given as the media file is named, and called not a regular file."""
    with pytest.raises(DeviceError, match="is not a media file") as caught:
        await MediaFileDevices(tmp_path).open(MediaDevices(microphone=True))
    assert str(tmp_path) in caught.value.advice
