"""How many sessions one server process sustains: delivered media rates and server CPU per session.

Run with ``python benchmarks/session_density.py [--sessions 16] [--seconds 10]``; other options:
``--settle`` (seconds between connecting and measuring), ``--speaking FRACTION`` (the share of
sessions kept speaking, rotating), ``--receiver-processes`` (light receivers), ``--decode-sample``
(sessions fully decoded and checked), ``--concurrency`` (sessions connecting at once) and
``--width/--height/--fps``. ``benchmarks/density_sweep.py`` runs it for several session counts
and speaking fractions. Everything stays on 127.0.0.1; a run takes about ``seconds + settle`` s
plus the time to connect (a second or two per ten sessions on two cores). It prints rates and
ratios and asserts nothing.

Three kinds of process, each started with ``multiprocessing`` ("spawn"):

* the server (capacity ``--sessions``, the greeting off, the per-key and per-address limits
  raised for one key on one address), which sends its URL and API key back over a queue and
  then answers "mark" messages on a pipe with a snapshot: its ``getrusage(RUSAGE_SELF)`` user +
  system time (every thread: aiortc encodes in worker threads), the CPU time of its event-loop
  thread alone (``time.thread_time``), how late its event loop woke from 10 ms sleeps since the
  last mark, and its resident memory (``VmRSS``);
* ``--receiver-processes`` light receivers (benchmarks/density_receivers.py), holding the
  sessions round-robin as :class:`dpkit.Scene` clients. They count the persona's frames from
  the clear RTP header of each datagram where aioice receives it and drop it there, before
  aiortc's SRTP, parsing, jitter buffer and decoder (STUN, DTLS and RTCP go on as normal, so
  the sessions stay connected), so a receiver costs less than the server it measures (0.004
  CPU-s per session-second at 100 sessions, the server 0.006). Light sessions send no REMB and
  no receiver reports (aiortc never sees their RTP); the server's shared encoder does not
  depend on them;
* with ``--decode-sample N``, one more receiver holding the first N sessions, which decodes them
  as a real client does, checks each picture (the persona's size, brightness, contrast and the
  face's skin at the centre) and counts the same RTP, so the two counts can be compared.

The benchmark connects the sessions ``--concurrency`` at a time, starts the speaking rotation
(``round(speaking * sessions)`` sessions speak at any time, a third of them replaced every
``ROTATION_S`` seconds: new speakers start first, the ones they replace stop once they speak),
waits ``--settle`` seconds, marks every process, waits ``--seconds`` and marks them again.

Printed: how many sessions spoke over the window; per session, delivered video frames per second
(min / median / max) against the configured fps and audio frames (20 ms Opus packets) against
50, each as ``delivered / configured: min X  median Y``; lost packets (sequence gaps) and frames
the server skipped (timestamp gaps with no loss); for the decoded sample, RTP against decoded
frame counts and how many pictures passed the check; the server's CPU (cores, and CPU seconds
per session-second, all threads and the event-loop thread alone), its event-loop lag, its RSS
per session (at the window's start, speakers included, minus before connecting, divided by the
sessions: the first session's one-time loads count too, such as the voice's) and at the window's
end; the receivers' CPU beside it; and the machine's core count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from queue import Empty
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.density_receivers import (
    AUDIO_FRAME_S,
    LOOPBACK,
    LagMonitor,
    ReceiverMark,
    ReceiverSpec,
    SessionMark,
    cpu_seconds,
    run_receiver,
    speaking_stats,
)

from dpkit.errors import ConfigurationError
from dpkit.server import DpkitServer, PersonaSettings, Settings

AUDIO_FPS = 1 / AUDIO_FRAME_S
SERVER_START_TIMEOUT_S = 60.0
RECEIVER_START_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 60.0
MARK_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 30.0
ROTATION_S = 3.0  # how often the speaking rotation replaces a third of the speakers
SPEECH_TIMEOUT_S = 90.0  # a rotation step (start, then stop) on a loaded machine
MAX_SESSIONS = 1000


def _rss_kib() -> int:
    """This process's resident set (``VmRSS``, KiB); 0 where /proc is not there."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (the server's encoding worker comes from a
    fork server, so it is a grandchild)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    found.append(int(child))
                    found.extend(_descendants(int(child)))
    return found


