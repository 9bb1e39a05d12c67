"""Running ``dpkit`` commands from the CLI tests: in a process of their own, and ``dpkit serve``
with its banner read as a user would read it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.served import stop
from tests.support import UNIT, spawn_dpkit

#: Each hint of the banner: its label and the command after it.
HINT = re.compile(r"^\s+(API key|connect with|watch with):\s+(dpkit .*)$")


async def run_dpkit(
    *args: str, environ: Mapping[str, str] | None = None, columns: int = 80
) -> tuple[int, str, str]:
    """``dpkit ARGS`` to its end: exit status, standard output, standard error."""
    process = await spawn_dpkit(*args, environ=environ, columns=columns)
    out, err = await asyncio.wait_for(process.communicate(), 60 * UNIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def environment(home: Path, **variables: str) -> dict[str, str]:
    """This environment with an empty XDG data home (no default data directory) and no
    ``DPKIT_*`` variables but ``variables``."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("DPKIT_")}
    environ["XDG_DATA_HOME"] = str(home)
    environ.update(variables)
    return environ


@dataclass
class Banner:
    """What ``dpkit serve`` printed before serving: its URL and the commands it suggests."""

    url: str
    lines: list[str]
    hints: dict[str, list[str]] = field(default_factory=dict)


@asynccontextmanager
async def serving_cli(*args: str, environ: Mapping[str, str]) -> AsyncIterator[Banner]:
    """``dpkit serve ARGS`` at 80 columns until the block ends; yields its parsed banner."""
    process = await spawn_dpkit("serve", *args, environ=environ, columns=80)
    assert process.stderr is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(30 * UNIT):
            while not any(line.lstrip().startswith("watch with:") for line in lines):
                raw = await process.stderr.readline()
                assert raw, f"dpkit serve exited: {''.join(lines)}"
                lines.append(raw.decode())
        match = re.search(r"dpkit serve on (\S+)", "".join(lines))
        assert match is not None, lines
        banner = Banner(match.group(1), lines)
        for line in lines:
            hint = HINT.match(line.rstrip("\n"))
            if hint:
                banner.hints[hint.group(1)] = shlex.split(hint.group(2))
        # Keep reading its log, so a full pipe never stalls the server.
        drain = asyncio.create_task(_read_all(process.stderr, banner.lines))
        try:
            yield banner
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
    finally:
        await stop(process)


async def _read_all(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while raw := await stream.readline():
        lines.append(raw.decode())
