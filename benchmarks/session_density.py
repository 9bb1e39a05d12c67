"""How many sessions one server process sustains: delivered media rates and server CPU per session.

Run with ``python benchmarks/session_density.py [--sessions 4] [--seconds 10]`` (also
``--width``, ``--height``, ``--fps``, ``--settle``). It keeps all traffic on 127.0.0.1, takes
about ``seconds + 10`` s, prints rates and ratios and asserts nothing.

The server (capacity ``--sessions``) runs in a separate process started with ``multiprocessing``
("spawn"), so its CPU time can be told apart from the clients'. It sends its URL and API key back
over a queue, then answers "mark" messages on a pipe with a snapshot: its ``getrusage
(RUSAGE_SELF)`` user + system time, which counts every thread of the process (aiortc encodes in
worker threads), the CPU time of its event-loop thread alone (``time.thread_time``), and how late
its event loop woke from 10 ms sleeps since the last mark. The benchmark process measures itself
the same way. It connects ``--sessions`` clients, waits until all are Connected and ``--settle``
seconds more (first keyframes, pacing), then marks the server, counts the decoded persona video
and audio frames each session receives for ``--seconds``, and marks it again.

Printed: per-session delivered video fps (min / median / max) against the configured fps, audio
frames per second against 50 (20 ms Opus frames), frames missing from each stream (gaps in the
timestamps: frames the server's track skipped after a stall, or packets lost), the server's CPU
seconds per session-second (all threads, and the event-loop thread alone, which cannot use more
than one core), event-loop lag, the clients' CPU for comparison, and the core count. On a small
machine the clients' decoding competes with the server for the same cores, so the delivered
rates are a lower bound for what the server alone would sustain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from queue import Empty
from typing import Any

from dpkit import Scene
from dpkit.errors import ConfigurationError
from dpkit.server import DpkitServer, PersonaSettings, Settings

LOOPBACK = ("127.0.0.1",)
AUDIO_FPS = 50.0  # 20 ms Opus frames
SERVER_START_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
LAG_TICK_S = 0.01  # how often each event loop checks how late it wakes up


def _cpu_seconds() -> float:
    """User + system CPU of this whole process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LagMonitor:
    """How late an event loop wakes from a short sleep: a busy or blocked loop wakes late."""

    def __init__(self) -> None:
        self._lags: list[float] = []

    async def run(self) -> None:
        while True:
            due = time.perf_counter() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            self._lags.append(max(0.0, time.perf_counter() - due))

    def take(self) -> tuple[float, float]:
        """The 99th percentile and the largest lag (ms) since the last call."""
        lags, self._lags = sorted(self._lags), []
        if not lags:
            return 0.0, 0.0
        return lags[int(0.99 * (len(lags) - 1))] * 1000, lags[-1] * 1000


@dataclass(frozen=True)
class Snapshot:
    """One process at one moment: its CPU, its event-loop thread's CPU, its loop's lag."""

    cpu: float
    loop_cpu: float
    clock: float
    live: int
    lag_p99_ms: float
    lag_max_ms: float


def _snapshot(lag: LagMonitor, live: int = 0) -> Snapshot:
    """Taken on the event-loop thread, so ``thread_time`` is that thread's CPU."""
    p99, worst = lag.take()
    return Snapshot(_cpu_seconds(), time.thread_time(), time.perf_counter(), live, p99, worst)


# --- the server process -----------------------------------------------------------------------


def _serve(
    capacity: int, width: int, height: int, fps: float, ready: Any, control: Connection
) -> None:
    """The server process: run a server until told to stop; answer marks meanwhile."""
    asyncio.run(_serve_async(capacity, width, height, fps, ready, control))


async def _serve_async(
    capacity: int, width: int, height: int, fps: float, ready: Any, control: Connection
) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(control.recv())
        except EOFError:  # the benchmark went away: stop
            loop.remove_reader(control.fileno())
            commands.put_nowait("stop")

    with tempfile.TemporaryDirectory(prefix="dpkit-density-") as tmp:
        settings = Settings(
            host="127.0.0.1",
            port=0,
            data_dir=Path(tmp),
            capacity=capacity,
            ice_addresses=LOOPBACK,
            persona=PersonaSettings(video_width=width, video_height=height, video_fps=fps),
            offer_timeout_s=CONNECT_TIMEOUT_S,
            connect_timeout_s=CONNECT_TIMEOUT_S,
        )
        lag = LagMonitor()
        monitor = asyncio.create_task(lag.run())
        try:
            async with DpkitServer(settings) as server:
                loop.add_reader(control.fileno(), readable)
                try:
                    ready.put((server.url, server.api_key()))
                    while (command := await commands.get()) != "stop":
                        if command == "mark":
                            # Plain values: the class pickles under another module name here.
                            control.send(astuple(_snapshot(lag, len(server.state.live))))
                finally:
                    loop.remove_reader(control.fileno())
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor


