"""A waiting socket handed to the node whose Digital Person the cluster's queue gave it.

The waiter's node signs a handover ticket (the cluster's shared signing secret) naming the
grant, the target node and what the target must know of the session (its API key, whether
persistence is allowed, the client's address, its wait), opens the target's
:data:`~dpkit.server.cluster.queue.TAKEOVER_PATH` with it, and from then on relays the client's
socket there (:mod:`dpkit.server.cluster.relay`): the client sees ``established`` from the
target, and its media flows to the target directly. Nothing is sent to the client before the
target answers, so a target that cannot be reached leaves the client waiting, none the wiser.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from dpkit.server.cluster.queue import TAKEOVER_PATH
from dpkit.server.cluster.relay import open_upstream, pipe
from dpkit.server.pool import RemoteGrant
from dpkit.server.tokens import TokenSigner

#: The token type of a handover ticket, and the header that carries it.
HANDOVER = "handover"
HANDOVER_HEADER = "X-Dpkit-Handover"
HANDOVER_TTL_S = 30.0
MAX_ADDRESS_CHARS = 64
MAX_WAIT_S = 86_400.0


@dataclass(frozen=True)
class Handover:
    """What the target node is told of the session it takes over."""

    key_id: str
    persistence: bool
    client_address: str
    token_id: str
    waited_s: float

    def claims(self, grant: RemoteGrant) -> dict[str, Any]:
        return {
            "sub": self.key_id,
            "grant": grant.grant,
            "node": grant.node,
            "persist": self.persistence,
            "addr": self.client_address[:MAX_ADDRESS_CHARS],
            "tok": self.token_id,
            "waited": round(self.waited_s, 3),
        }

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Handover:
        waited = claims.get("waited")
        return cls(
            key_id=str(claims.get("sub", ""))[:128],
            persistence=claims.get("persist") is True,
            client_address=str(claims.get("addr", ""))[:MAX_ADDRESS_CHARS],
            token_id=str(claims.get("tok", ""))[:64],
            waited_s=_seconds(waited),
        )


def _seconds(value: object) -> float:
    """A wait in seconds from a ticket: finite, not negative, at most a day."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return min(max(float(value), 0.0), MAX_WAIT_S)


def socket_base(url: str) -> str:
    """A node's public http(s) URL as the ws(s) URL its sockets are under."""
    base = url.rstrip("/").replace("https://", "wss://", 1)
    return base.replace("http://", "ws://", 1)


async def hand_over(
    client: web.WebSocketResponse,
    grant: RemoteGrant,
    handover: Handover,
    signer: TokenSigner,
    *,
    user_agent: str,
    max_msg_size: int,
    on_taken: Callable[[], Awaitable[None]],
) -> bool:
    """Relay ``client`` to the node of ``grant`` once it takes the session; ``on_taken`` runs
    when it has. False if the target could not be reached or refused (nothing was sent)."""
    ticket = signer.issue(
        handover.claims(grant), typ=HANDOVER, now=time.time(), ttl_s=HANDOVER_TTL_S
    )
    headers = {
        HANDOVER_HEADER: ticket,
        "User-Agent": user_agent[:512],
        "X-Forwarded-For": handover.client_address,
    }
    async with aiohttp.ClientSession() as http:
        upstream = await open_upstream(
            http, socket_base(grant.url) + TAKEOVER_PATH, headers, max_msg_size
        )
        if upstream is None:
            return False
        await on_taken()
        await pipe(client, upstream)
    return True
