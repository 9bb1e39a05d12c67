"""``dpkit connect`` prints what the server heard the user say into the microphone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from dpkit.server import DpkitServer
from tests.server.recognition.speech import silence, spoken, write_wav
from tests.support import UNIT, spawn_dpkit


async def test_connect_prints_what_the_persona_heard(server: DpkitServer, tmp_path: Path) -> None:
    """A spoken question as the microphone (a file): 'heard: ...' with its words, then the
    persona's answer to it."""
    speech = np.concatenate([silence(1.0), spoken("what can you do"), silence(4.0)])
    wav = write_wav(tmp_path / "question.wav", speech)
    process = await spawn_dpkit(
        "connect",
        server.api_key(),
        "--media-file",
        str(wav),
        "--request",
        "microphone",
        "--require",
        "microphone",
        "--duration",
        "30",
        "--interactive",
        stdin=asyncio.subprocess.PIPE,  # kept open: the session reads commands from it
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30 * UNIT):  # a bound: the answer comes within seconds
            while not any(line.startswith("persona: I can chat") for line in seen):
                raw = await process.stdout.readline()
                assert raw, "dpkit connect ended before the answer:\n" + "\n".join(seen)
                seen.append(raw.decode(errors="replace").strip())
    except TimeoutError:
        raise AssertionError("no answer to the spoken question:\n" + "\n".join(seen)) from None
    finally:
        process.terminate()
        await process.wait()
    heard = [line for line in seen if line.startswith("heard: ")]
    assert heard, "\n".join(seen)
    assert "what can you do" in heard[0]
    assert "Traceback" not in "\n".join(seen)
