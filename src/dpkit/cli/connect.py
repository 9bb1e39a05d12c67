"""``dpkit connect``: connect to a Digital Person and show the connection's progress.

In a terminal it draws a progress bar through the five connection states, then the session id and
how long each step took, then live media figures; on failure, the error's name, message and what
the user can do about it. With ``--json`` it writes one JSON object per line instead, so other
programs can follow the state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from dpkit.cli.parsers import command_parser
from dpkit.cli.session_keys import run_keys
from dpkit.client import NoDevices, RetryOptions, Scene, SyntheticDevices
from dpkit.client.devices import DeviceProvider
from dpkit.client.options import MediaDevices
from dpkit.errors import ConfigurationError, DpkitError
from dpkit.media.capture import SystemDevices
from dpkit.media.files import MediaFileDevices
from dpkit.protocol.states import ConnectionStateData, ConnectionStateName
from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.keys import KeyStore
from dpkit.server.settings import default_data_dir

HELP = "connect to a Digital Person and show the connection's progress"
DESCRIPTION = """\
Connect to a Digital Person. TARGET is one of:
  an API key                      (base64 JSON with 'authServer', as the Web SDK takes)
  http(s)://HOST:PORT             a dpkit server on this machine; its key is read from --data-dir
  ws(s)://HOST/PATH?access_token=JWT   a session socket URL and token
Without TARGET: $DPKIT_API_KEY, else http://127.0.0.1:8080.

