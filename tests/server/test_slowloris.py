"""Slow and many connections: half-sent requests cannot use up the server or flood its log."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from pathlib import Path

import aiohttp

from tests.raw_client import raw_client
from tests.served import ServedProcess, served
from tests.support import UNIT

HALF_A_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"


def limit_open_files_to_1024() -> None:
    """In the server process, before it starts: the open-file limit the issue measured with."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def allow_many_open_files() -> None:
    """In this process: enough descriptors for the attacker's connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))


async def half_open(server: ServedProcess, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections from 127.0.0.1, each with a request that never finishes."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    writers = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(HALF_A_REQUEST)
            writers.append(writer)
    return writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_1100_half_open_requests_do_not_stop_an_honest_client(tmp_path: Path) -> None:
    """1,100 half-sent requests under a 1,024 open-file limit; another client still connects."""
    allow_many_open_files()
    async with served(
        tmp_path, preexec_fn=limit_open_files_to_1024, http_header_timeout_s=30 * UNIT
    ) as server:
        size_before = server.log_path.stat().st_size
        writers = await half_open(server, 1100)
        try:
            started = time.monotonic()
            async with raw_client(server, local_address="127.0.0.2") as honest:
                await honest.connect()
            connect_s = time.monotonic() - started
            async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as reply:
                # From the attacker's own address: refused at the door, at once and politely.
                assert reply.status == 503
                assert "max_connections_per_address" in (await reply.json())["error"]
        finally:
            await close_all(writers)
        log = server.log()
        log_growth = server.log_path.stat().st_size - size_before
    assert len(writers) == 1100
    assert connect_s < 10 * UNIT
    assert "Too many open files" not in log
    assert "Traceback" not in log
    assert log_growth < 20_000, log[-3000:]  # a few lines, not one per refused connection
    assert "max_connections_per_address" in log


async def test_a_request_whose_headers_never_finish_is_closed(tmp_path: Path) -> None:
    """A connection that does not finish its headers within http_header_timeout_s is closed."""
    async with served(tmp_path, http_header_timeout_s=0.5 * UNIT) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(HALF_A_REQUEST)
        started = time.monotonic()
        closed = await asyncio.wait_for(reader.read(), 10 * UNIT)
        waited = time.monotonic() - started
        writer.close()
    assert closed == b""  # closed without an answer
    assert 0.4 * UNIT < waited < 5 * UNIT


async def test_past_the_connection_limit_the_answer_is_503(tmp_path: Path) -> None:
    """Past max_connections (from any addresses) a new connection is answered 503 and closed."""
    async with served(tmp_path, max_connections=20, http_header_timeout_s=30 * UNIT) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        writers = []
        for n in range(20):
            _reader, writer = await asyncio.open_connection(
                host, int(port), local_addr=(f"127.0.1.{n + 1}", 0)
            )
            writer.write(HALF_A_REQUEST)
            writers.append(writer)
        await asyncio.sleep(0.2 * UNIT)
        try:
            connector = aiohttp.TCPConnector(local_addr=("127.0.2.1", 0))
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.get(server.url + "/metrics") as reply,
            ):
                assert reply.status == 503
                assert "max_connections" in (await reply.json())["error"]
        finally:
            await close_all(writers)
