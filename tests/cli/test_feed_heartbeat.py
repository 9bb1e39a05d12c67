"""The admin event stream when its reader leaves: no traceback at the next heartbeat."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.served import served
from tests.support import UNIT, until

READER_LEFT = "event stream reader left"


@pytest.mark.parametrize("leave", ["close", "abort"])
async def test_a_reader_that_leaves_costs_no_traceback(tmp_path: Path, leave: str) -> None:
    """A raw /api/events reader hears heartbeats, then closes (FIN) or aborts (RST): no ERROR."""
    async with served(tmp_path, log_level="DEBUG", feed_heartbeat_s=0.2 * UNIT) as server:
        address = urlsplit(server.url)
        assert address.hostname is not None
        assert address.port is not None
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        request = (
            f"GET /api/events HTTP/1.1\r\nHost: {address.netloc}\r\n"
            f"Authorization: Bearer {server.admin_token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        async with asyncio.timeout(10 * UNIT):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            # Three heartbeats reach us: the stream outlives its quiet spells before we leave.
            beats = 0
            while beats < 3:
                beats += b"keep-alive" in await reader.readuntil(b"\n\n")
        if leave == "abort":
            writer.transport.abort()
        else:
            writer.close()
        await writer.wait_closed()
        # The server notices at its next heartbeat and says so at DEBUG; a failure would log
        # an ERROR with a traceback instead.
        await until(
            lambda: READER_LEFT in server.log() or "Traceback" in server.log(), within=10 * UNIT
        )
    log = server.log()
    assert READER_LEFT in log
    assert "Traceback" not in log
    assert " ERROR " not in log
