"""On a real network: the server's own TLS, and the X-Forwarded-* headers of a trusted proxy."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dpkit import Scene
from dpkit.apikey import decode_api_key
from dpkit.cli import build_parser
from dpkit.cli.serve import network_warnings, settings_from
from dpkit.errors import ConfigurationError, ServerConnectionFailed
from dpkit.protocol.messages import Close, DpkitEvent, Established, Frame, parse_frame
from dpkit.server import DpkitServer, Settings
from dpkit.server.endpoints import TOKEN_PATH
from tests.certificates import Certificate, self_signed, write_key
from tests.served import served
from tests.support import NO_MEDIA_ARGS, UNIT, ServerFactory, make_settings, spawn_dpkit

#: What a TLS-terminating proxy in front of the server says about the client's request.
PROXIED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "dp.example.com"}


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return self_signed(tmp_path / "tls")


def plain(server: DpkitServer) -> str:
    """The server's own address over http (``server.url`` may be its public URL)."""
    return f"http://127.0.0.1:{server.port}"


async def get_json(
    url: str,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=headers, ssl=context if context is not None else True) as reply,
    ):
        data: dict[str, Any] = await reply.json()
        return reply.status, data


async def token(
    server: DpkitServer, headers: dict[str, str] | None = None, base: str | None = None
) -> dict[str, Any]:
    """The token endpoint's answer for the default key, with these extra request headers."""
    status, data = await get_json(
        (base or plain(server)) + TOKEN_PATH, {"key": server.api_key(), **(headers or {})}
    )
    assert status == 200, data
    return data


# --- the server's own TLS ------------------------------------------------------------------


async def test_tls_server_answers_a_wss_socket_url_over_https(
    start_server: ServerFactory, certificate: Certificate
) -> None:
    """With a certificate the token endpoint is https and names a wss:// session socket."""
    server = await start_server(tls_cert=certificate.cert, tls_key=certificate.key)
    assert server.url == f"https://127.0.0.1:{server.port}"
    status, data = await get_json(
        server.url + TOKEN_PATH, {"key": server.api_key()}, certificate.trust()
    )
    assert status == 200
    assert data["url"] == f"wss://127.0.0.1:{server.port}/session"


async def test_python_client_connects_over_wss_trusting_the_certificate(
    start_server: ServerFactory, certificate: Certificate
) -> None:
    """Scene(ssl=context) fetches its token over https and connects over wss to Connected."""
    server = await start_server(tls_cert=certificate.cert, tls_key=certificate.key)
    scene = Scene(
        server.api_key(),
        requested_media_devices={},
        required_media_devices={},
        play_audio=False,
        ssl=certificate.trust(),
    )
    names: list[str] = []
    scene.connection_state.on_connection_state_updated.add_listener(
        lambda state: names.append(state.name)
    )
    session_id = await scene.connect()
    try:
        assert names[-1] == "Connected"
        assert list(server.state.sessions) == [session_id]
    finally:
        await scene.disconnect()


async def test_python_client_refuses_an_untrusted_certificate(
    start_server: ServerFactory, certificate: Certificate
) -> None:
    """Without a context that trusts it, a self-signed certificate fails serverConnectionFailed."""
    server = await start_server(tls_cert=certificate.cert, tls_key=certificate.key)
    scene = Scene(
        server.api_key(), requested_media_devices={}, required_media_devices={}, play_audio=False
    )
    with pytest.raises(ServerConnectionFailed) as raised:
        await scene.connect()
    assert raised.value.name == "serverConnectionFailed"
    assert "CERTIFICATE_VERIFY_FAILED" in raised.value.message
    assert server.state.sessions == {}


