"""Webhooks: feed events POSTed to a URL, HMAC-signed, retried after a failure."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from dpkit import Scene
from dpkit.server.webhooks import signature
from tests.support import ServerFactory, serving, until

SECRET = "webhook-test-secret"


class Receiver:
    """A loopback HTTP endpoint that fails its first request, then records every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        self.bad_signatures = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if request.headers.get("X-Dpkit-Signature") != signature(SECRET, body):
            self.bad_signatures += 1
            return web.Response(status=403)
        if self.requests == 1:
            return web.Response(status=503)  # the first delivery must be retried
        self.events.append(json.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hooks.handle)
    async with serving(app) as base:
        hooks.url = f"{base}/hook"
        yield hooks


async def test_every_event_is_delivered_signed_in_order(
    start_server: ServerFactory, receiver: Receiver
) -> None:
    """A session's events reach the webhook in feed order, signed, the failed first one retried."""
    server = await start_server(webhook_urls=(receiver.url,), webhook_secret=SECRET)
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    session_id = await scene.connect()
    await scene.disconnect()
    await until(lambda: any(e["type"] == "ended" for e in receiver.events))
    assert [e["type"] for e in receiver.events] == ["opened"] + ["state"] * 5 + ["ended"]
    assert [e["seq"] for e in receiver.events] == list(range(1, 8))
    assert receiver.events[-1] == {
        **receiver.events[-1],
        "sessionId": session_id,
        "reason": "normal",
    }
    assert receiver.bad_signatures == 0
    assert receiver.requests == len(receiver.events) + 1
    assert server.state.webhooks.delivered == 7