Exit status: 0 when the session connected and ended normally, 1 when connect failed or the
session was ended by the server, 2 for bad arguments.
"""

DEVICE_NAMES = ("microphone", "camera")


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "connect", HELP, DESCRIPTION)
    parser.add_argument("target", nargs="?", metavar="TARGET", help="API key or URL (see above)")
    add_client_options(parser)
    parser.add_argument(
        "--data-dir", type=Path, help="the local server's data directory (for an http:// TARGET)"
    )
    parser.set_defaults(run=run)


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="write one JSON object per line for each event"
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="disconnect after this long connected (default: stay until Ctrl-C or the server "
        "ends the session)",
    )
    parser.add_argument(
        "--devices",
        choices=["synthetic", "system", "none"],
        default="synthetic",
        help="where the microphone and camera come from: a tone and a test pattern, this "
        "machine's real devices (PortAudio, v4l2), or none at all (default: synthetic)",
    )
    parser.add_argument(
        "--media-file",
        type=Path,
        metavar="FILE",
        help="use a media file's audio and video as the microphone and camera (overrides "
        "--devices)",
    )
    parser.add_argument(
        "--request",
        metavar="DEVICES",
        help="devices to request, comma-separated, or 'none' (default: microphone,camera)",
    )
    parser.add_argument(
        "--require",
        metavar="DEVICES",
        help="devices connect must get, comma-separated, or 'none' (default: microphone)",
    )
    parser.add_argument(
        "--retries", type=int, default=0, help="attempts while the server is busy (default 50)"
    )
    parser.add_argument(
        "--retry-delay", type=int, default=0, metavar="MS", help="delay between them (default 200)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up connecting after this long"
    )
    parser.add_argument(
        "--interactive",
        "-i",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read commands and text from standard input while connected: /m microphone, "
        "/c camera, /p persona mute, /q quit, anything else is said to the persona "
        "(default: on when standard input is a terminal)",
    )
    parser.add_argument(
        "--play", action="store_true", help="play the persona's voice on this machine's speaker"
    )


def parse_devices(text: str | None, option: str) -> MediaDevices | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names in ([], ["none"]):
        return MediaDevices()
    unknown = sorted(set(names) - set(DEVICE_NAMES))
    if unknown:
        raise ConfigurationError(f"{option}: unknown device {', '.join(unknown)}")
    return MediaDevices("microphone" in names, "camera" in names)


@dataclass(frozen=True)
class Target:
    """What to connect to: an API key, or a socket URL and token."""

    api_key: str | None = None
    server_uri: str | None = None
    access_token: str | None = None


def resolve_target(text: str | None, data_dir: Path | None) -> Target:
    """Turn TARGET into an API key or a socket URL and token."""
    text = text or os.environ.get("DPKIT_API_KEY") or "http://127.0.0.1:8080"
    scheme = urlsplit(text).scheme
    if scheme in ("ws", "wss"):
        parts = urlsplit(text)
        token = parse_qs(parts.query).get("access_token", [""])[0]
        if not token:
            raise ConfigurationError("a ws:// TARGET needs ?access_token=<jwt>")
        return Target(server_uri=urlunsplit(parts._replace(query="")), access_token=token)
    if scheme in ("http", "https"):
        directory = data_dir or default_data_dir()
        if not (directory / "keys.json").exists():
            raise ConfigurationError(
                f"no API key for {text}: pass the key the server printed, or --data-dir of a "
                f"server on this machine (looked in {directory})"
            )
        keys = KeyStore.load_or_create(directory).keys
        return Target(api_key=keys[0].api_key(text.rstrip("/") + TOKEN_PATH))
    return Target(api_key=text)


# --- reporting ----------------------------------------------------------------------------------


class Reporter(Protocol):
    def state(self, data: ConnectionStateData, elapsed_s: float) -> None: ...
    def connected(self, session_id: str, steps: dict[str, float]) -> None: ...
    def failed(self, error: DpkitError) -> None: ...
    def media(self, stats: MediaStats) -> None: ...
    def idle_warning(self, closes_in_s: float) -> None: ...
    def disconnected(self, session_id: str, reason: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class MediaStats:
    """What arrived from the persona in the last interval."""

    video_frames: int = 0
    video_size: tuple[int, int] = (0, 0)
    audio_samples: list[np.ndarray] = field(default_factory=list)
    #: When the server will end the idle session (``time.monotonic()``), once it has warned.
    idle_deadline: float | None = None

    def closes_in_s(self) -> float | None:
        if self.idle_deadline is None:
            return None
        return max(0.0, self.idle_deadline - time.monotonic())

    def audio_dbfs(self) -> float:
        if not self.audio_samples:
            return -math.inf
        samples = np.concatenate(self.audio_samples).astype(np.float64) / 32768.0
        rms = float(np.sqrt(np.mean(samples**2)))
        return 20 * math.log10(rms) if rms > 0 else -math.inf


class ConsoleReporter:
    """A progress bar, then a summary and live media figures."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(bar_width=30),
            TextColumn(
                "{task.percentage:>3.0f}%  step {task.fields[step]}/{task.fields[total_steps]}"
            ),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("Disconnected", total=100, step=0, total_steps=5)
        self._progress.start()

    def state(self, data: ConnectionStateData, elapsed_s: float) -> None:
        if data.queue is not None:
            queue = data.queue
            self._progress.console.print(
                f"{elapsed_s * 1000:7.1f} ms  waiting for a Digital Person: position "
                f"{queue.position} of {queue.size}, about {round(queue.eta_ms / 1000)} s"
            )
            return
        self._progress.console.print(
            f"{elapsed_s * 1000:7.1f} ms  {data.name.value:<26} {data.percentage_loaded:>3.0f}%  "
            f"step {data.current_step}/{data.total_steps}"
        )
        self._progress.update(
            self._task,
            description=data.name.value,
            completed=data.percentage_loaded,
            step=data.current_step,
            total_steps=data.total_steps,
        )

    def connected(self, session_id: str, steps: dict[str, float]) -> None:
        self._progress.stop()
        self._console.print(f"[green]Connected[/green]: session id [bold]{session_id}[/bold]")
        for name, seconds in steps.items():
            self._console.print(f"  {name:<28} {seconds * 1000:8.1f} ms")

    def failed(self, error: DpkitError) -> None:
        self._progress.stop()
        self._console.print(f"[red]Connection failed[/red]: [bold]{error.name}[/bold]")
        self._console.print(f"  {error.message}")
        if error.advice:
            self._console.print(f"  [yellow]What to do[/yellow]: {error.advice}")

    def media(self, stats: MediaStats) -> None:
        width, height = stats.video_size
        closes_in = stats.closes_in_s()
        countdown = "" if closes_in is None else f"  [yellow]idle: closes in {closes_in:.0f} s[/]"
        self._console.print(
            f"  receiving video {width}x{height} at {stats.video_frames} fps, "
            f"audio {stats.audio_dbfs():.1f} dBFS{countdown}"
        )

    def idle_warning(self, closes_in_s: float) -> None:
        self._console.print(
            f"  [yellow]No interaction: the server ends this session in {closes_in_s:.0f} s[/]"
        )

    def disconnected(self, session_id: str, reason: str) -> None:
        self._console.print(f"Disconnected: session {session_id}, reason [bold]{reason}[/bold]")

    def close(self) -> None:
        self._progress.stop()