async def run_connect(api_key: str, environ: dict[str, str]) -> tuple[int | None, str, str]:
    """``dpkit connect KEY --json`` for a moment, with no devices, in this environment."""
    process = await spawn_dpkit(
        "connect", api_key, "--json", "--duration", "0.2", *NO_MEDIA_ARGS, environ=environ
    )
    async with asyncio.timeout(30 * UNIT):
        out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def test_dpkit_connect_trusts_the_certificate_named_by_ssl_cert_file(
    start_server: ServerFactory, certificate: Certificate
) -> None:
    """The CLI verifies with OpenSSL's defaults: SSL_CERT_FILE=<cert> lets it connect over wss."""
    server = await start_server(tls_cert=certificate.cert, tls_key=certificate.key)
    environ = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    code, out, err = await run_connect(server.api_key(), environ)
    assert code == 1
    assert "serverConnectionFailed" in out + err
    assert "CERTIFICATE_VERIFY_FAILED" in out + err
    code, out, err = await run_connect(
        server.api_key(), {**environ, "SSL_CERT_FILE": str(certificate.cert)}
    )
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    connected = next(e for e in events if e["event"] == "connected")
    assert connected["sessionId"] in [info.session_id for info in server.state.ended]


async def test_plain_http_on_the_tls_port_gets_nothing(
    start_server: ServerFactory, certificate: Certificate
) -> None:
    """An http request to the TLS port is never answered in plaintext: the connection drops."""
    server = await start_server(tls_cert=certificate.cert, tls_key=certificate.key)
    with pytest.raises(aiohttp.ClientError):
        await get_json(plain(server) + TOKEN_PATH, {"key": server.api_key()})
    # ... and the server still serves https afterwards.
    status, _ = await get_json(
        server.url + TOKEN_PATH, {"key": server.api_key()}, certificate.trust()
    )
    assert status == 200


