"""The server application: built by a factory from settings, started and stopped by one lifespan.

:func:`create_app` returns an aiohttp application whose lifespan builds the
:class:`~dpkit.server.state.ServerState` at start-up and, at shutdown, refuses new sessions,
ends the live ones with ``close {reason: "normal"}`` and waits (bounded) for them.

Before serving, the lifespan also puts the journal right: it ends with ``serverRestart`` the
sessions a killed earlier run of this node left live, and prunes the sessions past
``journal_retention_days`` (then hourly, from a task it owns).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from dpkit.collector import freeze_heap
from dpkit.server.admin import add_admin_routes
from dpkit.server.assets import AssetCache
from dpkit.server.cluster.events import CloseSession, ClusterEvents
from dpkit.server.cluster.membership import UP, Load, Membership
from dpkit.server.cluster.placement import Placement
from dpkit.server.cluster.queue import ClusterQueue
from dpkit.server.endpoints import add_routes, cors_middleware
from dpkit.server.fanout import FanOutJournal
from dpkit.server.feed import StateFeed
from dpkit.server.journal import SqliteJournal
from dpkit.server.journal_upkeep import end_sessions_left_live, prune_journal, prune_periodically
from dpkit.server.keys import KeyStore
from dpkit.server.metrics import SessionMetrics
from dpkit.server.page import add_page_routes
from dpkit.server.persistence import DetachedSessions
from dpkit.server.pool import DigitalPersonPool
from dpkit.server.quotas import ConcurrencyQuota, RateLimiter
from dpkit.server.refusals import Refusals
from dpkit.server.settings import Settings
from dpkit.server.state import REFUSALS, STATE, ServerState
from dpkit.server.tokens import TokenSigner
from dpkit.server.web_sdk import WebSdkProvider
from dpkit.server.webhooks import Webhooks
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server")

SHUTDOWN_GRACE_S = 5.0


def build_state(settings: Settings, refusals: Refusals | None = None) -> ServerState:
    # First: a web_sdk_dir without the SDK in it stops the start before anything is written.
    web_sdk = WebSdkProvider.for_settings(
        settings.web_sdk_dir,
        settings.data_dir,
        settings.npm_registry,
        serve_page=settings.serve_page,
    )
    keys = KeyStore.load_or_create(settings.data_dir)
    signer = TokenSigner(keys.signing_secret)
    pool = DigitalPersonPool(
        settings.capacity,
        settings.persona,
        max_queue=settings.queue_max_length,
        max_wait_s=settings.queue_max_wait_s,
    )
    store = SqliteJournal.in_data_dir(settings.data_dir)
    feed = StateFeed()
    metrics = SessionMetrics(lambda: pool.queue_length)
    return ServerState(
        settings=settings,
        keys=keys,
        signer=signer,
        pool=pool,
        journal=FanOutJournal([store, feed, metrics]),
        store=store,
        feed=feed,
        metrics=metrics,
        webhooks=Webhooks(
            feed,
            settings.webhook_urls,
            settings.webhook_secret or keys.webhook_secret,
        ),
        assets=AssetCache(
            settings.data_dir / "assets",
            max_manifest_bytes=settings.max_manifest_bytes,
            max_asset_bytes=settings.max_asset_bytes,
        ),
        detached=DetachedSessions(pool, settings.resume_window_s),
        membership=_membership(settings, pool, keys, signer),
        placement=Placement(settings.node_id),
        web_sdk=web_sdk,
        sockets_per_key=ConcurrencyQuota(settings.max_sockets_per_key),
        sockets_per_address=ConcurrencyQuota(settings.max_sockets_per_address),
        token_rate=RateLimiter(settings.rate_per_address, settings.rate_burst),
        socket_rate=RateLimiter(settings.rate_per_address, settings.rate_burst),
        refusals=refusals or Refusals(),
    )


def _membership(
    settings: Settings, pool: DigitalPersonPool, keys: KeyStore, signer: TokenSigner
) -> Membership | None:
    """The node's cluster membership, when it has a Redis; started once it listens."""
    if not settings.redis_url:
        return None

    def local_secrets() -> dict[str, str]:
        return {"signing": keys.signing_secret.hex(), "admin": keys.admin_token}

    def adopt(shared: dict[str, str]) -> None:
        try:
            signing = bytes.fromhex(shared["signing"])
            admin = shared["admin"]
        except (KeyError, ValueError):
            logger.error("cluster: the shared secrets in Redis are damaged; keeping this node's")
            return
        if len(signing) < 16:
            logger.error("cluster: the shared signing secret is too short; keeping this node's")
            return
        if keys.adopt(signing, admin, keys.webhook_secret):
            signer.rekey(signing)
            logger.info("cluster: took the cluster's signing secret and admin token (keys.json)")

    membership = Membership(
        settings.redis_url,
        settings.node_id,
        lambda: Load(pool.capacity, pool.in_use, pool.queue_length),
        heartbeat_s=settings.cluster_heartbeat_s,
        expiry_s=settings.cluster_expiry_s,
        local_secrets=local_secrets,
        adopt_secrets=adopt,
        keys=keys,
    )
    pool.on_change = membership.beat_soon
    return membership


