"""A real sound server for capture tests on machines with no sound card.

The ``virtual_audio`` fixture starts a private PulseAudio daemon whose only sink is a null sink,
``dpkit_sink``, with that sink's monitor as the default source, and plays a 440 Hz tone into the
sink. PortAudio reaches it through ALSA's ``pulse`` plugin (``libasound2-plugins``), so the
default PortAudio input records the tone: real capture, end to end, with no hardware.

The daemon runs in user mode from a temporary directory, even as root (PulseAudio only warns),
and the test process finds it through ``PULSE_SERVER``. ``scripts/setup_audio`` installs what
it needs; without it the fixture skips and says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dpkit.media.capture import BackendMissing, load_portaudio, rescan_audio

SINK = "dpkit_sink"
SAMPLE_RATE = 48000
TONE_HZ = 440.0
TONE_PEAK_DBFS = -20.0

READY_TIMEOUT_S = 10.0
"""How long the daemon and the tone may take to come up: a bound, not an expectation."""

STOP_TIMEOUT_S = 5.0
POLL_S = 0.05
TOOLS = ("pulseaudio", "pactl", "pacat")


@dataclass(frozen=True)
class VirtualAudio:
    """A running private PulseAudio server playing a tone into its null sink."""

    server: str
    sink: str
    source: str
    tone_hz: float
    tone_peak_dbfs: float


@pytest.fixture(scope="module")
def virtual_audio() -> Iterator[VirtualAudio]:
    """A private PulseAudio daemon playing a 440 Hz tone; its sink's monitor is the default mic."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the virtual sound card is PulseAudio's null sink, set up here for Linux only")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"PulseAudio is not installed ({', '.join(missing)}): run scripts/setup_audio")
    try:
        load_portaudio()
    except BackendMissing as exc:
        pytest.skip(f"{exc}")
    with running_virtual_audio() as audio:
        yield audio


@contextmanager
def running_virtual_audio() -> Iterator[VirtualAudio]:
    """Start the daemon and the tone, point this process at them, and undo it all on exit."""
    with ExitStack() as stack:
        # Short and under /tmp: the daemon's socket path must fit in sun_path (108 bytes).
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dpkit-pulse-")))
        # Callbacks run last-in first-out, so this runs once the environment is restored and
        # the daemon stopped: PortAudio then forgets the devices it saw through the daemon.
        stack.callback(rescan_audio)
        server = f"unix:{root / 'native'}"
        log = stack.enter_context((root / "pulseaudio.log").open("wb"))
        daemon = subprocess.Popen(
            _daemon_command(root), env=_daemon_env(root), stdout=log, stderr=subprocess.STDOUT
        )
        stack.callback(_stop, daemon)
        _wait_for(lambda: pactl(server, "info") is not None, daemon, root, "the daemon to start")

        player = subprocess.Popen(
            _player_command(root, server),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own group, so the shell loop, cat and pacat stop as one
        )
        stack.callback(_stop_group, player)
        _wait_for(lambda: bool(pactl(server, "list", "short", "sink-inputs")), daemon, root, "tone")

        (root / "client.conf").write_text("autospawn = no\n")
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("PULSE_SERVER", server)
        patch.setenv("PULSE_CLIENTCONFIG", str(root / "client.conf"))
        # PortAudio lists devices when it starts: it may have started before the daemon did.
        rescan_audio()
        yield VirtualAudio(server, SINK, f"{SINK}.monitor", TONE_HZ, TONE_PEAK_DBFS)


def _daemon_command(root: Path) -> list[str]:
    script = root / "default.pa"
    script.write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={root / 'native'}\n"
        f"load-module module-null-sink sink_name={SINK} rate={SAMPLE_RATE} channels=1\n"
        f"set-default-sink {SINK}\n"
        f"set-default-source {SINK}.monitor\n"
    )
    return [
        "pulseaudio",
        "--daemonize=no",
        "--system=no",  # a user-mode daemon works as root too; it only warns
        "--use-pid-file=no",
        "--exit-idle-time=-1",
        "--realtime=no",
        "--high-priority=no",
        "--disable-shm=yes",  # clients copy over the socket; memfd trips on short-lived ones
        "--log-target=stderr",
        "--log-level=warning",
        "-n",  # none of the machine's default.pa: no hardware modules, no session bus
        f"--file={script}",
    ]


def _daemon_env(root: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PULSE_")}
    # Everything the daemon writes (cookie, state, runtime directory) stays under root.
    env.update(
        HOME=str(root),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_RUNTIME_DIR=str(root),
        PULSE_RUNTIME_PATH=str(root / "runtime"),
        PULSE_STATE_PATH=str(root / "state"),
    )
    return env


def _player_command(root: Path, server: str) -> list[str]:
    # One second holds exactly 440 cycles, so the looped file is a seamless continuous tone.
    seconds = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    amplitude = 32767.0 * 10.0 ** (TONE_PEAK_DBFS / 20.0)
    tone = np.round(amplitude * np.sin(2.0 * np.pi * TONE_HZ * seconds)).astype("<i2")
    path = root / "tone.raw"
    path.write_bytes(tone.tobytes())
    pacat = (
        f"pacat --playback --server={server} --device={SINK} --raw --format=s16le"
        f" --rate={SAMPLE_RATE} --channels=1 --latency-msec=100"
    )
    return ["sh", "-c", f'while cat "$0"; do :; done | {pacat}', str(path)]


def pactl(server: str, *args: str) -> str | None:
    """``pactl``'s output, or None if the server did not answer."""
    result = subprocess.run(
        ["pactl", f"--server={server}", *args],
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_S,
        check=False,
    )
    return result.stdout if result.returncode == 0 else None


def _wait_for(
    ready: Callable[[], bool], daemon: subprocess.Popen[bytes], root: Path, what: str
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if daemon.poll() is not None or time.monotonic() > deadline:
            log = (root / "pulseaudio.log").read_text(errors="replace")
            pytest.fail(f"PulseAudio: gave up waiting for {what}; its log:\n{log}")
        time.sleep(POLL_S)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
