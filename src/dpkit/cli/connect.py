"""``dpkit connect``: connect to a Digital Person and show the connection's progress.

In a terminal it draws a progress bar through the five connection states, then the session id and
how long each step took, then live media figures; on failure, the error's name, message and what
the user can do about it. Interactive on a terminal, the media figures are a fixed status line
above a prompt (:mod:`dpkit.cli.terminal`), so nothing printed overwrites what is typed. With
``--json`` it writes one JSON object per line instead, so other programs can follow the state.

Only the parser is built at import time: the client, rich and numpy load when the command runs,
so ``dpkit connect --help`` is quick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO
from urllib.parse import parse_qs, urlsplit, urlunsplit

from dpkit.cli.parsers import (
    add_data_dir_options,
    command_parser,
    non_negative_int,
    positive_float,
)
from dpkit.errors import ConfigurationError, DpkitError

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

    from dpkit.cli.terminal import ConsentQuestions, Terminal
    from dpkit.client import RetryOptions, Scene
    from dpkit.client.consent import ConsentGate
    from dpkit.client.devices import DeviceProvider
    from dpkit.client.options import MediaDevices
    from dpkit.protocol.states import ConnectionStateData, ConnectionStateName

HELP = "connect to a Digital Person and show the connection's progress"
DESCRIPTION = """\
Connect to a Digital Person. TARGET is one of:
  an API key                      (base64 JSON with 'authServer', as the Web SDK takes)
  http(s)://HOST:PORT             a dpkit server on this machine; its key is read from its
                                  data directory, found as 'dpkit serve' finds it
  ws(s)://HOST/PATH?access_token=JWT   a session socket URL and token
Without TARGET: $DPKIT_API_KEY, else http://127.0.0.1:8080.

The microphone and camera are this machine's own unless --devices or --media-file says
otherwise; the first time a server asks for one you are asked to allow it ([y/N]), and the
answer is remembered ('dpkit permissions' lists and resets the answers).

On a terminal connect is interactive: a status line shows the persona's video and audio and
whether the persona is muted and your microphone and camera are on, and below it a prompt
takes /m (microphone), /c (camera), /p (persona mute), /q (quit, or Ctrl-D) and anything else
as words said to the persona. Nothing printed overwrites what you are typing.

