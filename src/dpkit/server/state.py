"""What the running server holds: settings, keys, the pool and the live sessions."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from dpkit.server.assets import AssetCache
from dpkit.server.cluster.events import ClusterEvents
from dpkit.server.cluster.membership import Membership
from dpkit.server.cluster.placement import Placement
from dpkit.server.cluster.queue import ClusterQueue
from dpkit.server.feed import StateFeed
from dpkit.server.journal import Journal, SqliteJournal
from dpkit.server.keys import KeyStore
from dpkit.server.metrics import SessionMetrics
from dpkit.server.persistence import DetachedSessions
from dpkit.server.pool import DigitalPersonPool
from dpkit.server.quotas import ConcurrencyQuota, RateLimiter
from dpkit.server.refusals import Refusals
from dpkit.server.settings import Settings
from dpkit.server.token_use import TokenLedger
from dpkit.server.tokens import TokenSigner
from dpkit.server.web_sdk import WebSdkProvider
from dpkit.server.webhooks import Webhooks

if TYPE_CHECKING:
    from dpkit.server.signalling import SessionInfo, SignallingSession


@dataclass
class ServerState:
    """The server's live state, built by the lifespan and dropped at shutdown."""

    settings: Settings
    keys: KeyStore
    signer: TokenSigner
    pool: DigitalPersonPool
    #: Every session happening goes here; it fans out to the store, the feed and the metrics.
    journal: Journal
    store: SqliteJournal
    feed: StateFeed
    metrics: SessionMetrics
    webhooks: Webhooks
    #: Persona asset bundles, content-addressed under the data directory.
    assets: AssetCache
    #: Persistent sessions whose client vanished, waiting for it to come back.
    detached: DetachedSessions
    #: This node's place in the cluster; None for one node alone (no ``redis_url``).
    membership: Membership | None
    #: Where this node's token endpoint sends new sessions (in a cluster).
    placement: Placement
    #: Session sockets open per API key and per client address (the limits are settings).
    sockets_per_key: ConcurrencyQuota
    sockets_per_address: ConcurrencyQuota
    #: Token requests and new sockets per second per client address.
    token_rate: RateLimiter
    socket_rate: RateLimiter
    #: The page's Web SDK: where it is served from, fetched from the registry on first need.
    web_sdk: WebSdkProvider
    #: The cluster's events, live sessions and closes; None for one node alone.
    cluster_events: ClusterEvents | None = None
    #: This node's part in the cluster's one queue; None for one node alone.
    cluster_queue: ClusterQueue | None = None
    #: Every open session socket.
    live: set[SignallingSession] = field(default_factory=set)
    #: Accepted sessions by session id.
    sessions: dict[str, SignallingSession] = field(default_factory=dict)
    #: The most recent sessions that have ended, oldest first (the journal comes later).
    ended: deque[SessionInfo] = field(default_factory=lambda: deque(maxlen=1000))
    #: Which token ids a socket holds, and which are spent.
    tokens_in_use: TokenLedger = field(default_factory=TokenLedger)
    #: Connections, requests and sockets refused, by the limit that refused them.
    refusals: Refusals = field(default_factory=Refusals)
    #: Where clients reach this node (``public_url``, else its own address once it listens).
    url: str = ""
    #: When this node started (Unix time).
    started_at: float = field(default_factory=time.time)
    telemetry_batches: int = 0
    #: Telemetry tokens handed out (the Web SDK asks for one before it opens its socket).
    telemetry_tokens: int = 0
    closing: bool = False


STATE = web.AppKey("dpkit_state", ServerState)
#: The app's refusal counts: made with the app, so the connection guard in front of it shares them.
REFUSALS = web.AppKey("dpkit_refusals", Refusals)