@dataclass
class ServerProcess:
    """The server process and the benchmark's end of its control pipe."""

    process: multiprocessing.process.BaseProcess
    control: Connection
    url: str
    api_key: str

    def mark(self) -> Snapshot:
        """The server's snapshot, right now (blocks: call it from a worker thread)."""
        self.control.send("mark")
        if not self.control.poll(STOP_TIMEOUT_S):
            raise RuntimeError("the server process did not answer a mark")
        return Snapshot(*self.control.recv())

    def stop(self) -> None:
        """Ask the server to stop (it ends its sessions), wait, and kill it only if it hangs."""
        if self.process.is_alive():
            with contextlib.suppress(OSError):  # it may be exiting already
                self.control.send("stop")
        self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            print("the server process did not stop in time; terminating it")
            self.process.terminate()
            self.process.join(STOP_TIMEOUT_S)
        self.control.close()


def start_server(capacity: int, width: int, height: int, fps: float) -> ServerProcess:
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_serve,
        args=(capacity, width, height, fps, ready, theirs),
        name="dpkit-density-server",
    )
    process.start()
    theirs.close()
    try:
        url, api_key = ready.get(timeout=SERVER_START_TIMEOUT_S)
    except Empty:
        process.terminate()
        process.join(STOP_TIMEOUT_S)
        raise RuntimeError("the server process did not start in time") from None
    finally:
        ready.close()
    return ServerProcess(process, ours, url, api_key)


# --- the clients ------------------------------------------------------------------------------


class Received:
    """Decoded frames one session has received so far, and the frames missing between them.

    A gap in the presentation timestamps is a frame that never arrived: either the server's
    track skipped it (its clock skips ahead after a stall) or the network lost it.
    """

    def __init__(self) -> None:
        self.video = 0
        self.audio = 0
        self.video_missing = 0
        self.audio_missing = 0
        self.size: tuple[int, int] | None = None

    def counts(self) -> tuple[int, int, int, int]:
        return self.video, self.audio, self.video_missing, self.audio_missing


def _missing(previous: int | None, pts: int | None, step: float) -> int:
    """How many frames of ``step`` timestamp units fit in the gap between two frames."""
    if previous is None or pts is None:
        return 0
    return max(0, round((pts - previous) / step) - 1)


async def _count_video(scene: Scene, counter: Received, fps: float) -> None:
    step = 90000 / fps  # RTP video timestamps count 90 kHz
    previous: int | None = None
    async for frame in scene.video_frames():
        counter.video += 1
        counter.video_missing += _missing(previous, frame.pts, step)
        previous = frame.pts
        counter.size = (frame.width, frame.height)


async def _count_audio(scene: Scene, counter: Received) -> None:
    previous: int | None = None
    async for frame in scene.audio_frames():
        counter.audio += 1
        counter.audio_missing += _missing(previous, frame.pts, frame.samples)
        previous = frame.pts


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):6.2f}  median {statistics.median(values):6.2f}  max {max(values):6.2f}"
    )