Exit status: 0 when the session connected and ended normally, 1 when connect failed or the
session was ended by the server, 2 for bad arguments.
"""

DEVICE_NAMES = ("microphone", "camera")
DEVICE_SOURCES = ("system", "synthetic", "none")
#: What a TARGET URL may start with.
TARGET_SCHEMES = ("http", "https", "ws", "wss")


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "connect", HELP, DESCRIPTION)
    parser.add_argument("target", nargs="?", metavar="TARGET", help="API key or URL (see above)")
    add_client_options(parser)
    add_data_dir_options(parser)  # where an http:// TARGET's key is read, as 'dpkit serve' finds it
    parser.set_defaults(run=run)


def add_client_options(
    parser: argparse.ArgumentParser,
    *,
    default_devices: str = "system",
    default_duration: float | None = None,
) -> None:
    """The client's options, shared by ``connect`` and ``demo`` (each with its own defaults)."""
    parser.add_argument(
        "--json", action="store_true", help="write one JSON object per line for each event"
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=default_duration,
        metavar="SECONDS",
        help="disconnect after this long connected (default: "
        + (
            "stay until Ctrl-C or the server ends the session)"
            if default_duration is None
            else f"{default_duration:g})"
        ),
    )
    parser.add_argument(
        "--devices",
        choices=DEVICE_SOURCES,
        default=default_devices,
        help="where the microphone and camera come from: this machine's real devices "
        "(PortAudio, v4l2), used only once you allow them; a tone and a test pattern "
        f"(synthetic); or none at all (default: {default_devices})",
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
        "--retries",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="attempts in all while every Digital Person is busy (default 0: the Web SDK's 50)",
    )
    parser.add_argument(
        "--retry-delay",
        type=non_negative_int,
        default=0,
        metavar="MS",
        help="milliseconds between those attempts (default 0: the Web SDK's 200)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="give up connecting after this long (default: no limit)",
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
    from dpkit.client.options import MediaDevices

    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names in ([], ["none"]):
        return MediaDevices()
    unknown = sorted(set(names) - set(DEVICE_NAMES))
    if unknown:
        raise ConfigurationError(f"{option}: unknown device {', '.join(unknown)}")
    return MediaDevices("microphone" in names, "camera" in names)


def check_media_file(path: Path) -> None:
    """Refuse a ``--media-file`` that cannot be played, naming it, before anything connects."""
    if not path.exists():
        raise ConfigurationError(f"--media-file: no such file {path}")
    if not path.is_file():
        raise ConfigurationError(f"--media-file: {path} is not a file")
    if not os.access(path, os.R_OK):
        raise ConfigurationError(f"--media-file: cannot read {path} (permission denied)")


@dataclass(frozen=True)
class Target:
    """What to connect to: an API key, or a socket URL and token."""

    api_key: str | None = None
    server_uri: str | None = None
    access_token: str | None = None


def resolve_target(
    text: str | None, data_dir: Path | None, config_file: Path | None = None
) -> Target:
    """Turn TARGET into an API key or a socket URL and token.

    An http(s):// TARGET is a server on this machine: its key is read (never created) from the
    data directory found as ``dpkit serve`` finds it (``--data-dir``, ``DPKIT_DATA_DIR``, the
    ``--config`` file, the default).
    """
    text = text or os.environ.get("DPKIT_API_KEY") or "http://127.0.0.1:8080"
    scheme = urlsplit(text).scheme.lower() if "://" in text else None
    if scheme in ("ws", "wss"):
        parts = urlsplit(text)
        token = parse_qs(parts.query).get("access_token", [""])[0]
        if not token:
            raise ConfigurationError("a ws:// TARGET needs ?access_token=<jwt>")
        return Target(server_uri=urlunsplit(parts._replace(query="")), access_token=token)
    if scheme in ("http", "https"):
        from dpkit.server.endpoints import TOKEN_PATH
        from dpkit.server.keys import KEYS_FILE, KeyStore
        from dpkit.server.settings import existing_data_dir

        try:
            directory = existing_data_dir(data_dir, config_file=config_file, needs=KEYS_FILE)
            keys = KeyStore.load(directory).keys
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"no API key for {text}: {exc.message}",
                advice="Pass the API key 'dpkit serve' printed as TARGET, or the --data-dir or "
                "--config of the server on this machine.",
            ) from None
        if not keys:
            raise ConfigurationError(
                f"no API key for {text}: {directory / KEYS_FILE} holds none",
                advice="Add one with 'dpkit keys add', or pass the API key as TARGET.",
            )
        return Target(api_key=keys[0].api_key(text.rstrip("/") + TOKEN_PATH))
    if scheme is not None:
        # An API key is base64, which has no "://": this was meant as a URL.
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ConfigurationError(
            f"TARGET {shown}: dpkit connects to http://, https://, ws:// or wss:// URLs "
            f"(not {scheme[:20]}://), or takes an API key"
        )
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
    """What arrived from the persona in the last interval, and what is muted or off now."""

    video_frames: int = 0
    video_size: tuple[int, int] = (0, 0)
    audio_samples: list[np.ndarray] = field(default_factory=list)
    #: When the server will end the idle session (``time.monotonic()``), once it has warned.
    idle_deadline: float | None = None
    persona_muted: bool = False
    #: Whether the user's microphone and camera are on (None: not known yet).
    microphone: bool | None = None
    camera: bool | None = None

    def closes_in_s(self) -> float | None:
        if self.idle_deadline is None:
            return None
        return max(0.0, self.idle_deadline - time.monotonic())

    def audio_dbfs(self) -> float:
        import numpy as np

        if not self.audio_samples:
            return -math.inf
        samples = np.concatenate(self.audio_samples).astype(np.float64) / 32768.0
        rms = float(np.sqrt(np.mean(samples**2)))
        return 20 * math.log10(rms) if rms > 0 else -math.inf