def _cluster_queue(state: ServerState) -> ClusterQueue | None:
    """The node's part in the cluster's queue; started once the node listens."""
    membership = state.membership
    if membership is None:
        return None

    async def capacity() -> int:
        return sum(node.capacity for node in await membership.nodes())

    return ClusterQueue(
        state.settings.redis_url,
        state.settings.node_id,
        state.pool,
        up=lambda: membership.status == UP,
        capacity=capacity,
    )


def _closer(state: ServerState) -> CloseSession:
    """Ends a live session of this node that another node was asked to close."""

    async def close(session_id: str, reason: str) -> bool:
        session = state.sessions.get(session_id)
        if session is None:
            return False
        await session.end(reason)
        return True

    return close


def create_app(settings: Settings) -> web.Application:
    """The aiohttp application for ``settings``."""
    app = web.Application(middlewares=[cors_middleware])
    app[REFUSALS] = Refusals()
    add_routes(app)
    add_admin_routes(app)
    if settings.serve_page:
        add_page_routes(app)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        state = build_state(settings, app[REFUSALS])
        app[STATE] = state
        now = time.time()
        end_sessions_left_live(state, now)
        prune_journal(state, now)
        state.webhooks.start()
        if settings.redis_url:
            state.cluster_events = ClusterEvents(
                settings.redis_url, settings.node_id, state.feed, _closer(state)
            )
            state.cluster_events.start()
            state.cluster_queue = _cluster_queue(state)
        journal_tasks = TaskOwner("journal")
        journal_tasks.spawn(prune_periodically(state), "prune")
        # Awaited, not cancelled, at the end: a worker half started would be left behind.
        warming = asyncio.create_task(state.pool.warm(), name="warm-encoding")
        logger.info("serving %d Digital Person(s) of %s", settings.capacity, settings.persona.name)
        # Everything start-up built lives as long as the server: out of the collector's full
        # passes, which would otherwise walk it in the middle of connects (dpkit.collector).
        frozen = freeze_heap()
        logger.debug("%d objects of start-up frozen out of garbage collection", frozen)
        yield
        await warming
        await journal_tasks.close()
        if state.cluster_queue is not None:
            await state.cluster_queue.close()  # this node's waiters out of the cluster's queue
        if state.membership is not None:
            await state.membership.close()  # out of the cluster before the sessions end
        if state.cluster_events is not None:
            await state.cluster_events.close()
        # Normally a no-op by now: on_shutdown below already ended the sessions.
        await shutdown(state)
        await state.detached.close()
        await state.pool.close()
        await state.webhooks.close()
        await state.web_sdk.close()
        state.journal.close()

    async def end_sessions(app: web.Application) -> None:
        # aiohttp runs on_shutdown while sockets are still open, and cancels the handlers of
        # those still open right after: sessions must say goodbye here, not in the cleanup.
        await shutdown(app[STATE])
        # A page request waiting for the Web SDK's fetch gets its answer now, not at the timeout.
        await app[STATE].web_sdk.close()

    app.cleanup_ctx.append(lifespan)
    app.on_shutdown.append(end_sessions)
    return app


async def shutdown(state: ServerState) -> None:
    """Refuse new sessions, end the live ones with a reason, and wait for them (bounded)."""
    state.closing = True
    live = [session for session in state.live if not session.finished.is_set()]
    if not live:
        return
    logger.info("shutting down: ending %d session(s)", len(live))
    await asyncio.gather(*(session.end("normal") for session in live), return_exceptions=True)
    waiters = [asyncio.ensure_future(session.finished.wait()) for session in live]
    _done, pending = await asyncio.wait(waiters, timeout=SHUTDOWN_GRACE_S)
    for waiter in pending:
        waiter.cancel()
    if pending:
        logger.warning("shutdown: %d session(s) did not end in time", len(pending))
