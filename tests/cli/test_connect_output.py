"""What ``dpkit connect`` prints: each error's own advice, and mute in the media line."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console

from dpkit import DpkitError, Scene, SyntheticDevices
from dpkit.apikey import ApiKey
from dpkit.cli.connect import ConsoleReporter
from dpkit.client.consent import Decision, FileConsentStore, Permission
from dpkit.client.persistence import MemorySessionStore
from dpkit.server import DpkitServer
from dpkit.server.endpoints import TOKEN_PATH
from tests import support_audio
from tests.cli.connect_support import REAL_MICROPHONE_ARGS, words
from tests.support import UNIT, spawn_dpkit, until
from tests.support_audio import VirtualAudio

#: A private PulseAudio server: its null sink's monitor is this machine's (real) microphone.
virtual_audio = support_audio.virtual_audio


async def run_cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``dpkit ARGS`` with no terminal and its own state dir."""
    environ = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "COLUMNS": "400"}
    process = await spawn_dpkit(*args, environ=environ, columns=400)
    out, err = await asyncio.wait_for(process.communicate(), 60 * UNIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def client_error(api_key: str) -> DpkitError:
    """The error the client SDK itself raises for this key, to compare the CLI's output with."""
    scene = Scene(
        api_key,
        requested_media_devices={},
        required_media_devices={},
        devices=SyntheticDevices(),
        session_store=MemorySessionStore(),
    )
    try:
        await scene.connect()
    except DpkitError as error:
        return error
    finally:
        await scene.close()
    raise AssertionError("connect succeeded")


async def test_connection_refused_prints_the_errors_own_advice(
    server: DpkitServer, tmp_path: Path
) -> None:
    """A refused connection: the CLI prints exactly the client error's name, message and advice."""
    refused_key = server.api_key()  # the stopped server's own key: its port refuses connections
    await server.stop()
    expected = await client_error(refused_key)
    code, _out, err = await run_cli(
        tmp_path, "connect", refused_key, "--devices", "synthetic", "--require", "none"
    )
    assert code == 1
    assert expected.advice
    for part in (expected.name, expected.message, expected.advice):
        assert words(part) in words(err)


async def test_json_failure_carries_the_errors_own_advice(tmp_path: Path) -> None:
    """With --json the error object's advice is the client error's, for a port that refuses."""
    key = ApiKey(f"http://127.0.0.1:{closed_port()}{TOKEN_PATH}", "key", "secret").encode()
    expected = await client_error(key)
    code, out, _err = await run_cli(tmp_path, "connect", key, "--json", "--devices", "synthetic")
    assert code == 1
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert (event["event"], event["name"], event["message"], event["advice"]) == (
        "error",
        expected.name,
        expected.message,
        expected.advice,
    )


async def test_a_blocked_device_names_the_reset_command(
    virtual_audio: VirtualAudio, server: DpkitServer, tmp_path: Path
) -> None:
    """A real microphone blocked after refusals: the output names `dpkit permissions reset`."""
    # The virtual sound card's microphone exists, so it is its consent that fails.
    origin = server.url.rstrip("/")
    store = FileConsentStore(tmp_path / "dpkit" / "permissions.json")
    store.set(Permission(origin, "microphone", Decision.BLOCKED, 3, 1.0))
    code, _out, err = await run_cli(
        tmp_path,
        "connect",
        server.api_key(),
        *REAL_MICROPHONE_ARGS,
    )
    assert code == 1
    text = words(err)
    assert "noUserMedia" in text
    assert f"dpkit permissions reset --origin {origin}" in text
    assert list(server.state.sessions) == []


def test_markup_in_an_error_is_printed_as_it_is() -> None:
    """Brackets in an error's message or advice (e.g. dpkit[audio]) are text, not rich markup."""

    class Odd(DpkitError):
        name = "oddError"

    error = Odd("needs dpkit[audio] and [bold]nothing bold[/bold]")
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, width=200, force_terminal=False))
    reporter.failed(error)
    reporter.close()
    assert "needs dpkit[audio] and [bold]nothing bold[/bold]" in out.getvalue()


async def read_until(
    stream: asyncio.StreamReader, matches: Any, what: str, within: float = 30 * UNIT
) -> list[str]:
    """Lines from ``stream`` up to and including the first one ``matches`` accepts."""
    lines: list[str] = []
    async with asyncio.timeout(within):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"{what}: the stream ended after {lines}")
            line = raw.decode().rstrip("\n")
            lines.append(line)
            if matches(line):
                return lines


async def test_mute_shows_in_the_plain_media_line(server: DpkitServer, tmp_path: Path) -> None:
    """Not on a terminal: after /p and /m the once-a-second line says muted and off, no level."""
    process = await spawn_dpkit(
        "connect",
        server.api_key(),
        "--interactive",
        "--devices",
        "synthetic",
        "--duration",
        "60",
        stdin=subprocess.PIPE,
        environ={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
        columns=300,
    )
    assert process.stdin is not None
    assert process.stderr is not None
    try:
        before = await read_until(process.stderr, lambda line: " fps" in line, "a media line")
        assert "persona audio: " in before[-1]
        assert "dBFS" in before[-1]
        assert "microphone: on" in before[-1]
        process.stdin.write(b"/p\n/m\n")
        await process.stdin.drain()
        lines = await read_until(
            process.stderr,
            lambda line: "persona audio: muted" in line and "microphone: off" in line,
            "a media line saying muted",
        )
        assert "persona muted" in lines
        assert "dBFS" not in lines[-1]
        process.stdin.write(b"/q\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.communicate(), 30 * UNIT)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_json_media_events_say_what_is_muted(server: DpkitServer, tmp_path: Path) -> None:
    """--json: media events carry personaMuted, microphone and camera as they change."""
    process = await spawn_dpkit(
        "connect",
        server.api_key(),
        "--json",
        "--interactive",
        "--devices",
        "synthetic",
        "--duration",
        "60",
        stdin=subprocess.PIPE,
        environ={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    assert process.stdin is not None
    assert process.stdout is not None

    def media(line: str) -> dict[str, Any] | None:
        event: dict[str, Any] = json.loads(line)
        return event if event["event"] == "media" else None

    try:
        lines = await read_until(process.stdout, lambda line: media(line) is not None, "media")
        first = media(lines[-1])
        assert first is not None
        assert (first["personaMuted"], first["microphone"], first["camera"]) == (False, True, True)
        process.stdin.write(b"/p\n/c\n")
        await process.stdin.drain()
        lines = await read_until(
            process.stdout,
            lambda line: (
                (event := media(line)) is not None and event["personaMuted"] and not event["camera"]
            ),
            "a media event with the persona muted and the camera off",
        )
        last = media(lines[-1])
        assert last is not None
        assert last["microphone"] is True
        process.stdin.write(b"/q\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.communicate(), 30 * UNIT)
        assert process.returncode == 0
        await until(lambda: len(server.state.ended) == 1)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
