"""A Scene left connected when its program ends releases everything, quietly but for one warning.

Each test runs a real script in a Python process of its own against a real ``dpkit serve``, as a
user's program would, with ResourceWarnings shown (``-W always::ResourceWarning``, which Python
hides by default), and reads what it printed.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.served import ServedProcess, served
from tests.support import UNIT, until

FORGETS_TO_DISCONNECT = """
import asyncio, sys
from dpkit import NoDevices, Scene

async def main() -> None:
    scene = Scene(sys.argv[1], requested_media_devices={}, required_media_devices={},
                  devices=NoDevices(), play_audio=False)
    print("connected", await scene.connect(), flush=True)
    async for frame in scene.video_frames():
        break

asyncio.run(main())
print("exited", flush=True)
"""

CRASHES_WHILE_CONNECTED = """
import asyncio, sys
from dpkit import Scene, SyntheticDevices

async def main() -> None:
    scene = Scene(sys.argv[1], requested_media_devices={"microphone": True, "camera": True},
                  required_media_devices={}, devices=SyntheticDevices(160, 120), play_audio=False)
    print("connected", await scene.connect(), flush=True)
    scene.audio_frames()  # opened, never read
    raise RuntimeError("the application failed")

try:
    asyncio.run(main())
except RuntimeError as error:
    print("crashed:", error, flush=True)
"""

ASYNC_WITH_CRASH = """
import asyncio, sys
from dpkit import NoDevices, Scene

async def main() -> None:
    async with Scene(sys.argv[1], requested_media_devices={}, required_media_devices={},
                     devices=NoDevices(), play_audio=False) as scene:
        print("connected", await scene.connect(), flush=True)
        raise RuntimeError("the application failed")

try:
    asyncio.run(main())
except RuntimeError as error:
    print("crashed:", error, flush=True)
"""

NOISE = ("Traceback", "Task was destroyed", "Unclosed client session", "Event loop is closed")
SCENE_WARNING = re.compile(r"ResourceWarning: Unclosed <Scene Connected session_id='([^']+)'>")


async def run_script(script: str, server: ServedProcess) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "always::ResourceWarning",
        "-c",
        script,
        server.api_key(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60 * UNIT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def session_of(out: str) -> str:
    match = re.search(r"^connected (\S+)$", out, re.MULTILINE)
    assert match is not None, out
    return match.group(1)


def other_resource_warnings(err: str) -> list[str]:
    """ResourceWarning lines other than the Scene's (and Python's tracemalloc hint)."""
    return [
        line
        for line in err.splitlines()
        if "ResourceWarning" in line
        and not SCENE_WARNING.search(line)
        and "Enable tracemalloc" not in line
    ]


@pytest.mark.parametrize(
    ("script", "last_line"),
    [
        (FORGETS_TO_DISCONNECT, "exited"),
        (CRASHES_WHILE_CONNECTED, "crashed: the application failed"),
    ],
    ids=["forgets-disconnect", "crashes-connected"],
)
async def test_a_scene_left_connected_is_released_with_one_warning(
    tmp_path: Path, script: str, last_line: str
) -> None:
    """Exit 0, one ResourceWarning naming the Scene, no traceback, no 'Task was destroyed',
    'Unclosed client session' or 'Event loop is closed'; the server sees the socket go."""
    async with served(tmp_path / "served") as server:
        code, out, err = await run_script(script, server)
        session_id = session_of(out)
        assert code == 0, err
        assert out.splitlines()[-1] == last_line
        assert [noise for noise in NOISE if noise in err] == [], err
        assert SCENE_WARNING.findall(err) == [session_id], err
        assert other_resource_warnings(err) == [], err
        # Released, not left to time out: the server hears the socket close.
        await until(lambda: f"session {session_id}: ended (connectionLost)" in server.log())


async def test_async_with_disconnects_on_the_way_out(tmp_path: Path) -> None:
    """An exception inside ``async with Scene(...)`` still disconnects normally: no warning."""
    async with served(tmp_path / "served") as server:
        code, out, err = await run_script(ASYNC_WITH_CRASH, server)
        session_id = session_of(out)
        assert code == 0, err
        assert out.splitlines()[-1] == "crashed: the application failed"
        assert "ResourceWarning" not in err, err
        assert [noise for noise in NOISE if noise in err] == [], err
        await until(lambda: f"session {session_id}: ended (normal)" in server.log())