def _process_cpu_and_rss(pid: int) -> tuple[float, int]:
    """A running process's user + system CPU seconds and resident KiB, from /proc."""
    cpu, rss = 0.0, 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    return cpu, rss


@dataclass(frozen=True)
class Snapshot:
    """The server at one moment: CPU, event-loop thread's CPU, loop lag, memory; and the CPU
    and memory of the processes it started (its encoding worker and that worker's fork
    server), which ``getrusage`` does not count while they run."""

    cpu: float
    loop_cpu: float
    clock: float
    live: int
    lag_p99_ms: float
    lag_max_ms: float
    rss_kib: int
    helpers_cpu: float = 0.0
    helpers_rss_kib: int = 0


def _snapshot(lag: LagMonitor, live: int = 0) -> Snapshot:
    """Taken on the event-loop thread, so ``thread_time`` is that thread's CPU."""
    p99, worst = lag.take()
    helpers = [_process_cpu_and_rss(pid) for pid in _descendants(os.getpid())]
    return Snapshot(
        cpu_seconds(),
        time.thread_time(),
        time.monotonic(),
        live,
        p99,
        worst,
        _rss_kib(),
        sum(cpu for cpu, _rss in helpers),
        sum(rss for _cpu, rss in helpers),
    )


# --- the server process -----------------------------------------------------------------------


def server_settings(data_dir: Path, sessions: int, width: int, height: int, fps: float) -> Settings:
    """The benchmark's server: ``sessions`` Digital Persons for one key on one address.

    The limits meant for abuse (sockets per key and per address, new sockets and tokens per
    second, HTTP connections per address) are raised to fit every session coming from
    127.0.0.1 with one key in a few seconds; the greeting is off, so nobody speaks unless the
    benchmark asks.
    """
    return Settings(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        capacity=sessions,
        ice_addresses=LOOPBACK,
        persona=PersonaSettings(
            video_width=width, video_height=height, video_fps=fps, greet_at_start=False
        ),
        offer_timeout_s=CONNECT_TIMEOUT_S,
        connect_timeout_s=CONNECT_TIMEOUT_S,
        max_sockets_per_key=sessions + 16,
        max_sockets_per_address=sessions + 16,
        rate_per_address=max(20.0, 4.0 * sessions),
        rate_burst=max(40, 4 * sessions),
        max_connections=max(1000, 4 * sessions),
        max_connections_per_address=max(64, 4 * sessions),
    )


def _serve(
    sessions: int, width: int, height: int, fps: float, ready: Any, control: Connection
) -> None:
    """The server process: run a server until told to stop; answer marks meanwhile."""
    # Ctrl-C reaches every process of the terminal: the benchmark process stops this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve_async(sessions, width, height, fps, ready, control))