def media_line(stats: MediaStats) -> str:
    """The media figures as one line of rich markup; a muted persona shows no level."""
    width, height = stats.video_size
    parts = [f"video {width}x{height} {stats.video_frames} fps"]
    if stats.persona_muted:
        parts.append("persona audio: [yellow]muted[/]")
    else:
        dbfs = stats.audio_dbfs()
        parts.append(
            f"persona audio: {dbfs:.1f} dBFS" if math.isfinite(dbfs) else "persona audio: silent"
        )
    for name, active in (("microphone", stats.microphone), ("camera", stats.camera)):
        if active is not None:
            parts.append(f"{name}: on" if active else f"{name}: [yellow]off[/]")
    closes_in = stats.closes_in_s()
    if closes_in is not None:
        parts.append(f"[yellow]idle: closes in {closes_in:.0f} s[/]")
    return " | ".join(parts)


def print_error(console: Console, error: DpkitError) -> None:
    """An error's message and advice, and its cause's detail when that says more.

    Printed as text, never as markup: a message may hold brackets (``dpkit[audio]``).
    """
    from rich.markup import escape

    console.print(f"  {escape(error.message)}")
    cause = error.__cause__
    detail = getattr(cause, "detail", "") or getattr(cause, "message", "")
    if (
        isinstance(cause, DpkitError)
        and detail
        and detail not in error.message
        and detail not in error.advice
    ):
        console.print(f"  because: {escape(detail)}")
    if error.advice:
        console.print(f"  [yellow]What to do[/yellow]: {escape(error.advice)}")


def print_usage_error(console: Console, error: ConfigurationError) -> None:
    """A bad argument or setting: exit status 2 follows."""
    from rich.markup import escape

    console.print(f"[red]{escape(error.name)}[/red]: {escape(error.message)}")
    if error.advice:
        console.print(f"  [yellow]What to do[/yellow]: {escape(error.advice)}")


class ConsoleReporter:
    """A progress bar, then a summary and live media figures (on the terminal's status line)."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

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
        #: The interactive terminal, once the session runs on one: output goes above its lines.
        self.terminal: Terminal | None = None

    def _print(self, markup: str) -> None:
        if self.terminal is not None and self.terminal.active:
            self.terminal.print(markup, markup=True)
        else:
            self._console.print(markup)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The progress bar taken off the screen for the block (a question is being asked)."""
        live = self._progress.live
        if not live.is_started:
            yield
            return
        live.transient = True  # stopping erases the bar rather than leaving a copy behind
        self._progress.stop()
        live.transient = False
        try:
            yield
        finally:
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
        from rich.markup import escape

        self._progress.stop()
        self._console.print(f"[red]Connection failed[/red]: [bold]{escape(error.name)}[/bold]")
        print_error(self._console, error)

    def media(self, stats: MediaStats) -> None:
        line = media_line(stats)
        if self.terminal is not None and self.terminal.active:
            self.terminal.status(line)
        else:
            self._console.print(f"  {line}", soft_wrap=True)  # one line, whatever the width

    def idle_warning(self, closes_in_s: float) -> None:
        self._print(
            f"  [yellow]No interaction: the server ends this session in {closes_in_s:.0f} s[/]"
        )

    def disconnected(self, session_id: str, reason: str) -> None:
        if self.terminal is not None:
            self.terminal.stop()  # the session is over: the terminal goes back as it was
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
            personaMuted=stats.persona_muted,
            microphone=stats.microphone,
            camera=stats.camera,
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
    """The options from the command line; a bad one raises ``ConfigurationError`` (exit 2)."""
    from dpkit.client import RetryOptions
    from dpkit.media.files import MediaFileDevices

    if args.media_file is not None:
        check_media_file(args.media_file)
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
            _is_terminal(sys.stdin) and not args.json
            if args.interactive is None
            else args.interactive
        ),
        play=args.play,
    )


def device_provider(name: str) -> DeviceProvider:
    """The device provider ``--devices`` names."""
    from dpkit.client import NoDevices, SyntheticDevices

    if name == "system":
        from dpkit.media.capture import SystemDevices

        return SystemDevices()
    return SyntheticDevices() if name == "synthetic" else NoDevices()


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # a path or a key stays whole
    try:
        options = client_options(args)
        target = resolve_target(args.target, args.data_dir, args.config)
    except ConfigurationError as exc:
        print_usage_error(console, exc)
        return 2
    return asyncio.run(connect_and_show(target, options))


def _is_terminal(stream: TextIO | None) -> bool:
    return stream is not None and stream.isatty()


