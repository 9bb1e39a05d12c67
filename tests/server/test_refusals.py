"""Refusals are counted by limit, summed up in the log at most every few seconds, and exported."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dpkit.server.refusals import Refusals
from tests.support import ServerFactory


def test_a_flood_of_refusals_writes_one_warning_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """10,000 refusals in one interval: one WARNING naming the limits; the next interval another."""
    now = [0.0]
    refusals = Refusals(every_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="dpkit.server.limits"):
        for n in range(10_000):
            refusals.refuse("rate_token" if n % 2 else "origin", f"request {n}")
        now[0] = 10.5
        refusals.refuse("origin", "the last one")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[1] == "refused by limits: origin 5000, rate_token 5000; the last: the last one"
    assert (refusals["origin"], refusals["rate_token"], refusals["unknown"]) == (5001, 5000, 0)
    assert list(refusals) == ["origin", "rate_token"]


async def test_refusals_are_exported_in_the_metrics(start_server: ServerFactory) -> None:
    """/metrics has dpkit_refusals_total by limit, readable by Prometheus's own parser."""
    server = await start_server(rate_per_address=0.001, rate_burst=1)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(server.url + "/api/token", headers={"key": server.api_key()}):
                pass
        async with http.get(server.url + "/metrics") as reply:
            text = await reply.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    [sample] = families["dpkit_refusals"].samples
    assert (sample.labels, sample.value) == ({"limit": "rate_token"}, 2.0)
