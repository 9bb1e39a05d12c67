"""Hostile session-socket traffic against a real ``dpkit serve`` process, beside an honest session.

Run with ``python benchmarks/fuzz.py [--frames 10000] [--seed 1] [--sockets 4]`` (also
``--max-seconds``, default 300, and ``--post-seconds``). It keeps all traffic on 127.0.0.1, stops
after ``--frames`` fuzz frames or ``--max-seconds``, prints counts and rates and asserts nothing.

It starts ``python -m dpkit serve`` (tests/served.py: capacity 3, 320x240 at 15 fps, generous
rate and socket limits so the fuzzer is not turned away, log at INFO in a file), connects an
honest :class:`dpkit.Scene` and counts the persona video it decodes, then runs the fuzz driver of
tests/fuzzing.py (the one the fuzz test uses, for longer): ``--sockets`` concurrent sockets, each
on a fresh token, sending frames of many shapes, some after a real offer so the later phases are
fuzzed too. Afterwards it waits for the server's fuzz sockets to go (``/metrics``), counts the
honest video for ``--post-seconds`` more, disconnects, stops the server and reads its log and its
session journal.

Printed: frames sent (and by shape), sockets opened (by plan) and the phases they reached, the
server's close reasons, whether the server process died (crashes 0/1), "Traceback" and ERROR lines
in its log and the catch-all's WARNING lines (a client frame or offer that failed in a way no
check foresaw), its resident memory before and after, the honest session's delivered video frame
rate during and after the fuzzing against the configured rate, the journal's endings, and the
elapsed time.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

# The fuzzer and the served process come from the test suite, one directory up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzzing import FrameGenerator, FuzzDriver, FuzzStats
from tests.served import BASE_SETTINGS, ServedProcess, served

from dpkit import Scene
from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.journal import SqliteJournal

FPS = float(BASE_SETTINGS["persona"]["video_fps"])
CONNECT_TIMEOUT_S = 30.0
SETTLE_S = 2.0
DRAIN_TIMEOUT_S = 30.0
NODE = "node-1"
#: The catch-all's lines: a failure no check foresaw, handled by closing the session.
CATCH_ALL = re.compile(r"closing, (handling a client frame|answering the offer) failed")
#: The server settings: limits high enough for one fuzzing address, short protocol timers, and
#: client logs taken (so the fuzzer's are written to the server's log, escaped).
SETTINGS: dict[str, Any] = {
    "capacity": 3,
    "rate_per_address": 1000.0,
    "rate_burst": 1000,
    "max_sockets_per_address": 64,
    "offer_timeout_s": 3.0,
    "connect_timeout_s": 5.0,
    "log_to_server": True,
}


class VideoCounter:
    """Counts the persona video frames a scene decodes."""

    def __init__(self) -> None:
        self.frames = 0

    async def run(self, scene: Scene) -> None:
        async for _frame in scene.video_frames():
            self.frames += 1


async def live_sockets(http: aiohttp.ClientSession, server: ServedProcess) -> int:
    """Open session sockets on the server, from its ``dpkit_sessions`` gauge."""
    async with http.get(server.url + "/metrics") as reply:
        text = await reply.text()
    return sum(int(n) for n in re.findall(r'^dpkit_sessions\{state="[^"]+"\} (\d+)', text, re.M))


async def wait_for_sockets(server: ServedProcess, count: int) -> float:
    """Wait (bounded) until the server has ``count`` open sockets; the seconds it took."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while await live_sockets(http, server) > count:
            if time.monotonic() - started > DRAIN_TIMEOUT_S:
                break
            await asyncio.sleep(0.1)
    return time.monotonic() - started


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counter.most_common()) or "none"