def bad_tls_files(tmp_path: Path, certificate: Certificate) -> dict[str, tuple[Path, Path, Path]]:
    """(certificate, key, the file the error must name) for each way the files can be wrong."""
    other_key = tmp_path / "other.key"
    write_key(other_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {
        "missing certificate": (tmp_path / "nope.crt", certificate.key, tmp_path / "nope.crt"),
        "missing key": (certificate.cert, tmp_path / "nope.key", tmp_path / "nope.key"),
        "key of another certificate": (certificate.cert, other_key, other_key),
        "not PEM": (garbage, certificate.key, garbage),
    }


@pytest.mark.parametrize(
    "case", ["missing certificate", "missing key", "key of another certificate", "not PEM"]
)
async def test_bad_certificate_files_stop_the_start_with_a_configuration_error(
    tmp_path: Path, certificate: Certificate, case: str
) -> None:
    """A missing file, a key not matching the certificate, or junk: ConfigurationError naming it."""
    cert, key, culprit = bad_tls_files(tmp_path, certificate)[case]
    settings = make_settings(tmp_path / "data", tls_cert=cert, tls_key=key)
    with pytest.raises(ConfigurationError) as raised:
        async with DpkitServer(settings):
            pass
    assert str(culprit) in raised.value.message
    # Nothing from ssl or the file system is chained on: the message is all the operator sees.
    error = raised.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


async def test_dpkit_serve_with_a_missing_key_says_so_without_a_traceback(
    tmp_path: Path, certificate: Certificate
) -> None:
    """`dpkit serve --tls-key MISSING` exits 2 with one line naming the file, no traceback."""
    missing = tmp_path / "missing.key"
    process = await spawn_dpkit(
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--tls-cert",
        str(certificate.cert),
        "--tls-key",
        str(missing),
        stderr=asyncio.subprocess.STDOUT,
        columns=400,
    )
    async with asyncio.timeout(30 * UNIT):
        output, _ = await process.communicate()
    text = output.decode()
    assert process.returncode == 2, text
    assert "configurationError" in text
    assert str(missing) in text
    assert "Traceback" not in text


def test_certificate_without_key_is_refused_by_settings(certificate: Certificate) -> None:
    """tls_cert and tls_key go together: either one alone is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="tls_cert and tls_key go together"):
        Settings(tls_cert=certificate.cert)
    with pytest.raises(ConfigurationError, match="tls_cert and tls_key go together"):
        Settings(tls_key=certificate.key)


def test_tls_files_come_from_the_environment_and_the_command_line(
    certificate: Certificate,
) -> None:
    """DPKIT_TLS_CERT/DPKIT_TLS_KEY and --tls-cert/--tls-key/--trusted-proxy reach Settings."""
    environ = {"DPKIT_TLS_CERT": str(certificate.cert), "DPKIT_TLS_KEY": str(certificate.key)}
    from_env = Settings.load(environ=environ)
    assert (from_env.tls_cert, from_env.tls_key, from_env.tls) == (
        certificate.cert,
        certificate.key,
        True,
    )
    argv = ["serve", "--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key)]
    argv += ["--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8"]
    from_cli = settings_from(build_parser().parse_args(argv))
    assert (from_cli.tls_cert, from_cli.tls_key) == (certificate.cert, certificate.key)
    assert from_cli.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")


async def test_dpkit_serve_with_tls_keys_in_its_config_file_serves_https(
    tmp_path: Path, certificate: Certificate
) -> None:
    """A `dpkit serve` process given tls_cert/tls_key in TOML announces https and answers wss."""
    async with served(
        tmp_path / "served", tls_cert=str(certificate.cert), tls_key=str(certificate.key)
    ) as process:
        assert process.url.startswith("https://127.0.0.1:")
        status, data = await get_json(
            process.url + TOKEN_PATH, {"key": process.api_key()}, certificate.trust()
        )
        assert status == 200
        assert data["url"] == process.url.replace("https://", "wss://") + "/session"
        assert "warning" not in process.log()


# --- behind a reverse proxy ------------------------------------------------------------------


async def test_trusted_proxy_headers_name_the_public_socket_url(
    start_server: ServerFactory,
) -> None:
    """From a trusted proxy, X-Forwarded-Proto/Host make the socket URL wss://<that host>."""
    server = await start_server(trusted_proxies=("127.0.0.1",))
    assert (await token(server, PROXIED))["url"] == "wss://dp.example.com/session"
    # Without the headers the same server names its own address.
    assert (await token(server))["url"] == f"ws://127.0.0.1:{server.port}/session"


@pytest.mark.parametrize("trusted", [(), ("10.0.0.0/8",)], ids=["no proxies", "other network"])
async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    start_server: ServerFactory, trusted: tuple[str, ...]
) -> None:
    """X-Forwarded-* from a peer not in trusted_proxies change nothing: ws://<own address>."""
    server = await start_server(trusted_proxies=trusted)
    answer = await token(server, PROXIED)
    assert answer["url"] == f"ws://127.0.0.1:{server.port}/session"


async def test_public_url_wins_over_the_host_and_the_proxy_headers(
    start_server: ServerFactory,
) -> None:
    """public_url names the socket URL whatever the Host and X-Forwarded-* headers say."""
    server = await start_server(
        trusted_proxies=("127.0.0.1",), public_url="https://public.example.org"
    )
    assert (await token(server, PROXIED))["url"] == "wss://public.example.org/session"
    assert (await token(server))["url"] == "wss://public.example.org/session"
    assert server.url == "https://public.example.org"


@pytest.mark.parametrize("path", ["/api/page-config", "/api/jwt"])
async def test_page_endpoints_behind_a_proxy_know_the_public_origin(
    start_server: ServerFactory, path: str
) -> None:
    """Via a trusted proxy the page's own origin is the public one; any other origin gets 403."""
    server = await start_server(trusted_proxies=("127.0.0.1",))
    url = plain(server) + path
    status, data = await get_json(url, {**PROXIED, "Origin": "https://dp.example.com"})
    assert status == 200, data
    if path == "/api/page-config":
        assert decode_api_key(data["apiKey"]).auth_server == "https://dp.example.com/api/token"
    else:
        assert data["url"] == "wss://dp.example.com/session"
    status, data = await get_json(url, {**PROXIED, "Origin": "https://evil.example"})
    assert status == 403
    assert "evil.example" in data["error"]


