"""The dpkit command: help text, and a real connect with --json against a real server."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from dpkit import NoDevices, NoUserMedia, Scene
from dpkit.cli import build_parser
from dpkit.client.persistence import MemorySessionStore
from dpkit.server import DpkitServer
from tests.support import NO_MEDIA_ARGS, ServerFactory, spawn_dpkit, until

COMMANDS = [
    "serve",
    "connect",
    "demo",
    "sessions",
    "watch",
    "keys",
    "orchestrator",
    "permissions",
    "devices",
    "web-sdk",
]


@pytest.mark.parametrize("argv", [[], *[[command] for command in COMMANDS]])
def test_every_help_is_complete(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`dpkit --help` lists every command; each command's help describes its options."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    if not argv:
        assert all(command in text for command in COMMANDS)
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") and "  " not in stripped and "," not in stripped:
            # An option line with no help text on it must have help on the next line.
            assert line.startswith("  ")


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await spawn_dpkit(*args)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_connect_json_reports_each_state_then_the_disconnection(
    server: DpkitServer,
) -> None:
    """--json writes one object per state change, the connection and the disconnection."""
    code, out, err = await run_cli(
        "connect",
        server.api_key(),
        "--json",
        "--duration",
        "1",
        *NO_MEDIA_ARGS,
    )
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    states = [(e["name"], e["percentageLoaded"]) for e in events if e["event"] == "state"]
    assert states == [
        ("SearchingForDigitalPerson", 25),
        ("DownloadingAssets", 50),
        ("ConnectingToDigitalPerson", 75),
        ("Connected", 100),
        ("Disconnected", 0),
    ]
    connected = next(e for e in events if e["event"] == "connected")
    assert connected["sessionId"] in [info.session_id for info in server.state.ended]
    assert set(connected["stepsMs"]) >= {"SearchingForDigitalPerson", "DownloadingAssets"}
    assert events[-1]["event"] == "disconnected" or events[-2]["event"] == "disconnected"


async def test_connect_failure_shows_name_message_and_advice(server: DpkitServer) -> None:
    """A refused connect prints the error's name, its message and advice naming the URL."""
    key = server.api_key()
    await server.stop()
    code, _out, err = await run_cli("connect", key, "--devices", "synthetic")
    text = " ".join(err.split())
    assert code == 1
    assert "serverConnectionFailed" in text
    assert "cannot reach the token endpoint" in text
    assert "What to do" in text
    assert "dpkit serve" in text
    assert server.url in text


async def test_required_microphone_missing_fails_before_any_socket(server: DpkitServer) -> None:
    """No devices but a required microphone (the default): noUserMedia, and no socket opened."""
    scene = Scene(server.api_key(), devices=NoDevices(), session_store=MemorySessionStore())
    with pytest.raises(NoUserMedia) as expected:
        await scene.connect()
    await scene.close()
    code, _out, err = await run_cli("connect", server.api_key(), "--devices", "none")
    text = " ".join(err.split())
    assert code == 1
    assert "noUserMedia" in text
    assert "the user microphone and/or camera is not available" in text
    assert expected.value.advice
    assert " ".join(expected.value.advice.split()) in text
    assert "With dpkit connect: --devices synthetic" in text
    assert list(server.state.ended) == []


async def test_connect_json_failure_is_one_error_object(server: DpkitServer) -> None:
    """With --json a failure is one JSON line with name, message and advice."""
    key = server.api_key()
    await server.stop()
    code, out, _err = await run_cli("connect", key, "--json", "--devices", "synthetic")
    assert code == 1
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["error"]
    assert events[0]["name"] == "serverConnectionFailed"
    assert events[0]["advice"]


async def test_bad_arguments_exit_2() -> None:
    """An unknown device name is a usage error naming the option."""
    code, _out, err = await run_cli("connect", "key", "--request", "nose")
    assert code == 2
    assert "--request: unknown device nose" in err


async def test_connect_shows_the_place_in_the_queue(start_server: ServerFactory) -> None:
    """While every person is busy, the CLI says where the client waits and for about how long."""
    server = await start_server(capacity=1)
    holder = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    await holder.connect()
    waiting = asyncio.create_task(
        run_cli(
            "connect",
            server.api_key(),
            "--duration",
            "0.5",
            *NO_MEDIA_ARGS,
        )
    )
    await until(lambda: server.state.pool.queue_length == 1)
    await holder.disconnect()
    code, _out, err = await waiting
    assert code == 0, err
    assert "waiting for a Digital Person: position 1 of 1, about 60 s" in err
    assert "Connected" in err


async def test_interactive_session_toggles_devices_and_talks(server: DpkitServer) -> None:
    """Lines on stdin: words reach the persona and its answer is shown; /c, /p, /q act."""
    process = await spawn_dpkit(
        "connect",
        server.api_key(),
        "--interactive",
        "--devices",
        "synthetic",
        "--request",
        "none",
        "--require",
        "none",
        "--duration",
        "30",
        stdin=subprocess.PIPE,
        columns=200,
    )
    assert process.stdin is not None
    await until(lambda: len(server.state.sessions) == 1, within=30)
    (session,) = server.state.sessions.values()
    process.stdin.write(b"hello there\n/c\n/p\n")
    await process.stdin.drain()
    await until(lambda: session.info.user_camera[-1:] == [True], within=15)
    process.stdin.write(b"/q\n")
    await process.stdin.drain()
    _out, err = await asyncio.wait_for(process.communicate(), 30)
    text = err.decode()
    assert process.returncode == 0, text
    assert "you: hello there" in text
    assert "persona: Hi there! It's nice to meet you." in text
    assert "camera on" in text
    assert "persona muted" in text
    assert [info.ending for info in server.state.ended] == ["normal"]
