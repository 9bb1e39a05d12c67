"""Credentials are not handed out: origins per key, one client per token, admin and webhook keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dpkit import Scene
from dpkit.protocol.messages import Close, Established
from dpkit.server import DpkitServer
from dpkit.server.keys import KeyStore, option_safe_token
from dpkit.server.webhooks import signature
from tests.raw_client import RawClient, socket_with, token_for
from tests.support import ServerFactory, serving, until

ELSEWHERE = "https://evil.example"


async def get_json(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with http.get(url, headers=headers or {}) as reply:
        data: dict[str, Any] = await reply.json()
        return reply.status, data


# --- tokens -------------------------------------------------------------------------------------


async def open_socket(http: aiohttp.ClientSession, token: dict[str, Any]) -> Any:
    return await http.ws_connect(token["url"], params={"access_token": token["jwt"]})


async def test_a_token_opens_one_socket_at_a_time(server: DpkitServer) -> None:
    """A second socket on a token whose first socket is still open gets 401."""
    async with aiohttp.ClientSession() as http:
        token = await token_for(http, server)
        first = await open_socket(http, token)
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await open_socket(http, token)
            assert refused.value.status == 401
            assert server.state.refusals["token_reuse"] == 1
        finally:
            await first.close()


async def test_a_token_whose_session_connected_is_spent(server: DpkitServer) -> None:
    """Once its session reached Connected, the token opens nothing more, even after it ended."""
    async with aiohttp.ClientSession() as http:
        token = await token_for(http, server)
        async with socket_with(http, token) as client:
            await client.connect()
        await until(lambda: not server.state.live)
        async with http.get(token["url"], params={"access_token": token["jwt"]}) as reply:
            assert reply.status == 401
            assert "spent" in (await reply.json())["error"]


async def test_a_refused_socket_gives_its_token_back(start_server: ServerFactory) -> None:
    """A socket refused with noScene does not spend its token: the SDK's retries reuse it."""
    server = await start_server(capacity=1, queue_max_length=0)
    holder = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    await holder.connect()
    async with aiohttp.ClientSession() as http:
        token = await token_for(http, server)
        async with await open_socket(http, token) as ws:
            assert [await RawClient(ws).receive(), await RawClient(ws).receive()] == [
                Close("noScene"),
                None,
            ]
        await holder.disconnect()
        await until(lambda: server.state.pool.in_use == 0)
        async with socket_with(http, token) as client:
            await client.connect()


# --- origins ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/jwt", "/api/page-config"])
async def test_the_page_endpoints_answer_only_the_servers_own_origin(
    server: DpkitServer, path: str
) -> None:
    """/api/jwt and /api/page-config refuse another origin and cross-site fetches (403)."""
    async with aiohttp.ClientSession() as http:
        status, data = await get_json(http, server.url + path, {"Origin": ELSEWHERE})
        assert status == 403
        assert "evil.example" in data["error"]
        assert "jwt" not in data
        assert "apiKey" not in data
        status, _ = await get_json(http, server.url + path, {"Sec-Fetch-Site": "cross-site"})
        assert status == 403
        async with http.get(server.url + path, headers={"Origin": ELSEWHERE}) as reply:
            assert "Access-Control-Allow-Origin" not in reply.headers
        for same in ({"Origin": server.url}, {"Sec-Fetch-Site": "same-origin"}, {}):
            status, data = await get_json(http, server.url + path, same)
            assert status == 200
            assert "jwt" in data or "apiKey" in data


async def test_the_page_key_serves_only_the_servers_own_origin(server: DpkitServer) -> None:
    """The default key's token is refused to another origin, given to the server's own page."""
    async with aiohttp.ClientSession() as http:
        token_url = server.url + "/api/token"
        status, data = await get_json(
            http, token_url, {"key": server.api_key(), "Origin": ELSEWHERE}
        )
        assert status == 403
        assert set(data) == {"error"}
        status, data = await get_json(
            http, token_url, {"key": server.api_key(), "Origin": server.url}
        )
        assert status == 200
        assert set(data) == {"url", "jwt"}


async def test_a_key_with_an_origin_list_refuses_other_origins(server: DpkitServer) -> None:
    """Only the listed origins get a token; a client that sends no Origin (not a browser) does."""
    server.state.keys.add("shop", origins=("https://shop.example:8443",))
    key = server.api_key("shop")
    async with aiohttp.ClientSession() as http:
        url = server.url + "/api/token"
        for origin, allowed in (
            ("https://shop.example:8443", True),
            ("HTTPS://SHOP.EXAMPLE:8443", True),
            ("https://shop.example", False),
            ("http://shop.example:8443", False),
            ("null", False),
            (server.url, False),
        ):
            status, data = await get_json(http, url, {"key": key, "Origin": origin})
            assert (status == 200) is allowed, (origin, data)
            assert ("jwt" in data) is allowed
        status, data = await get_json(http, url, {"key": key})
        assert status == 200


async def test_a_key_without_origins_is_for_clients_that_are_not_browsers(
    server: DpkitServer,
) -> None:
    """A key added without origins refuses every browser origin and serves Python clients."""
    server.state.keys.add("backend")
    async with aiohttp.ClientSession() as http:
        headers = {"key": server.api_key("backend"), "Origin": server.url}
        status, data = await get_json(http, server.url + "/api/token", headers)
        assert status == 403
        assert "none (no browser)" in data["error"]
    scene = Scene(server.api_key("backend"), requested_media_devices={}, required_media_devices={})
    await scene.connect()
    await scene.disconnect()


