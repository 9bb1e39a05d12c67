"""Thousands of hostile frames on session sockets, beside an honest session that must not notice."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from dpkit import Scene
from dpkit.server import DpkitServer
from dpkit.server.endpoints import TOKEN_PATH
from tests.fuzzing import FrameGenerator, FuzzDriver, FuzzStats, Listener, encode, envelope
from tests.support import UNIT, ServerFactory, make_settings, until

SEED = 20_240_611
FUZZ_FRAMES = 3000
FUZZ_SOCKETS = 4
#: The loggers whose every record is checked (and the root logger, for everything else).
LOGGERS = ("dpkit", "aiohttp", "aiortc", "aioice", "asyncio")


class VideoCounter:
    """Counts the persona's video frames a scene receives, with when each arrived."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.arrivals: list[float] = []

    @property
    def frames(self) -> int:
        return len(self.arrivals)

    async def run(self) -> None:
        async for _frame in self.scene.video_frames():
            self.arrivals.append(time.monotonic())

    def largest_gap(self, start: float, end: float) -> float:
        """The longest time (s) with no frame between ``start`` and ``end``."""
        inside = [start, *(t for t in self.arrivals if start <= t <= end), end]
        return max(later - earlier for earlier, later in itertools.pairwise(inside))


def describe(stats: FuzzStats) -> str:
    return (
        f"seed {SEED}: {stats.frames_sent} frames on {stats.sockets_opened} sockets in "
        f"{stats.elapsed_s:.1f} s; shapes {dict(stats.by_shape)}; plans {dict(stats.by_plan)}; "
        f"reached {dict(stats.reached)}; closes {dict(stats.close_reasons)}; "
        f"refused {dict(stats.refused)}; errors {dict(stats.errors)}; "
        f"bare closes {stats.bare_close_examples}"
    )


@pytest.mark.timeout(120)
async def test_fuzzed_sockets_leave_the_honest_session_the_pool_and_the_log_intact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """3000 hostile frames: the honest session keeps its video, all is released, no traceback."""
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    settings = make_settings(
        tmp_path / "data",
        capacity=3,
        rate_per_address=1000.0,
        rate_burst=1000,
        max_sockets_per_address=64,
        offer_timeout_s=3 * UNIT,
        connect_timeout_s=5 * UNIT,
        log_to_server=True,  # so the client logs the fuzzer sends are written, escaped
    )
    async with DpkitServer(settings) as server:
        scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
        disconnects: list[str] = []
        scene.on_disconnected_event.add_listener(lambda _s, _id, reason: disconnects.append(reason))
        await scene.connect()
        assert scene.session_id is not None
        honest = server.state.sessions[scene.session_id]
        video = VideoCounter(scene)
        counting = asyncio.create_task(video.run())
        try:
            await until(lambda: video.frames > 0)
            driver = FuzzDriver(
                server.url + TOKEN_PATH,
                server.api_key(),
                FrameGenerator(SEED, max_frame_bytes=settings.max_frame_bytes),
                sockets=FUZZ_SOCKETS,
                frames=FUZZ_FRAMES,
                max_seconds=60 * UNIT,
                unit=UNIT,
            )
            fuzz_started, frames_before = time.monotonic(), video.frames
            stats = await driver.run()
            fuzz_ended, frames_during = time.monotonic(), video.frames
            summary = describe(stats)

            assert stats.frames_sent == FUZZ_FRAMES, summary
            assert stats.timeouts == 0, summary
            assert stats.bare_closes == 0, summary
            assert stats.unreadable == 0, summary
            assert set(stats.reached) == {"established", "accepted", "connected"}, summary
            # Every fuzz socket is gone and its Digital Person is back; the honest one stays.
            await until(lambda: server.state.live == {honest})
            assert (server.state.pool.in_use, server.state.pool.queue_length) == (1, 0)
            assert list(server.state.sessions) == [scene.session_id]
            await until(lambda: video.frames > frames_during + 10, within=5 * UNIT)
            assert scene.is_connected()
            assert disconnects == []
            fps = (frames_during - frames_before) / (fuzz_ended - fuzz_started)
            gap = video.largest_gap(fuzz_started, fuzz_ended)
            assert frames_during > frames_before, summary
            assert gap < 3 * UNIT, f"{summary}; {fps:.1f} fps, no video for {gap:.1f} s"
        finally:
            await scene.disconnect()
            counting.cancel()
            await asyncio.gather(counting, return_exceptions=True)
        await until(lambda: not server.state.live and server.state.pool.in_use == 0)
        # The journal: every socket, the fuzz ones and the honest one, ended with a reason.
        ended = list(server.state.ended)
        assert len(ended) == stats.sockets_opened + 1, summary
        assert all(info.ending is not None for info in ended)
        records = server.state.store.list(limit=10 * stats.sockets_opened)
        assert len(records) == stats.sockets_opened + 1
        assert [r.socket_id for r in records if r.ending is None] == []
        assert server.state.store.unended(settings.node_id) == []
    gc.collect()  # a leaked ICE socket or an unretrieved task error shows when collected

    bad = [r for r in caplog.records if r.exc_info or r.levelno > logging.WARNING]
    assert bad == [], "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad[:20])
    assert "Traceback" not in caplog.text
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


