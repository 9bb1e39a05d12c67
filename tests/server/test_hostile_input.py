"""Hostile frames over real sockets: each gets a reason, the journal keeps it, the log is calm."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from dpkit import Scene
from dpkit.errors import DpkitError, SceneResponseError
from dpkit.protocol.messages import (
    Accepted,
    Answer,
    Close,
    DpkitEvent,
    Established,
    Ice,
    Offer,
    SceneRequest,
    SceneResponse,
)
from dpkit.server import DpkitServer
from dpkit.server.journal import SqliteJournal
from tests.raw_client import RawClient, raw_client
from tests.served import ServedProcess, served
from tests.support import UNIT, until

LOGGERS = ("dpkit", "aiohttp", "aiortc", "aioice", "asyncio", "")


@pytest.fixture
def calm_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged at DEBUG; the test fails if anything was above WARNING or a traceback."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog
    loud = [r for r in caplog.records if r.levelno > logging.WARNING or r.exc_info]
    assert loud == [], [f"{r.levelname} {r.name}: {r.getMessage()}" for r in loud]
    assert "Traceback" not in caplog.text


def duplicate_audio_mid(sdp: str) -> str:
    audio = sdp[sdp.index("m=audio") : sdp.index("m=video")]
    return sdp.replace("m=video", audio + "m=video", 1)


SDP_CASES: dict[str, Callable[[str], str]] = {
    "no ice-ufrag": lambda sdp: sdp.replace("a=ice-ufrag:", "a=x-ufrag:"),
    "two m=audio share a mid": duplicate_audio_mid,
    "port above 65535": lambda sdp: re.sub(r"m=audio \d+", "m=audio 99999", sdp),
    "candidate port above 65535": lambda sdp: re.sub(
        r"(a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1) \d+", r"\1 70000", sdp
    ),
}


async def ending_of(server: DpkitServer, count: int = 1) -> list[str | None]:
    await until(lambda: len(server.state.ended) >= count)
    return [info.ending for info in server.state.ended]


@pytest.mark.parametrize("case", list(SDP_CASES))
async def test_a_malformed_offer_is_closed_with_a_reason(
    server: DpkitServer, calm_log: pytest.LogCaptureFixture, case: str
) -> None:
    """An offer aiortc would choke on: protocolError naming why, close, journal says so."""
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        await client.send(Offer(SDP_CASES[case](await client.make_offer())))
        frames = await client.until_closed()
    notice, close = frames
    assert isinstance(notice, DpkitEvent)
    assert notice.name == "protocolError"
    assert close == Close("protocolError")
    assert await ending_of(server) == ["protocolError"]
    journal = SqliteJournal.in_data_dir(server.settings.data_dir)
    try:
        [record] = journal.list()
    finally:
        journal.close()
    assert record.ending == "protocolError"
    assert server.state.pool.in_use == 0


CANDIDATE_CASES: dict[str, Ice] = {
    "no sdpMid nor index": Ice("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"),
    "candidate:1 2 3": Ice("candidate:1 2 3", "0", 0),
    "port above 65535": Ice("candidate:1 1 udp 2130706431 127.0.0.1 70000 typ host", "0", 0),
    "a host name": Ice("candidate:1 1 udp 2130706431 attacker.example 5000 typ host", "0", 0),
    "an unknown mid": Ice("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "77"),
}


async def accepted_client(client: RawClient) -> None:
    assert isinstance(await client.receive(), Established)
    await client.offer()
    assert isinstance(await client.receive(), Accepted)
    assert isinstance(await client.receive(), Answer)


@pytest.mark.parametrize("case", list(CANDIDATE_CASES))
async def test_a_malformed_candidate_is_closed_with_a_reason(
    server: DpkitServer, calm_log: pytest.LogCaptureFixture, case: str
) -> None:
    """A trickled candidate aiortc would choke on: protocolError, close, journal says so."""
    async with raw_client(server) as client:
        await accepted_client(client)
        await client.send(CANDIDATE_CASES[case])
        frames = await client.until_closed()
    assert frames[-1] == Close("protocolError")
    assert any(isinstance(f, DpkitEvent) and f.name == "protocolError" for f in frames)
    assert await ending_of(server) == ["protocolError"]
    await asyncio.sleep(0.5 * UNIT)  # anything aiortc would still do with it would show by now
    assert server.state.pool.in_use == 0


async def test_a_candidate_without_mid_but_with_an_index_is_used(
    server: DpkitServer, calm_log: pytest.LogCaptureFixture
) -> None:
    """sdpMLineIndex alone places a candidate (a browser may send it so); the session goes on."""
    async with raw_client(server) as client:
        await accepted_client(client)
        candidate = Ice("candidate:9 1 udp 2130706431 127.0.0.1 5999 typ host", None, 0)
        await client.send(candidate)
        await client.send(Ice("", complete=True))
        # The socket's frames are handled in order: an answer to this one means the candidate
        # before it was added.
        await client.send(SceneRequest("getState", "t_1", {}))
        response = await client.receive()
        assert isinstance(response, SceneResponse)
        assert response.transaction == "t_1"
        assert server.state.live
        assert not server.state.ended


# --- memory: text the voice would render --------------------------------------------------------


def start_speaking(text: object) -> dict[str, object]:
    return {"text": text, "personaId": "1"}


async def connected_scene(server: ServedProcess) -> tuple[Scene, list[str]]:
    reasons: list[str] = []
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    scene.on_disconnected_event.add_listener(lambda _s, _id, reason: reasons.append(reason))
    await scene.connect()
    return scene, reasons


async def settled_rss_kib(server: ServedProcess) -> int:
    await asyncio.sleep(0.5 * UNIT)
    return server.rss_kib()


async def test_a_64_kb_start_speaking_is_refused_and_memory_stays(tmp_path: Path) -> None:
    """64 KB of text: close {frameTooLarge}; 4 KB: refused by max_text_chars; RSS stays flat."""
    async with served(tmp_path) as server:
        scene, reasons = await connected_scene(server)
        warm = await settled_rss_kib(server)
        with pytest.raises(DpkitError):
            await scene.send_request("startSpeaking", start_speaking("a" * 65536))
        await until(lambda: reasons == ["frameTooLarge"])
        after_big = await settled_rss_kib(server)
        scene, _ = await connected_scene(server)
        warm_again = await settled_rss_kib(server)
        with pytest.raises(SceneResponseError) as refused:
            await scene.send_request("startSpeaking", start_speaking("word " * 800))
        assert refused.value.status != 0
        assert "max_text_chars" in refused.value.response_body["error"]
        with pytest.raises(SceneResponseError) as refused:
            await scene.send_request("startSpeaking", start_speaking({"not": "text"}))
        assert refused.value.status != 0
        after_long = await settled_rss_kib(server)
        await scene.disconnect()
        log = server.log()
    assert (after_big - warm) < 4 * 1024, (warm, after_big)
    assert (after_long - warm_again) < 4 * 1024, (warm_again, after_long)
    assert "max_frame_bytes" in log
    assert "Traceback" not in log


async def test_the_longest_text_allowed_renders_at_most_max_utterance_s(tmp_path: Path) -> None:
    """Text at max_text_chars is spoken, cut at max_utterance_s; memory grows by that, no more."""
    async with served(tmp_path, max_utterance_s=5.0) as server:
        scene, _ = await connected_scene(server)
        warm = await settled_rss_kib(server)
        spoken = await scene.send_request("startSpeaking", start_speaking("word " * 200))
        assert isinstance(spoken, dict)  # status 0: the response's body
        grown = await settled_rss_kib(server) - warm
        await scene.disconnect()
    # Five seconds of 48 kHz speech is under half a MiB; the issue measured 293 MiB for 4 KB.
    assert grown < 8 * 1024, grown


# --- client logs --------------------------------------------------------------------------------


def diagnostics(lines: list[str]) -> str:
    body = {"name": "browser", "text": lines}
    return json.dumps({"category": "diagnostics", "kind": "event", "name": "log", "body": body})


async def flood_logs(server: ServedProcess, frames: list[str]) -> None:
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        for frame in frames:
            await client.send(frame)
        await client.send(Offer(await client.make_offer()))
        assert isinstance(await client.receive(), Accepted)  # everything before was read


async def test_client_logs_are_dropped_unless_the_session_asked(tmp_path: Path) -> None:
    """logToServer off: megabytes of diagnostics/log write nothing to the server's log."""
    line = "x" * 1000 + "\n2026-12-01 00:00:00 ERROR dpkit.server: forged"
    async with served(tmp_path, log_level="DEBUG") as server:
        before = server.log_path.stat().st_size
        await flood_logs(server, [diagnostics([line] * 20)] * 100)  # 2 MB
        grown = server.log_path.stat().st_size - before
        log = server.log()
    assert "forged" not in log
    assert grown < 20_000


async def test_asked_for_client_logs_are_escaped_and_capped(tmp_path: Path) -> None:
    """logToServer on: lines are escaped (no forged line) and stop at client_log_max_bytes."""
    forged = "hi\n2026-12-01 00:00:00 ERROR dpkit.server: forged"
    async with served(tmp_path, log_to_server=True, client_log_max_bytes=2000) as server:
        await flood_logs(server, [diagnostics([forged, "y" * 600])] * 50)
        log = server.log()
    assert not [line for line in log.splitlines() if line.startswith("2026-12-01 00:00:00")]
    assert "hi\\x0a2026-12-01 00:00:00 ERROR dpkit.server: forged" in log
    assert log.count("y" * 500) <= 3
    assert "client_log_max_bytes" in log


async def test_a_frame_far_over_the_limit_is_recorded_too(server: DpkitServer) -> None:
    """A frame past aiohttp's own bound drops the socket; the journal still says frameTooLarge."""
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        await client.send("x" * (8 * server.settings.max_frame_bytes))
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await client.receive()
    assert await ending_of(server) == ["frameTooLarge"]
