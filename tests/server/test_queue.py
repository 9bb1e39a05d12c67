"""Waiting for a Digital Person: a fair, bounded queue with positions told to each client."""

from __future__ import annotations

import asyncio

import pytest

from dpkit import ConnectionStateData, NoScene, RetryOptions, Scene
from dpkit.server import DpkitServer, PersonaSettings
from dpkit.server.pool import DigitalPersonPool
from tests.support import ServerFactory, until


def quiet_scene(server: DpkitServer) -> tuple[Scene, list[ConnectionStateData]]:
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    seen: list[ConnectionStateData] = []
    scene.connection_state.on_connection_state_updated.add_listener(seen.append)
    return scene, seen


def positions(seen: list[ConnectionStateData]) -> list[tuple[int, int]]:
    return [(d.queue.position, d.queue.size) for d in seen if d.queue is not None]


async def test_clients_wait_in_arrival_order_and_past_the_bound_get_no_scene(
    start_server: ServerFactory,
) -> None:
    """Capacity 1: B and C queue at 1 and 2, get the person in order; D past the bound: noScene."""
    server = await start_server(capacity=1, queue_max_length=2)
    a, _ = quiet_scene(server)
    b, b_seen = quiet_scene(server)
    c, c_seen = quiet_scene(server)
    d, _ = quiet_scene(server)
    await a.connect()
    b_connect = asyncio.create_task(b.connect())
    await until(lambda: server.state.pool.queue_length == 1)
    c_connect = asyncio.create_task(c.connect())
    await until(lambda: server.state.pool.queue_length == 2)
    await until(lambda: positions(c_seen) == [(2, 2)])
    assert positions(b_seen) == [(1, 1), (1, 2)]

    with pytest.raises(NoScene):
        await d.connect(retry_options=RetryOptions(max_retries=1))

    await a.disconnect()
    b_id = await b_connect
    assert not c_connect.done()
    await until(lambda: positions(c_seen) == [(2, 2), (1, 1)])
    await b.disconnect()
    c_id = await c_connect
    assert list(server.state.sessions) == [c_id]
    assert b_id != c_id
    await c.disconnect()


async def test_a_client_that_gives_up_leaves_no_trace(start_server: ServerFactory) -> None:
    """A queued client that cancels connect() is gone from the queue; the next moves up."""
    server = await start_server(capacity=1, queue_max_length=4)
    a, _ = quiet_scene(server)
    b, _ = quiet_scene(server)
    c, c_seen = quiet_scene(server)
    await a.connect()
    b_connect = asyncio.create_task(b.connect())
    await until(lambda: server.state.pool.queue_length == 1)
    c_connect = asyncio.create_task(c.connect())
    await until(lambda: positions(c_seen) == [(2, 2)])

    b_connect.cancel()
    await asyncio.gather(b_connect, return_exceptions=True)
    await until(lambda: server.state.pool.queue_length == 1)
    await until(lambda: positions(c_seen) == [(2, 2), (1, 1)])

    await a.disconnect()
    c_id = await c_connect
    assert list(server.state.sessions) == [c_id]
    assert server.state.pool.queue_length == 0
    await c.disconnect()


async def test_waiting_past_the_limit_gives_no_scene(start_server: ServerFactory) -> None:
    """A wait longer than queue_max_wait_s ends with noScene, and the queue is empty again."""
    server = await start_server(capacity=1, queue_max_wait_s=0.3)
    a, _ = quiet_scene(server)
    b, b_seen = quiet_scene(server)
    await a.connect()
    with pytest.raises(NoScene):
        await b.connect(retry_options=RetryOptions(max_retries=1))
    assert positions(b_seen) == [(1, 1)]
    assert server.state.pool.queue_length == 0
    await a.disconnect()


async def test_releasing_a_free_person_hands_it_to_nobody() -> None:
    """Release is idempotent: releasing a person no one holds (released already) must not give
    it to a waiter, or two sessions could end up holding one Digital Person."""
    pool = DigitalPersonPool(1, PersonaSettings())
    try:
        holder, first, second = object(), object(), object()
        person = pool.try_acquire(holder)
        assert person is not None
        waiting = [
            asyncio.create_task(pool.acquire(who, lambda _position: None))
            for who in (first, second)
        ]
        await until(lambda: pool.queue_length == 2)
        pool.release(person)
        await until(lambda: waiting[0].done())
        assert person.holder is first
        person.holder = None  # as if free again
        pool.release(person)
        pool.release(person)
        await asyncio.sleep(0)
        assert not waiting[1].done()
        assert pool.queue_length == 1
        waiting[1].cancel()
    finally:
        await pool.close()