async def connect_and_show(target: Target, options: ClientOptions) -> int:
    """Connect, report every step, stay for the duration, and disconnect. Returns the exit code."""
    from rich.console import Console

    from dpkit.client import Scene
    from dpkit.client.consent import ConsentGate, FileConsentStore, default_prompt
    from dpkit.collector import freeze_heap_once

    # This process is dpkit's own: what its imports built (aiortc, PyAV, NumPy ...) lives as long
    # as it does, out of the collector's full passes, which would walk it in the middle of the
    # connect. A library import must not do this to its host application (dpkit.collector).
    freeze_heap_once()

    console = Console(stderr=True, soft_wrap=True)  # a path or a key stays whole
    stderr = sys.stderr  # the real one: the progress display replaces sys.stderr while it runs
    console_reporter = None if options.json else ConsoleReporter(console)
    reporter: Reporter = console_reporter if console_reporter is not None else JsonReporter()
    # On a POSIX terminal dpkit asks for consent itself, so nothing draws over the question.
    questions = None
    terminal = None
    if os.name == "posix" and _is_terminal(sys.stdin):
        from dpkit.cli.terminal import ConsentQuestions, Terminal

        pause = console_reporter.paused if console_reporter is not None else contextlib.nullcontext
        questions = ConsentQuestions(pause, stderr)
        if options.interactive and console_reporter is not None and _is_terminal(stderr):
            terminal = Terminal(console)
    gate = ConsentGate(FileConsentStore(), questions if questions is not None else default_prompt())
    scene = Scene(
        target.api_key,
        requested_media_devices=options.requested,
        required_media_devices=options.required,
        devices=options.devices,
        play_audio=options.play,
        consent=gate,
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
            hint = command_line_hint(error)
            if hint is not None and console_reporter is not None:
                console.print(f"  [yellow]With dpkit connect[/yellow]: {hint}")
            return 1
        reporter.connected(session_id, step_durations(entered, started))
        keys = session_keys(scene, console, options, terminal, gate, console_reporter, questions)
        await stay_connected(scene, reporter, ended, options.duration, keys)
        await scene.close()
        if not ended.is_set():
            # We hung up: the scene reports no disconnect event then (as the Web SDK), but
            # the feed still ends with one line saying how the session ended.
            reporter.disconnected(session_id, "normal")
    finally:
        await scene.close()
        if terminal is not None:
            terminal.stop()
        reporter.close()
    return 0 if outcome.get("reason", "normal") == "normal" else 1


def command_line_hint(error: DpkitError) -> str | None:
    """The options that get past a missing device, which the SDK's advice names in Python."""
    missing = error.name == "notSupported" or (
        error.name == "noUserMedia" and "not available" in error.message
    )
    if not missing:
        return None
    return (
        "--devices synthetic for a tone and a test pattern, --media-file FILE to play a file, "
        "or --request none --require none to connect with no media."
    )


Keys = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def session_keys(
    scene: Scene,
    console: Console,
    options: ClientOptions,
    terminal: Terminal | None,
    gate: ConsentGate,
    reporter: ConsoleReporter | None,
    questions: ConsentQuestions | None,
) -> Keys | None:
    """What reads the person's commands and text while connected, if anything does."""
    if terminal is not None and reporter is not None:
        from dpkit.cli.terminal import TerminalKeys

        terminal.start()
        reporter.terminal = terminal
        if questions is not None:
            questions.terminal = terminal
        return lambda stop: TerminalKeys(scene, terminal, stop).run()
    if not options.interactive:
        return None
    from dpkit.cli.session_keys import run_keys

    # Standard input is read line by line for commands now: a consent question could not get
    # its answer, so nobody is asked (a device turned on is declined without counting it).
    gate.prompt = None
    return lambda stop: run_keys(
        scene, lambda text: console.print(text, markup=False, highlight=False), stop
    )


def step_durations(entered: dict[ConnectionStateName, float], started: float) -> dict[str, float]:
    """How long each state lasted, from connect() to Connected."""
    from dpkit.protocol.states import ConnectionStateName

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
    keys: Keys | None = None,
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
    if keys is not None:
        counters.append(asyncio.create_task(keys(stop)))
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
                stats.persona_muted = scene.is_persona_muted()
                stats.microphone = scene.is_microphone_active()
                stats.camera = scene.is_camera_active()
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
