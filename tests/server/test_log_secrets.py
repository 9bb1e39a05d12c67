"""No secret reaches the server's log, at any level: a real dpkit serve run at DEBUG, read whole."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiohttp
from aiohttp import web

from dpkit import Scene
from tests.raw_client import RawClient, token_for
from tests.served import ServedProcess, served
from tests.support import UNIT, serving, until


async def test_no_secret_in_the_log_at_debug(tmp_path: Path) -> None:
    """Tokens, keys, the admin token and every server secret stay out of a DEBUG log."""
    hooks: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        hooks.append(await request.read())
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    async with (
        serving(receiver) as base,
        served(
            tmp_path, log_level="DEBUG", webhook_urls=[base + "/hook"], log_to_server=True
        ) as server,
    ):
        secrets = await exercise_every_credential(server)
        await until(lambda: len(hooks) >= 3)
        keys = json.loads((server.data_dir / "keys.json").read_text())
        secrets += [
            keys["signingSecret"],
            keys["adminToken"],
            keys["webhookSecret"],
            *(key["secret"] for key in keys["keys"]),
            server.api_key(),
        ]
    log = server.log()
    assert "DEBUG" in log  # the log really is at DEBUG
    assert "access_token=REDACTED" in log
    assert "token=REDACTED" in log
    for secret in secrets:
        assert len(secret) >= 16
        assert secret not in log, f"a secret is in the log: {secret[:6]}..."
    # The key's secret is also inside the API key's base64; no part of it may leak either.
    decoded = base64.b64decode(server.api_key()).decode()
    assert json.loads(decoded)["secret"] not in log


async def exercise_every_credential(server: ServedProcess) -> list[str]:
    """Use each credential the way a client does; return the secrets that went over the wire."""
    used: list[str] = []
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    async with aiohttp.ClientSession() as http:
        token = await token_for(http, server)
        used.append(token["jwt"])
        bearer = {"Authorization": f"Bearer {token['jwt']}"}
        async with http.get(server.url + "/api/telemetry/jwt", headers=bearer) as reply:
            telemetry = (await reply.json())["telemetryJwt"]
            used.append(telemetry)
        async with http.post(
            server.url + "/api/telemetry/v1/traces",
            headers={"Authorization": f"Bearer {telemetry}"},
            json={"resourceSpans": []},
        ) as reply:
            assert reply.status == 200
        async with http.ws_connect(token["url"], params={"access_token": token["jwt"]}) as ws:
            client = RawClient(ws)
            try:
                await client.connect()
                await client.send(
                    json.dumps(
                        {
                            "category": "diagnostics",
                            "kind": "event",
                            "name": "log",
                            "body": {"name": "browser", "text": ["a browser log line"]},
                        }
                    )
                )
            finally:
                await client.pc.close()
        async with http.get(
            server.url + "/api/events", params={"token": server.admin_token}
        ) as events:
            assert events.status == 200
            scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
            session_id = await scene.connect()
            async with http.get(server.url + "/api/sessions", headers=admin) as reply:
                assert reply.status == 200
            async with http.post(
                server.url + f"/api/sessions/{session_id}/close", headers=admin
            ) as reply:
                assert reply.status == 200
            await asyncio.wait_for(events.content.readline(), 5 * UNIT)
        await scene.disconnect()
    return used
