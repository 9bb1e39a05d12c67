"""A real Redis server for the cluster tests: Debian's ``redis-server`` on a free loopback port,
started and stopped by the test, by its pid (``scripts/setup`` installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import UNIT

REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """One ``redis-server`` that a test can stop and start again (empty, on the same port)."""

    directory: Path
    port: int = field(default_factory=free_port)
    password: str = ""
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        if shutil.which(REDIS_SERVER) is None:
            raise AssertionError(f"{REDIS_SERVER} is missing: run scripts/setup (it installs it)")
        arguments = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip
        if self.password:
            arguments += ["--requirepass", self.password]
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        with log:
            self.process = await asyncio.create_subprocess_exec(
                *arguments, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
            )
        async with asyncio.timeout(10 * UNIT):
            while not await self._answers():
                if self.process.returncode is not None:
                    raise AssertionError(f"redis-server exited: {self.log()}")
                await asyncio.sleep(0.02)

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            line = await reader.readline()
            return line.startswith((b"+PONG", b"-NOAUTH"))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        """Stop it by its pid (SIGTERM, then SIGKILL); what it held is gone."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10 * UNIT)
        except TimeoutError:
            process.kill()
            await process.wait()

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""