async def _serve_async(
    sessions: int, width: int, height: int, fps: float, ready: Any, control: Connection
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
        settings = server_settings(Path(tmp), sessions, width, height, fps)
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
        if not self.control.poll(MARK_TIMEOUT_S):
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


def start_server(sessions: int, width: int, height: int, fps: float) -> ServerProcess:
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_serve,
        args=(sessions, width, height, fps, ready, theirs),
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


# --- the receiver processes -------------------------------------------------------------------


class ReceiverProcess:
    """One receiver process and the benchmark's end of its pipe: requests with ids.

    The receiver answers each request when it is done, in any order; :meth:`request` awaits its
    own answer. The pipe is read from the event loop (``add_reader``).
    """

    def __init__(self, spec: ReceiverSpec) -> None:
        self.spec = spec
        context = multiprocessing.get_context("spawn")
        self._control, theirs = context.Pipe()
        self.process = context.Process(
            target=run_receiver, args=(spec, theirs), name=f"dpkit-density-{spec.name}"
        )
        self.process.start()
        theirs.close()
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reading = False

    def attach(self) -> None:
        """Start reading answers on the running loop."""
        asyncio.get_running_loop().add_reader(self._control.fileno(), self._readable)
        self._reading = True

    def detach(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._control.fileno())
            self._reading = False
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(RuntimeError(f"receiver {self.spec.name} was detached"))

    def _readable(self) -> None:
        try:
            ident, ok, body = self._control.recv()
        except (EOFError, OSError):
            for pending in self._waiting.values():
                if not pending.done():
                    pending.set_exception(
                        RuntimeError(f"receiver {self.spec.name} exited unexpectedly")
                    )
            self.detach()
            return
        answered = self._waiting.pop(ident) if ident in self._waiting else None
        if answered is None or answered.done():
            return
        if ok:
            answered.set_result(body)
        else:
            answered.set_exception(RuntimeError(f"receiver {self.spec.name}: {body}"))

    async def request(self, command: str, *args: Any, answer_timeout: float) -> Any:
        if not self._reading:
            raise RuntimeError(f"receiver {self.spec.name} is not running")
        ident = next(self._ids)
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answered
        try:
            self._control.send((ident, command, args))
            async with asyncio.timeout(answer_timeout):
                return await answered
        except TimeoutError:
            raise RuntimeError(
                f"receiver {self.spec.name} did not answer {command} within {answer_timeout:g} s"
            ) from None
        finally:
            self._waiting.pop(ident, None)

    async def mark(self) -> ReceiverMark:
        mark: ReceiverMark = await self.request("mark", answer_timeout=MARK_TIMEOUT_S)
        return mark

    async def stop(self) -> None:
        """Disconnect its sessions and end the process (terminated if it hangs). Idempotent."""
        if self._reading and self.process.is_alive():
            with contextlib.suppress(RuntimeError):
                await self.request("stop", answer_timeout=STOP_TIMEOUT_S)
        self.detach()
        await asyncio.to_thread(self.kill)

    def kill(self) -> None:
        """End the process without asking (bounded); for cleanup after an error."""
        self.process.join(STOP_TIMEOUT_S if not self._reading else 0)
        if self.process.is_alive():
            print(f"receiver {self.spec.name} did not stop in time; terminating it")
            self.process.terminate()
            self.process.join(STOP_TIMEOUT_S)
        self._control.close()


def receiver_specs(
    api_key: str, sessions: int, light_processes: int, decode_sample: int, config: Config
) -> list[ReceiverSpec]:
    """The decoding receiver (the first ``decode_sample`` sessions) and the light ones."""
    specs = []
    if decode_sample:
        specs.append(
            ReceiverSpec(
                "decoding",
                api_key,
                tuple(range(decode_sample)),
                True,
                config.width,
                config.height,
                config.fps,
            )
        )
    rest = list(range(decode_sample, sessions))
    for number in range(min(light_processes, len(rest))):
        share = tuple(rest[number::light_processes])
        specs.append(
            ReceiverSpec(
                f"light-{number + 1}",
                api_key,
                share,
                False,
                config.width,
                config.height,
                config.fps,
            )
        )
    return specs


# --- the measurement --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    sessions: int = 16
    seconds: float = 10.0
    settle: float = 2.0
    speaking: float = 0.0
    receiver_processes: int = 2
    decode_sample: int = 2
    concurrency: int = 8
    width: int = 640
    height: int = 480
    fps: float = 15.0


@dataclass(frozen=True)
class Result:
    """What one run measured, for the sweep's table."""

    sessions: int
    speaking: float
    video_min: float
    video_median: float
    audio_min: float
    audio_median: float
    server_cores: float
    server_cpu_per_session: float
    receiver_cores: float
    rss_per_session_mib: float
    server_lag_p99_ms: float


class Rotation:
    """Keeps ``target`` sessions speaking, replacing a third of them every ``ROTATION_S``.

    New speakers start (and are waited for) before the ones they replace stop, so the count
    does not dip while a speech is synthesised; it may exceed the target for a moment.
    """

    def __init__(self, owners: dict[int, ReceiverProcess], sessions: int, target: int) -> None:
        self._owners = owners
        self._sessions = sessions
        self.target = target
        self._speakers: deque[int] = deque()
        self._next = itertools.cycle(range(sessions))
        self.started = 0
        self.confirmed = 0

    async def _by_owner(self, command: str, indices: Sequence[int]) -> list[Any]:
        groups: dict[ReceiverProcess, list[int]] = {}
        for index in indices:
            groups.setdefault(self._owners[index], []).append(index)
        return await asyncio.gather(
            *(
                r.request(command, group, answer_timeout=SPEECH_TIMEOUT_S)
                for r, group in groups.items()
            )
        )

    def _newcomers(self, count: int) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < count:
            index = next(self._next)
            if index not in self._speakers and index not in chosen:
                chosen.append(index)
        return chosen

    async def begin(self) -> None:
        """Start the first ``target`` speakers and wait until they speak."""
        first = self._newcomers(self.target)
        self.started += len(first)
        self.confirmed += sum(await self._by_owner("start_speaking", first))
        self._speakers.extend(first)

    async def run(self) -> None:
        """Rotate for ever (until cancelled)."""
        chunk = min(max(1, math.ceil(self.target / 3)), self._sessions - self.target)
        if chunk < 1:
            return  # everyone speaks: the receivers keep them at it
        while True:
            await asyncio.sleep(ROTATION_S)
            newcomers = self._newcomers(chunk)
            self.started += len(newcomers)
            self.confirmed += sum(await self._by_owner("start_speaking", newcomers))
            leavers = [self._speakers.popleft() for _ in range(chunk)]
            self._speakers.extend(newcomers)
            await self._by_owner("stop_speaking", leavers)


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):6.2f}  median {statistics.median(values):6.2f}  max {max(values):6.2f}"
    )


