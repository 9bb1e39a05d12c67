"""A real ``dpkit serve`` process on loopback, for tests that must see it from outside.

Tests that measure the server's memory, read its log, kill it, freeze it or limit its open files
need it in a process of its own. :func:`served` starts ``python -m dpkit serve`` on 127.0.0.1
port 0 with settings written to a TOML file, waits for its banner, and stops it by its pid at
the end (SIGTERM, then SIGKILL if it lingers). Its log (stderr) goes to a file the test can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.keys import KeyStore
from tests.support import UNIT

BANNER = re.compile(r"dpkit serve on (\S+)")


@dataclass
class ServedProcess:
    """A running ``dpkit serve``: where it listens, its data directory, its pid and its log."""

    process: asyncio.subprocess.Process
    url: str
    data_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def keys(self) -> KeyStore:
        return KeyStore.load_or_create(self.data_dir)

    def api_key(self, label: str = "default") -> str:
        for record in self.keys().keys:
            if record.label == label:
                return record.api_key(self.url + TOKEN_PATH)
        raise KeyError(label)

    @property
    def admin_token(self) -> str:
        data = json.loads((self.data_dir / "keys.json").read_text())
        token: str = data["adminToken"]
        return token

    def log(self) -> str:
        return read_log(self.log_path)

    def rss_kib(self) -> int:
        """The server's resident memory now (KiB), from /proc."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1))


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def read_log(path: Path) -> str:
    return path.read_text(errors="replace")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, settings: Mapping[str, Any]) -> None:
    """A TOML settings file: top-level values, and ``persona`` as its own table."""
    persona = dict(settings.get("persona", {}))
    lines = ["[server]"]
    lines += [
        f"{key} = {_toml_value(value)}" for key, value in settings.items() if key != "persona"
    ]
    if persona:
        lines.append("[server.persona]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in persona.items()]
    path.write_text("\n".join(lines) + "\n")


#: Settings every served test process starts with (small video, loopback ICE).
BASE_SETTINGS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "capacity": 2,
    "ice_addresses": ["127.0.0.1"],
    "persona": {"video_width": 320, "video_height": 240, "video_fps": 15},
}


@asynccontextmanager
async def served(
    directory: Path,
    *,
    log_level: str = "INFO",
    preexec_fn: Callable[[], None] | None = None,
    **settings: Any,
) -> AsyncIterator[ServedProcess]:
    """Run ``dpkit serve`` with ``settings`` for the block; its data lives under ``directory``."""
    _make_dir(directory)
    data_dir = Path(settings.pop("data_dir", directory / "data"))
    persona = {**BASE_SETTINGS["persona"], **settings.pop("persona", {})}
    values = {**BASE_SETTINGS, **settings, "persona": persona, "data_dir": str(data_dir)}
    config = directory / "dpkit.toml"
    write_config(config, values)
    log_path = directory / "server.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dpkit",
            "--log-level",
            log_level,
            "serve",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec_fn,
        )
    try:
        url = await _wait_for_banner(process, log_path)
        yield ServedProcess(process, url, data_dir, log_path)
    finally:
        await stop(process)


async def _wait_for_banner(process: asyncio.subprocess.Process, log_path: Path) -> str:
    async with asyncio.timeout(30 * UNIT):
        while True:
            match = BANNER.search(read_log(log_path))
            if match:
                return match.group(1)
            if process.returncode is not None:
                raise AssertionError(f"dpkit serve exited: {read_log(log_path)}")
            await asyncio.sleep(0.05)


async def stop(process: asyncio.subprocess.Process) -> None:
    """Stop a process by its pid: SIGTERM (after SIGCONT, if frozen), then SIGKILL."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 15 * UNIT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
