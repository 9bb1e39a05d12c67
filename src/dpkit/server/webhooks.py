"""Webhooks: every feed event POSTed to configured URLs, signed with HMAC-SHA256 and retried.

Each URL gets its own delivery task, in feed order. The body is the event's JSON; the header
``X-Dpkit-Signature: sha256=<hex>`` is the HMAC of that body with the webhook secret, so the
receiver can check it came from this server. A failed delivery (a network error or a non-2xx
answer) is retried with a doubling delay, then dropped with a warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging

import aiohttp

from dpkit.server.feed import FeedEvent, StateFeed
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server.webhooks")

ATTEMPTS = 4
FIRST_DELAY_S = 0.2
REQUEST_TIMEOUT_S = 5.0


def signature(secret: str, body: bytes) -> str:
    """The ``X-Dpkit-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    """Delivers the feed to each URL until :meth:`close`."""

    def __init__(self, feed: StateFeed, urls: tuple[str, ...], secret: str) -> None:
        self._feed = feed
        self._urls = urls
        self._secret = secret
        self._tasks = TaskOwner("webhooks")
        self.delivered = 0
        self.dropped = 0

    def start(self) -> None:
        for url in self._urls:
            self._tasks.spawn(self._deliver_to(url), f"webhook {url}")

    async def _deliver_to(self, url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async for event in self._feed.subscribe():
                await self._post(http, url, event)

    async def _post(self, http: aiohttp.ClientSession, url: str, event: FeedEvent) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Dpkit-Event": str(event.get("type")),
            "X-Dpkit-Signature": signature(self._secret, body),
        }
        delay = FIRST_DELAY_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with http.post(url, data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            if attempt < ATTEMPTS:
                logger.info("webhook %s: %s; retrying in %.1f s", url, problem, delay)
                await asyncio.sleep(delay)
                delay *= 2
        self.dropped += 1
        logger.warning(
            "webhook %s: dropped event %s after %d attempts", url, event["seq"], ATTEMPTS
        )

    async def close(self) -> None:
        await self._tasks.close()