async def measure(
    server: ServerProcess, sessions: int, seconds: float, settle: float, fps: float
) -> None:
    scenes = [
        Scene(
            server.api_key,
            requested_media_devices={},
            required_media_devices={},
            ice_addresses=LOOPBACK,
        )
        for _ in range(sessions)
    ]
    counters = [Received() for _ in scenes]
    lag = LagMonitor()
    tasks = [asyncio.create_task(lag.run())]
    try:
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(s.connect(connect_timeout=CONNECT_TIMEOUT_S) for s in scenes),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        print(f"{sessions} session(s) connected in {time.perf_counter() - started:.2f} s")
        for scene, counter in zip(scenes, counters, strict=True):
            tasks.append(asyncio.create_task(_count_video(scene, counter, fps)))
            tasks.append(asyncio.create_task(_count_audio(scene, counter)))
        await asyncio.sleep(settle)

        server_0 = await asyncio.to_thread(server.mark)
        client_0 = _snapshot(lag)
        counts_0 = [c.counts() for c in counters]
        await asyncio.sleep(seconds)
        counts_1 = [c.counts() for c in counters]
        client_1 = _snapshot(lag)
        server_1 = await asyncio.to_thread(server.mark)
    finally:
        # Disconnecting ends the tracks, which ends the readers; cancel whatever is left.
        await asyncio.gather(*(s.disconnect() for s in scenes), return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    window = server_1.clock - server_0.clock
    rates = [
        [(after - before) / window for before, after in zip(c0, c1, strict=True)]
        for c0, c1 in zip(counts_0, counts_1, strict=True)
    ]
    video_fps, audio_fps, video_missing, audio_missing = (
        list(column) for column in zip(*rates, strict=True)
    )
    sizes = sorted({c.size for c in counters if c.size is not None})
    cores = os.cpu_count() or 1
    session_seconds = sessions * window

    print(f"window {window:.2f} s, live sessions on the server {server_0.live} -> {server_1.live}")
    print(f"decoded video sizes: {', '.join(f'{w}x{h}' for w, h in sizes)}")
    print(f"video fps per session: {_spread(video_fps)}  (configured {fps:g})")
    print(
        f"  delivered / configured: min {min(video_fps) / fps:.2f}  "
        f"median {statistics.median(video_fps) / fps:.2f}"
    )
    print(f"audio frames/s per session: {_spread(audio_fps)}  (expected {AUDIO_FPS:g})")
    print(
        f"  delivered / expected: min {min(audio_fps) / AUDIO_FPS:.2f}  "
        f"median {statistics.median(audio_fps) / AUDIO_FPS:.2f}"
    )
    print(
        f"frames missing (timestamp gaps) per session, median: video "
        f"{statistics.median(video_missing):.2f}/s, audio "
        f"{statistics.median(audio_missing):.2f}/s; worst audio {max(audio_missing):.2f}/s"
    )
    per_session = {}
    for side, before, after in (("server", server_0, server_1), ("client", client_0, client_1)):
        cpu, loop_cpu = after.cpu - before.cpu, after.loop_cpu - before.loop_cpu
        per_session[side] = (cpu / session_seconds, loop_cpu / session_seconds)
        print(
            f"{side} CPU: {cpu / window:.2f} cores ({loop_cpu / window:.2f} on the event-loop "
            f"thread); {cpu / session_seconds:.3f} CPU-s per session-second "
            f"({loop_cpu / session_seconds:.3f} on the loop)"
        )
        print(
            f"  {side} event-loop lag over the window: p99 {after.lag_p99_ms:.1f} ms, "
            f"max {after.lag_max_ms:.1f} ms"
        )
    total = (server_1.cpu - server_0.cpu + client_1.cpu - client_0.cpu) / (window * cores)
    print(f"machine: {cores} cores; server + clients use {total:.0%} of it")
    server_cpu, server_loop = per_session["server"]
    print(
        f"server-only extrapolation: {cores / server_cpu:.1f} sessions fill {cores} cores; "
        f"{1 / server_loop:.1f} fill the event-loop thread's one core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions (default 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window (default 10)")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="wait after connecting (default 1)"
    )
    parser.add_argument("--width", type=int, default=640, help="persona video width (640)")
    parser.add_argument("--height", type=int, default=480, help="persona video height (480)")
    parser.add_argument("--fps", type=float, default=15.0, help="persona video fps (15)")
    args = parser.parse_args()
    if args.sessions < 1 or not 0 < args.seconds <= 600 or not 0 <= args.settle <= 60:
        parser.error("need --sessions >= 1, 0 < --seconds <= 600 and 0 <= --settle <= 60")
    try:
        PersonaSettings(video_width=args.width, video_height=args.height, video_fps=args.fps)
    except ConfigurationError as exc:
        parser.error(exc.message)

    print(
        f"{args.sessions} session(s), {args.width}x{args.height} at {args.fps:g} fps, "
        f"{args.seconds:g} s measured after {args.settle:g} s settling; loopback only"
    )
    server = start_server(args.sessions, args.width, args.height, args.fps)
    try:
        asyncio.run(measure(server, args.sessions, args.seconds, args.settle, args.fps))
    finally:
        server.stop()
    print(f"server process exit code {server.process.exitcode}")


if __name__ == "__main__":
    main()