def _ratios(values: list[float], expected: float) -> str:
    return (
        f"  delivered / configured: min {min(values) / expected:.2f}  "
        f"median {statistics.median(values) / expected:.2f}"
    )


async def _connect_all(receivers: list[ReceiverProcess], sessions: int, concurrency: int) -> None:
    """Connect every receiver's sessions, ``concurrency`` at a time in all, printing progress."""
    started = time.monotonic()
    remaining = {r: len(r.spec.sessions) for r in receivers}
    connected = 0
    while any(remaining.values()):
        active = [r for r in receivers if remaining[r]]
        share = max(1, concurrency // len(active))
        counts = {r: min(share, remaining[r]) for r in active}
        await asyncio.gather(
            *(
                r.request("connect", count, answer_timeout=CONNECT_TIMEOUT_S + 10)
                for r, count in counts.items()
            )
        )
        for r, count in counts.items():
            remaining[r] -= count
        connected += sum(counts.values())
        print(
            f"  connected {connected}/{sessions} sessions ({time.monotonic() - started:.1f} s)",
            flush=True,
        )


async def _mark_all(
    server: ServerProcess, receivers: list[ReceiverProcess]
) -> tuple[Snapshot, list[ReceiverMark]]:
    server_mark = asyncio.create_task(asyncio.to_thread(server.mark))
    marks = await asyncio.gather(*(r.mark() for r in receivers))
    return await server_mark, list(marks)


async def measure(server: ServerProcess, config: Config) -> Result:
    sessions = config.sessions
    specs = receiver_specs(
        server.api_key, sessions, config.receiver_processes, config.decode_sample, config
    )
    receivers: list[ReceiverProcess] = []
    rotation_task: asyncio.Task[None] | None = None
    try:
        for spec in specs:
            receivers.append(ReceiverProcess(spec))
            receivers[-1].attach()
        before = await asyncio.to_thread(server.mark)
        began = time.monotonic()
        await _connect_all(receivers, sessions, config.concurrency)
        print(f"{sessions} session(s) connected in {time.monotonic() - began:.2f} s")

        owners = {index: r for r in receivers for index in r.spec.sessions}
        rotation = Rotation(owners, sessions, round(config.speaking * sessions))
        if rotation.target:
            began = time.monotonic()
            await rotation.begin()
            print(
                f"{rotation.confirmed} of {rotation.target} first speaker(s) speaking after "
                f"{time.monotonic() - began:.2f} s"
            )
            rotation_task = asyncio.create_task(rotation.run())
        await asyncio.sleep(config.settle)

        server_0, marks_0 = await _mark_all(server, receivers)
        await asyncio.sleep(config.seconds)
        server_1, marks_1 = await _mark_all(server, receivers)
        if rotation_task is not None and rotation_task.done():
            rotation_task.result()  # a rotation that failed is this run's error
    finally:
        if rotation_task is not None:
            rotation_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await rotation_task
        await asyncio.gather(*(r.stop() for r in receivers), return_exceptions=True)
    return report(config, before, server_0, server_1, receivers, marks_0, marks_1, rotation)


def report(
    config: Config,
    before: Snapshot,
    server_0: Snapshot,
    server_1: Snapshot,
    receivers: list[ReceiverProcess],
    marks_0: list[ReceiverMark],
    marks_1: list[ReceiverMark],
    rotation: Rotation,
) -> Result:
    """Print what the window measured; return the figures the sweep tabulates."""
    sessions, fps = config.sessions, config.fps
    window = server_1.clock - server_0.clock
    video_fps: list[float] = []
    audio_fps: list[float] = []
    lost: list[float] = []
    skipped_video: list[float] = []
    skipped_audio: list[float] = []
    late = foreign = 0
    sample_lines: list[str] = []
    checked = passed = changed = 0
    failures: list[str] = []
    speech_changes: list[tuple[float, int]] = []
    for receiver, mark_0, mark_1 in zip(receivers, marks_0, marks_1, strict=True):
        seconds = mark_1.clock - mark_0.clock
        speech_changes += mark_1.speech_changes
        earlier: dict[int, SessionMark] = {s.index: s for s in mark_0.sessions}
        for now in sorted(mark_1.sessions, key=lambda s: s.index):
            then = earlier[now.index]
            video, audio = now.video.minus(then.video), now.audio.minus(then.audio)
            video_fps.append(video.frames / seconds)
            audio_fps.append(audio.frames / seconds)
            lost.append((video.lost + audio.lost) / seconds)
            skipped_video.append(video.skipped / seconds)
            skipped_audio.append(audio.skipped / seconds)
            late += video.late + audio.late
            foreign += video.foreign + audio.foreign
            if receiver.spec.decode:
                decoded_video = now.decoded_video - then.decoded_video
                decoded_audio = now.decoded_audio - then.decoded_audio
                sample_lines.append(
                    f"  session {now.index}: video RTP {video.frames} / decoded {decoded_video}; "
                    f"audio RTP {audio.frames} / decoded {decoded_audio}"
                )
                checked += now.pictures[0] - then.pictures[0]
                passed += now.pictures[1] - then.pictures[1]
                changed += now.pictures[2] - then.pictures[2]
                if now.pictures[3]:
                    failures.append(f"session {now.index}: {now.pictures[3]}")
    cores = os.cpu_count() or 1
    session_seconds = sessions * window

    print(f"window {window:.2f} s, live sessions on the server {server_0.live} -> {server_1.live}")
    if rotation.target:
        fewest, mean, most = speaking_stats(speech_changes, server_0.clock, server_1.clock)
        print(
            f"sessions speaking over the window: min {fewest}  mean {mean:.1f}  max {most}  "
            f"(target {rotation.target}; {rotation.confirmed}/{rotation.started} speeches "
            f"started within the timeout)"
        )
    else:
        fewest, _, most = speaking_stats(speech_changes, server_0.clock, server_1.clock)
        print(f"sessions speaking over the window: min {fewest}  max {most}  (target 0)")
    print(f"video fps per session (RTP frames): {_spread(video_fps)}  (configured {fps:g})")
    print(_ratios(video_fps, fps))
    print(f"audio frames/s per session (RTP): {_spread(audio_fps)}  (configured {AUDIO_FPS:g})")
    print(_ratios(audio_fps, AUDIO_FPS))
    print(
        f"lost packets (sequence gaps) per session: median {statistics.median(lost):.2f}/s, "
        f"worst {max(lost):.2f}/s; late packets {late}, other SSRCs {foreign}"
    )
    print(
        f"frames the server skipped (timestamp gaps) per session: video median "
        f"{statistics.median(skipped_video):.2f}/s worst {max(skipped_video):.2f}/s; audio "
        f"median {statistics.median(skipped_audio):.2f}/s worst {max(skipped_audio):.2f}/s"
    )
    if sample_lines:
        print(f"decoded sample ({len(sample_lines)} session(s)), frames in the window:")
        print("\n".join(sample_lines))
        print(
            f"  picture check: {passed}/{checked} checked pictures passed "
            f"({config.width}x{config.height}, luma, skin at the centre); the picture changed "
            f"{changed} times"
        )
        for failure in failures[:3]:
            print(f"  failed: {failure}")

    server_main = server_1.cpu - server_0.cpu
    server_helpers = server_1.helpers_cpu - server_0.helpers_cpu
    server_cpu = server_main + server_helpers
    server_loop = server_1.loop_cpu - server_0.loop_cpu
    print(
        f"server CPU: {server_cpu / window:.2f} cores ({server_loop / window:.2f} on the "
        f"event-loop thread, {server_helpers / window:.2f} in its encoding worker); "
        f"{server_cpu / session_seconds:.3f} CPU-s per session-second "
        f"({server_loop / session_seconds:.3f} on the loop)"
    )
    print(
        f"  server event-loop lag over the window: p99 {server_1.lag_p99_ms:.1f} ms, "
        f"max {server_1.lag_max_ms:.1f} ms"
    )

    def total_rss(snapshot: Snapshot) -> float:
        return (snapshot.rss_kib + snapshot.helpers_rss_kib) / 1024

    rss_per_session = (total_rss(server_0) - total_rss(before)) / sessions
    print(
        f"server RSS (with its worker): {total_rss(before):.0f} MiB before connecting, "
        f"{total_rss(server_0):.0f} MiB connected (window start): {rss_per_session:.1f} MiB "
        f"per session; {total_rss(server_1):.0f} MiB at the window's end"
    )
    receiver_cpu = 0.0
    for receiver, mark_0, mark_1 in zip(receivers, marks_0, marks_1, strict=True):
        cpu = mark_1.cpu - mark_0.cpu
        receiver_cpu += cpu
        count = len(receiver.spec.sessions)
        print(
            f"receiver {receiver.spec.name} ({count} session(s)): {cpu / window:.2f} cores, "
            f"{cpu / (count * window):.3f} CPU-s per session-second; loop lag p99 "
            f"{mark_1.lag_p99_ms:.1f} ms, max {mark_1.lag_max_ms:.1f} ms"
        )
    print(
        f"receivers' CPU ({len(receivers)} processes): {receiver_cpu / window:.2f} cores, "
        f"{receiver_cpu / session_seconds:.3f} CPU-s per session-second"
    )
    total = (server_cpu + receiver_cpu) / (window * cores)
    print(f"machine: {cores} cores; server + receivers use {total:.0%} of it")
    if server_cpu > 0 and server_loop > 0:
        print(
            f"server-only extrapolation: {cores * session_seconds / server_cpu:.1f} sessions fill "
            f"{cores} cores; {session_seconds / server_loop:.1f} fill the event-loop thread's "
            "one core"
        )
    return Result(
        sessions,
        config.speaking,
        min(video_fps) / fps,
        statistics.median(video_fps) / fps,
        min(audio_fps) / AUDIO_FPS,
        statistics.median(audio_fps) / AUDIO_FPS,
        server_cpu / window,
        server_cpu / session_seconds,
        receiver_cpu / window,
        rss_per_session,
        server_1.lag_p99_ms,
    )


def run(config: Config) -> Result:
    """One run: a fresh server process and fresh receivers, all stopped at the end."""
    print(
        f"{config.sessions} session(s), {config.width}x{config.height} at {config.fps:g} fps, "
        f"{config.seconds:g} s measured after {config.settle:g} s settling; speaking "
        f"{config.speaking:g} ({round(config.speaking * config.sessions)} at a time); "
        f"{config.receiver_processes} light receiver process(es), {config.decode_sample} "
        "session(s) decoded; loopback only",
        flush=True,
    )
    server = start_server(config.sessions, config.width, config.height, config.fps)
    try:
        result = asyncio.run(measure(server, config))
    finally:
        server.stop()
    print(f"server process exit code {server.process.exitcode}")
    return result


def add_options(parser: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The options a run takes (the sweep sets --sessions and --speaking itself)."""
    defaults = Config()
    if not sweep:
        parser.add_argument(
            "--sessions", type=int, default=defaults.sessions, help="concurrent sessions (16)"
        )
        parser.add_argument(
            "--speaking",
            type=float,
            default=defaults.speaking,
            help="share of sessions kept speaking at any time, rotating, 0..1 (0)",
        )
    parser.add_argument(
        "--seconds", type=float, default=defaults.seconds, help="measured window, s (10)"
    )
    parser.add_argument(
        "--settle", type=float, default=defaults.settle, help="wait after connecting, s (2)"
    )
    parser.add_argument(
        "--receiver-processes",
        type=int,
        default=defaults.receiver_processes,
        help="light receiver processes, counting RTP without decoding (2)",
    )
    parser.add_argument(
        "--decode-sample",
        type=int,
        default=defaults.decode_sample,
        help="sessions fully decoded and checked, in one more process (2; 0: none)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help="sessions connecting at once (8)",
    )
    parser.add_argument("--width", type=int, default=defaults.width, help="video width (640)")
    parser.add_argument("--height", type=int, default=defaults.height, help="video height (480)")
    parser.add_argument("--fps", type=float, default=defaults.fps, help="video fps (15)")


def config_from(
    parser: argparse.ArgumentParser, args: argparse.Namespace, sessions: int, speaking: float
) -> Config:
    """Validate the options (``parser.error`` names the bad one) and build a run's config."""
    if not 1 <= sessions <= MAX_SESSIONS:
        parser.error(f"--sessions must be in 1..{MAX_SESSIONS}, got {sessions}")
    if not 0 <= speaking <= 1:
        parser.error(f"--speaking must be in 0..1, got {speaking:g}")
    if not 0 < args.seconds <= 600:
        parser.error(f"--seconds must be in (0, 600], got {args.seconds:g}")
    if not 0 <= args.settle <= 60:
        parser.error(f"--settle must be in [0, 60], got {args.settle:g}")
    if not 1 <= args.receiver_processes <= 16:
        parser.error(f"--receiver-processes must be in 1..16, got {args.receiver_processes}")
    if not 0 <= args.decode_sample <= min(sessions, 16):
        parser.error(
            f"--decode-sample must be in 0..{min(sessions, 16)} (the sessions, at most 16), "
            f"got {args.decode_sample}"
        )
    if not 1 <= args.concurrency <= 64:
        parser.error(f"--concurrency must be in 1..64, got {args.concurrency}")
    try:
        PersonaSettings(video_width=args.width, video_height=args.height, video_fps=args.fps)
    except ConfigurationError as exc:
        parser.error(exc.message)
    return Config(
        sessions,
        args.seconds,
        args.settle,
        speaking,
        args.receiver_processes,
        args.decode_sample,
        args.concurrency,
        args.width,
        args.height,
        args.fps,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_options(parser)
    args = parser.parse_args()
    config = config_from(parser, args, args.sessions, args.speaking)
    with stopped_cleanly():
        run(config)


@contextlib.contextmanager
def stopped_cleanly() -> Iterator[None]:
    """Ctrl-C and a failed run end with one line, not a traceback (every process is stopped)."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted: the server and receiver processes were stopped", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as exc:
        print(f"session_density failed: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