async def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dpkit-fuzz-") as directory:
        async with served(Path(directory), **SETTINGS) as server:
            scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
            disconnects: list[str] = []
            scene.on_disconnected_event.add_listener(lambda _s, _i, why: disconnects.append(why))
            await scene.connect(connect_timeout=CONNECT_TIMEOUT_S)
            video = VideoCounter()
            counting = asyncio.create_task(video.run(scene))
            try:
                await asyncio.sleep(SETTLE_S)
                rss_before = server.rss_kib()
                driver = FuzzDriver(
                    server.url + TOKEN_PATH,
                    server.api_key(),
                    FrameGenerator(args.seed),
                    sockets=args.sockets,
                    frames=args.frames,
                    max_seconds=args.max_seconds,
                )
                frames_0, clock_0 = video.frames, time.monotonic()
                stats = await driver.run()
                frames_1, clock_1 = video.frames, time.monotonic()
                drained_s = await wait_for_sockets(server, 1)
                frames_2, clock_2 = video.frames, time.monotonic()
                await asyncio.sleep(args.post_seconds)
                frames_3, clock_3 = video.frames, time.monotonic()
                rss_after = server.rss_kib()
                still_connected = scene.is_connected()
                disconnected = list(disconnects)  # before our own disconnect adds 'normal'
                crashed = server.process.returncode is not None
            finally:
                await scene.disconnect()
                counting.cancel()
                await asyncio.gather(counting, return_exceptions=True)
        log = server.log()
        journal = SqliteJournal.in_data_dir(server.data_dir)
        try:
            records = journal.list(limit=10 * stats.sockets_opened + 10)
            unended = journal.unended(NODE)
        finally:
            journal.close()

    during_fps = (frames_1 - frames_0) / (clock_1 - clock_0)
    after_fps = (frames_3 - frames_2) / (clock_3 - clock_2)
    lines = log.splitlines()
    errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
    print(f"seed {args.seed}, {args.sockets} fuzz sockets, server capacity {SETTINGS['capacity']}")
    report(stats)
    print(f"server crashes (process died): {int(crashed)}")
    print(f"tracebacks in the server log: {log.count('Traceback')}")
    print(f"ERROR lines in the server log: {len(errors)}")
    for line in errors[:10]:
        print(f"  {line[:200]}")
    print(f"catch-all closes (WARNING, an unforeseen failure): {len(CATCH_ALL.findall(log))}")
    print(f"WARNING lines in the server log: {sum(' WARNING ' in line for line in lines)}")
    print(f"server RSS: before {mib(rss_before)}, after {mib(rss_after)}")
    print(f"fuzz sockets gone from the server {drained_s:.1f} s after the last frame")
    print(
        f"honest session: {'still connected' if still_connected else 'NOT connected'}, "
        f"disconnect events during the run: {disconnected or 'none'}"
    )
    print(
        f"  video during the fuzzing {during_fps:.1f} fps over {clock_1 - clock_0:.1f} s, "
        f"after {after_fps:.1f} fps over {clock_3 - clock_2:.1f} s (configured {FPS:g}; "
        f"delivered / configured {during_fps / FPS:.2f} and {after_fps / FPS:.2f})"
    )
    endings = Counter(record.ending or "none" for record in records)
    print(f"journal: {len(records)} sockets, unended {len(unended)}; endings: {counts(endings)}")
    print(f"elapsed {time.monotonic() - started:.1f} s (fuzzing {stats.elapsed_s:.1f} s)")


def report(stats: FuzzStats) -> None:
    rate = stats.frames_sent / stats.elapsed_s if stats.elapsed_s else 0.0
    print(f"frames sent: {stats.frames_sent} ({rate:.0f}/s)")
    print(f"  by shape: {counts(stats.by_shape)}")
    print(f"sockets opened: {stats.sockets_opened}; by plan: {counts(stats.by_plan)}")
    print(f"  phases reached: {counts(stats.reached)}")
    print(f"  server close reasons: {counts(stats.close_reasons)}")
    print(
        f"  closed with no close frame: {stats.bare_closes}; dropped past aiohttp's bound: "
        f"{stats.too_big_drops}; unreadable server frames: {stats.unreadable}"
    )
    for example in stats.bare_close_examples[:5]:
        print(f"    {example[:200]}")
    print(
        f"  refused: {counts(stats.refused)}; client timeouts: {stats.timeouts}; "
        f"client errors: {counts(stats.errors)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=10000, help="fuzz frames to send")
    parser.add_argument("--seed", type=int, default=1, help="the frame generator's seed")
    parser.add_argument("--sockets", type=int, default=4, help="concurrent fuzz sockets")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop fuzzing after")
    parser.add_argument(
        "--post-seconds", type=float, default=5.0, help="honest video counted after"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
