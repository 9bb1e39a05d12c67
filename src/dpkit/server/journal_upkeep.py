"""Keeping the session journal right over a server's life: after a crash, and as it grows.

Before serving, the lifespan ends with ``serverRestart`` the sessions a killed earlier run of
this node left live, and prunes the sessions past ``journal_retention_days``; then it prunes
hourly from a task it owns.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from dpkit.server.state import ServerState

logger = logging.getLogger("dpkit.server")

#: How often the journal is pruned, after the prune at start (seconds).
JOURNAL_PRUNE_INTERVAL_S = 3600.0
#: The ending given at start to the sessions a killed earlier run of this node left live.
SERVER_RESTART = "serverRestart"


def end_sessions_left_live(state: ServerState, now: float) -> int:
    """End with ``serverRestart`` the sessions this node's earlier run left live; how many.

    A server that was killed (SIGKILL, power loss) never wrote their endings, so they would stay
    live in the journal for ever. Called before serving, so none of these rows is a session of
    this run. Only this node's rows: in a shared data directory, other nodes end their own.
    """
    left = state.store.unended(state.settings.node_id)
    for socket_id in left:
        record = state.store.show(socket_id)
        events = () if record is None else record.events
        connected = any(event.kind == "state" and event.detail == "Connected" for event in events)
        state.metrics.ended_in_earlier_run(SERVER_RESTART, connected=connected)
        state.journal.ended(socket_id, SERVER_RESTART, now)
    if left:
        logger.info(
            "journal: ended %d session(s) left live by an earlier run (%s)",
            len(left),
            SERVER_RESTART,
        )
    return len(left)


def prune_journal(state: ServerState, now: float) -> int:
    """Delete the sessions that ended more than ``journal_retention_days`` ago; how many."""
    days = state.settings.journal_retention_days
    pruned = state.store.prune(retention_days=days, now=now)
    if pruned:
        logger.info(
            "journal: pruned %d session(s) that ended more than %g day(s) ago", pruned, days
        )
    return pruned


async def prune_periodically(
    state: ServerState, interval_s: float = JOURNAL_PRUNE_INTERVAL_S
) -> None:
    """Prune the journal every ``interval_s``, so a server that runs for months stays bounded."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            prune_journal(state, time.time())
        except sqlite3.Error:
            # A busy or damaged file this time must not end pruning for the rest of the run.
            logger.exception("journal: prune failed")