async def test_page_endpoints_without_a_trusted_proxy_refuse_the_claimed_origin(
    start_server: ServerFactory,
) -> None:
    """The same request from an untrusted peer: its own origin is http://127.0.0.1, so 403."""
    server = await start_server()
    status, _ = await get_json(
        plain(server) + "/api/page-config", {**PROXIED, "Origin": "https://dp.example.com"}
    )
    assert status == 403


# --- the client address behind a proxy: per-address socket limits ------------------------------


@asynccontextmanager
async def session_socket(
    server: DpkitServer, forwarded_for: str
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A session socket opened with a fresh token, sent as from ``X-Forwarded-For``."""
    answer = await token(server)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"ws://127.0.0.1:{server.port}/session",
            params={"access_token": answer["jwt"]},
            headers={"X-Forwarded-For": forwarded_for},
        ) as ws,
    ):
        yield ws


async def first_frame(ws: aiohttp.ClientWebSocketResponse) -> Frame | None:
    """The first frame that is not one of dpkit's progress reports (None: the socket closed)."""
    while True:
        message = await asyncio.wait_for(ws.receive(), 10 * UNIT)
        if message.type is not aiohttp.WSMsgType.TEXT:
            return None
        frame = parse_frame(message.data)
        if not isinstance(frame, DpkitEvent):
            return frame


async def frames_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[Frame]:
    frames = []
    while (frame := await first_frame(ws)) is not None:
        frames.append(frame)
    return frames


async def test_trusted_proxy_forwarded_for_is_the_client_address_for_limits(
    start_server: ServerFactory,
) -> None:
    """Via a trusted proxy, max_sockets_per_address counts X-Forwarded-For's address."""
    server = await start_server(trusted_proxies=("127.0.0.1",), max_sockets_per_address=1)
    async with (
        session_socket(server, "203.0.113.1") as first,
        session_socket(server, "203.0.113.2") as second,
    ):
        assert isinstance(await first_frame(first), Established)
        assert isinstance(await first_frame(second), Established)
        async with session_socket(server, "203.0.113.1") as third:
            assert await frames_until_closed(third) == [Close("tooManySockets")]
    assert server.state.refusals["max_sockets_per_address"] == 1


async def test_untrusted_forwarded_for_is_ignored_for_limits(
    start_server: ServerFactory,
) -> None:
    """From an untrusted peer, two different X-Forwarded-For are one address: the second refused."""
    server = await start_server(max_sockets_per_address=1)
    async with session_socket(server, "203.0.113.1") as first:
        assert isinstance(await first_frame(first), Established)
        async with session_socket(server, "203.0.113.2") as second:
            assert await frames_until_closed(second) == [Close("tooManySockets")]
    assert server.state.refusals["max_sockets_per_address"] == 1


# --- the banner's warning ------------------------------------------------------------------------


def test_plain_http_on_a_network_address_is_warned_about(tmp_path: Path) -> None:
    """Off loopback with neither TLS nor a trusted proxy: a warning that points at TLS."""
    cert, key = tmp_path / "a.crt", tmp_path / "a.key"  # not read: only the banner is asked
    assert len(network_warnings(Settings(host="0.0.0.0"))) == 1
    assert "https" in network_warnings(Settings(host="192.0.2.10"))[0]
    assert network_warnings(Settings(host="0.0.0.0", tls_cert=cert, tls_key=key)) == []
    assert network_warnings(Settings(host="0.0.0.0", trusted_proxies=("127.0.0.1",))) == []
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert network_warnings(Settings(host=loopback)) == [], loopback


async def test_served_on_loopback_the_banner_has_no_warning(tmp_path: Path) -> None:
    """A real `dpkit serve` on 127.0.0.1 over plain http prints its banner with no warning."""
    async with served(tmp_path / "served") as process:
        assert process.url.startswith("http://127.0.0.1:")
        assert "dpkit serve on" in process.log()
        assert "warning" not in process.log()