# --- regressions the fuzzing found ---------------------------------------------------------------

GENEROUS_LIMITS = {"rate_per_address": 1000.0, "rate_burst": 1000, "max_sockets_per_address": 64}
CLOSE = encode(envelope("webrtc", "close", {"reason": "normal"}))


@asynccontextmanager
async def listened(http: aiohttp.ClientSession, server: DpkitServer) -> AsyncIterator[Listener]:
    """A session socket on a fresh token, with everything the server sends read as it comes."""
    async with http.get(server.url + TOKEN_PATH, headers={"key": server.api_key()}) as reply:
        token = await reply.json()
    async with http.ws_connect(token["url"], params={"access_token": token["jwt"]}) as ws:
        listener = Listener(ws, FuzzStats())
        reading = asyncio.create_task(listener.run())
        try:
            yield listener
        finally:
            listener.we_closed = True
            await ws.close()
            await reading


async def test_a_client_leaving_the_queue_as_a_person_frees_up_gives_the_person_back(
    start_server: ServerFactory,
) -> None:
    """A queued socket closed just as the Digital Person is handed to it leaves the person free."""
    server = await start_server(capacity=1, **GENEROUS_LIMITS)
    async with aiohttp.ClientSession() as http:
        for _ in range(30):
            async with listened(http, server) as holder, listened(http, server) as queued:
                assert await holder.wait_for("established", 5 * UNIT)
                assert await queued.wait_for("dpkit/queue", 5 * UNIT)
                # Both leave at once: the holder's person goes to the queued socket as it ends.
                await queued.ws.send_str(CLOSE)
                await holder.ws.send_str(CLOSE)
                async with asyncio.timeout(5 * UNIT):
                    await asyncio.gather(holder.done.wait(), queued.done.wait())
            await until(lambda: not server.state.live)
            assert server.state.pool.in_use == 0


@pytest.mark.parametrize(
    "leave",
    [
        CLOSE,
        encode(envelope("webrtc", "userText", {"userText": "z" * 40_000})),
        encode(envelope("webrtc", "ice", {"candidate": "candidate:1 2 3", "sdpMid": "0"})),
        None,  # the socket closes with no close frame
    ],
    ids=["close", "frame-too-large", "bad-candidate", "socket-closed"],
)
async def test_a_client_leaving_while_its_offer_is_answered_leaves_nothing_behind(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture, leave: str | None
) -> None:
    """Offer then leave at once: no leaked socket or session, no warning about the offer."""
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    server = await start_server(capacity=1, **GENEROUS_LIMITS)
    generator = FrameGenerator(SEED)
    async with aiohttp.ClientSession() as http:
        for round_ in range(40):
            async with listened(http, server) as client:
                assert await client.wait_for("established", 5 * UNIT)
                await client.ws.send_str(encode(generator.valid_frame("offer")))
                # Leave at a different point each time: loading the assets, answering, after.
                await asyncio.sleep(0.0005 * UNIT * (round_ % 20))
                if leave is not None:
                    await client.ws.send_str(leave)
            await until(lambda: not server.state.live)
            assert server.state.pool.in_use == 0
            assert server.state.sessions == {}
    gc.collect()  # a leaked ICE socket or an unretrieved task error shows when collected
    bad = [r for r in caplog.records if r.exc_info or r.levelno > logging.WARNING]
    assert bad == [], "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad[:5])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert not [m for m in warnings if "not usable" in m or "answering the offer failed" in m]


async def test_half_a_surrogate_pair_to_speak_is_refused_and_the_session_goes_on(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """startSpeaking with a lone surrogate is answered with status 1; the socket stays open."""
    server = await start_server(**GENEROUS_LIMITS)
    generator = FrameGenerator(SEED)
    speak = envelope("scene", "startSpeaking", {"text": chr(0xD83D)}, kind="request")
    async with aiohttp.ClientSession() as http, listened(http, server) as client:
        assert await client.wait_for("established", 5 * UNIT)
        await client.ws.send_str(encode(generator.valid_frame("offer")))
        assert await client.wait_for("answer", 5 * UNIT)
        await client.ws.send_str(encode({**speak, "transaction": "t_1"}))
        assert await client.wait_for("scene/startSpeaking", 5 * UNIT)
        [response] = [f for f in client.frames if f["name"] == "startSpeaking"]
        assert (response["transaction"], response["status"]) == ("t_1", 1)
        assert not client.done.is_set()
    assert not [r for r in caplog.records if "handling a client frame failed" in r.getMessage()]
