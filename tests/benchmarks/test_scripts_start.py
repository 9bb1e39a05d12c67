"""Every benchmark starts as its docs say, ``python benchmarks/<name>.py``: ``--help`` works.

Run that way, a script's directory comes first on ``sys.path``, so a script named like a
standard library module (``queue.py``) breaks every other one; this catches that, and any
import a benchmark lost.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.support import UNIT

#: The scripts (a module the scripts share, like ``density_receivers.py``, has no main).
BENCHMARKS = sorted(
    path
    for path in (Path(__file__).parents[2] / "benchmarks").glob("*.py")
    if '__name__ == "__main__"' in path.read_text()
)


def test_there_are_benchmarks() -> None:
    assert len(BENCHMARKS) >= 10


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
async def test_the_benchmark_answers_help(script: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "--help",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60 * UNIT)
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith("usage: "), out.decode()