def test_keys_from_before_origin_lists_get_the_safe_default(tmp_path: Any) -> None:
    """An old keys.json: the page key gets 'self', any other key no browser origin."""
    store = KeyStore.load_or_create(tmp_path)
    store.add("kiosk", origins=("*",))
    data = json.loads((tmp_path / "keys.json").read_text())
    for item in data["keys"]:
        del item["origins"]
    del data["webhookSecret"]
    (tmp_path / "keys.json").write_text(json.dumps(data))
    again = KeyStore.load_or_create(tmp_path)
    assert {record.label: record.origins for record in again.keys} == {
        "default": ("self",),
        "kiosk": (),
    }
    assert json.loads((tmp_path / "keys.json").read_text())["webhookSecret"]


# --- the admin token and the webhook secret -----------------------------------------------------


async def test_the_admin_api_takes_a_query_token_only_for_the_event_stream(
    server: DpkitServer,
) -> None:
    """Bearer works everywhere; ?token= only on /api/events (an EventSource cannot set headers)."""
    token = server.admin_token
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/api/sessions", params={"token": token}) as reply:
            assert reply.status == 401
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.get(server.url + "/api/sessions", headers=bearer) as reply:
            assert reply.status == 200
        async with http.get(server.url + "/api/events", params={"token": token}) as reply:
            assert reply.status == 200
            assert await reply.content.readline() == b": dpkit session feed\n"


async def test_webhooks_are_signed_with_their_own_secret(start_server: ServerFactory) -> None:
    """The webhook signature uses keys.json's webhookSecret, which is not the admin token."""
    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Dpkit-Signature"]))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serving(app) as base:
        server = await start_server(webhook_urls=(base + "/hook",))
        scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
        await scene.connect()
        await scene.disconnect()
        await until(lambda: len(received) >= 2)
    secret = server.state.keys.webhook_secret
    assert secret
    assert secret != server.admin_token
    for body, signed in received:
        assert signed == signature(secret, body)
        assert signed != signature(server.admin_token, body)


# --- rates --------------------------------------------------------------------------------------


async def test_token_requests_and_new_sockets_are_rate_limited_per_address(
    start_server: ServerFactory,
) -> None:
    """Past the burst, token requests and sockets from one address get 429 naming the limit."""
    server = await start_server(rate_per_address=0.001, rate_burst=3)
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(5):
            status, data = await get_json(
                http, server.url + "/api/token", {"key": server.api_key()}
            )
            statuses.append(status)
        assert statuses == [200, 200, 200, 429, 429]
        assert "rate_per_address" in data["error"]
        for n in range(3):
            token = await token_from(server, f"127.0.0.{10 + n}")
            async with await open_socket(http, token) as ws:
                assert isinstance(await RawClient(ws).receive(), Established)
        token = await token_from(server, "127.0.0.20")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_socket(http, token)
        assert refused.value.status == 429
    assert server.state.refusals["rate_token"] == 2
    assert server.state.refusals["rate_socket"] == 1


async def token_from(server: DpkitServer, address: str) -> dict[str, Any]:
    """A token fetched from ``address``, so the sockets' own address keeps its burst."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        return await token_for(http, server)


async def test_keys_add_origin_limits_a_new_key_on_the_running_server(server: DpkitServer) -> None:
    """`dpkit keys add --origin` makes a key the running server gives only to that origin."""
    from tests.test_cli import run_cli

    data_dir = str(server.settings.data_dir)
    code, out, err = await run_cli(
        "keys", "add", "--label", "shop", "--origin", "https://shop.example", "--data-dir",
        data_dir, "--url", server.url,
    )  # fmt: skip
    assert code == 0, err
    key = "".join(out.split())
    async with aiohttp.ClientSession() as http:
        token_url = server.url + "/api/token"
        status, _ = await get_json(http, token_url, {"key": key, "Origin": "https://shop.example"})
        assert status == 200
        status, _ = await get_json(http, token_url, {"key": key, "Origin": ELSEWHERE})
        assert status == 403
    code, out, _err = await run_cli("keys", "list", "--data-dir", data_dir, "--url", server.url)
    assert "https://shop.example" in out
    code, _out, err = await run_cli("keys", "add", "--origin", "ftp://x", "--data-dir", data_dir)
    assert code == 2
    assert "not an origin" in err


async def test_the_page_of_a_server_without_keys_says_so(server: DpkitServer) -> None:
    """After ``dpkit keys remove --force`` of the last key: a 503 naming the fix, no traceback."""
    keys = server.state.keys
    for record in list(keys.keys):
        keys.remove(record.key_id)
    async with aiohttp.ClientSession() as http:
        for path in ("/api/page-config", "/api/jwt"):
            status, data = await get_json(http, server.url + path)
            assert status == 503, path
            assert "dpkit keys add" in data["error"]


def test_admin_tokens_and_webhook_secrets_can_follow_their_option_on_a_command_line(
    tmp_path: Path,
) -> None:
    """One in 64 URL-safe tokens starts with '-', which argparse takes for an option after
    ``--admin-token`` (a cluster CLI test failed on one); none is made so."""
    tokens = [option_safe_token(24) for _ in range(2000)]
    assert not [token for token in tokens if token.startswith("-")]
    assert len(set(tokens)) == len(tokens)
    assert all(len(token) == 32 for token in tokens)
    store = KeyStore.load_or_create(tmp_path)
    assert not store.admin_token.startswith("-")
    assert not store.webhook_secret.startswith("-")