class JsonReporter:
    """One JSON object per line on stdout."""

    def __init__(self) -> None:
        self._out = sys.stdout

    def _emit(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
        self._out.flush()

    def state(self, data: ConnectionStateData, elapsed_s: float) -> None:
        self._emit("state", **data.to_json(), elapsedMs=round(elapsed_s * 1000, 1))

    def connected(self, session_id: str, steps: dict[str, float]) -> None:
        self._emit(
            "connected",
            sessionId=session_id,
            stepsMs={name: round(seconds * 1000, 1) for name, seconds in steps.items()},
        )

    def failed(self, error: DpkitError) -> None:
        self._emit("error", name=error.name, message=error.message, advice=error.advice)

    def media(self, stats: MediaStats) -> None:
        dbfs = stats.audio_dbfs()
        self._emit(
            "media",
            videoFps=stats.video_frames,
            videoSize=list(stats.video_size),
            audioDbfs=None if math.isinf(dbfs) else round(dbfs, 1),
        )

    def idle_warning(self, closes_in_s: float) -> None:
        self._emit("idleWarning", closesInMs=round(closes_in_s * 1000))

    def disconnected(self, session_id: str, reason: str) -> None:
        self._emit("disconnected", sessionId=session_id, reason=reason)

    def close(self) -> None:
        pass


# --- the session --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientOptions:
    json: bool
    duration: float | None
    devices: DeviceProvider
    requested: MediaDevices | None
    required: MediaDevices | None
    retry: RetryOptions
    timeout: float | None
    interactive: bool = False
    play: bool = False


def client_options(args: argparse.Namespace) -> ClientOptions:
    return ClientOptions(
        json=args.json,
        duration=args.duration,
        devices=(
            MediaFileDevices(args.media_file) if args.media_file else device_provider(args.devices)
        ),
        requested=parse_devices(args.request, "--request"),
        required=parse_devices(args.require, "--require"),
        retry=RetryOptions(args.retries, args.retry_delay),
        timeout=args.timeout,
        interactive=(
            sys.stdin.isatty() and not args.json if args.interactive is None else args.interactive
        ),
        play=args.play,
    )


def device_provider(name: str) -> DeviceProvider:
    if name == "system":
        return SystemDevices()
    return SyntheticDevices() if name == "synthetic" else NoDevices()


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        options = client_options(args)
        target = resolve_target(args.target, args.data_dir)
    except ConfigurationError as exc:
        console.print(f"[red]{exc.name}[/red]: {exc.message}")
        return 2
    return asyncio.run(connect_and_show(target, options))


async def connect_and_show(
    target: Target,
    options: ClientOptions,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Connect, report every step, stay for the duration, and disconnect. Returns the exit code."""
    reporter: Reporter = JsonReporter() if options.json else ConsoleReporter(Console(stderr=True))
    scene = Scene(
        target.api_key,
        requested_media_devices=options.requested,
        required_media_devices=options.required,
        devices=options.devices,
        play_audio=options.play,
    )
    started = time.perf_counter()
    entered: dict[ConnectionStateName, float] = {}

    def on_state(data: ConnectionStateData) -> None:
        now = time.perf_counter()
        entered.setdefault(data.name, now)
        reporter.state(data, now - started)

    ended = asyncio.Event()
    outcome: dict[str, str] = {}

    def on_disconnected(_scene: Scene, session_id: str, reason: str) -> None:
        outcome["reason"] = reason
        reporter.disconnected(session_id, reason)
        ended.set()

    scene.connection_state.on_connection_state_updated.add_listener(on_state)
    scene.on_disconnected_event.add_listener(on_disconnected)
    try:
        try:
            session_id = await scene.connect(
                target.server_uri,
                target.access_token,
                retry_options=options.retry,
                connect_timeout=options.timeout,
            )
        except DpkitError as error:
            reporter.failed(error)
            return 1
        reporter.connected(session_id, step_durations(entered, started))
        await stay_connected(scene, reporter, ended, options.duration, options.interactive)
    finally:
        await scene.close()
        reporter.close()
    return 0 if outcome.get("reason", "normal") == "normal" else 1


def step_durations(entered: dict[ConnectionStateName, float], started: float) -> dict[str, float]:
    """How long each state lasted, from connect() to Connected."""
    durations: dict[str, float] = {}
    previous = started
    previous_name = "token and devices"
    for name in ConnectionStateName:
        if name in entered:
            durations[previous_name] = entered[name] - previous
            previous, previous_name = entered[name], name.value
    return durations


async def stay_connected(
    scene: Scene,
    reporter: Reporter,
    ended: asyncio.Event,
    duration: float | None,
    interactive: bool = False,
) -> None:
    """Report media once a second until the duration passes, the session ends, or Ctrl-C."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stats = MediaStats()

    def on_idle_warning(_scene: Scene, closes_in_s: float) -> None:
        stats.idle_deadline = time.monotonic() + closes_in_s
        reporter.idle_warning(closes_in_s)

    scene.on_idle_warning.add_listener(on_idle_warning)
    counters = [
        asyncio.create_task(count_video(scene, stats)),
        asyncio.create_task(count_audio(scene, stats)),
    ]
    if interactive:
        console = Console(stderr=True)
        counters.append(asyncio.create_task(run_keys(scene, console.print, stop)))
    deadline = None if duration is None else loop.time() + duration
    try:
        while not ended.is_set() and not stop.is_set():
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - loop.time()))
            waiters = [asyncio.create_task(ended.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait(waiters, timeout=timeout)
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            if not ended.is_set():
                reporter.media(stats)
                stats.video_frames, stats.audio_samples = 0, []
            if deadline is not None and loop.time() >= deadline:
                break
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for task in counters:
            task.cancel()
        await asyncio.gather(*counters, return_exceptions=True)
    if not ended.is_set():
        await scene.disconnect()


async def count_video(scene: Scene, stats: MediaStats) -> None:
    async for frame in scene.video_frames():
        stats.video_frames += 1
        stats.video_size = (frame.width, frame.height)


async def count_audio(scene: Scene, stats: MediaStats) -> None:
    async for frame in scene.audio_frames():
        samples = frame.to_ndarray().reshape(-1)
        stats.audio_samples.append(samples)
