"""Recognized speech in the conversation: the idle timer, barge-in, and the orchestration server.

Each test runs a real server and a Scene whose microphone is a rendered WAV. Where a test needs
to know what the user was saying when the persona spoke, it reads how much of the user's audio
the server had decoded (20 ms frames) as each frame arrives: the file's own timeline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dpkit import Scene
from dpkit.client.conversation import RecognizeResult
from dpkit.media.files import MediaFileDevices
from dpkit.protocol.messages import Frame, SceneEvent
from dpkit.server import DpkitServer, PersonaSettings
from dpkit.server.persona_media.voice import SAMPLE_RATE
from tests.server.recognition.speech import silence, spoken, write_wav
from tests.server.test_orchestration import RunningOrchestrator, orchestration
from tests.support import UNIT, ServerFactory, until

__all__ = ["orchestration"]  # the fixture, used by name

FRAME_S = 0.02  # the user's audio reaches the server as 20 ms Opus frames


def persona(**overrides: Any) -> PersonaSettings:
    values: dict[str, Any] = {"video_width": 160, "video_height": 120, "greet_at_start": False}
    values.update(overrides)
    return PersonaSettings(**values)


@dataclass
class Heard:
    """Every scene event a client saw, with the seconds of the user's audio decoded by then."""

    server: DpkitServer
    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)

    def on_message(self, frame: Frame) -> None:
        if isinstance(frame, SceneEvent):
            self.events.append((frame.name, frame.body, self.audio_s()))

    def audio_s(self) -> float:
        sessions = list(self.server.state.sessions.values())
        return sessions[0].received_frames.get("audio", 0) * FRAME_S if sessions else 0.0

    def finals(self) -> list[str]:
        return [
            body["results"][0]["alternatives"][0]["transcript"]
            for name, body, _ in self.events
            if name == "recognizeResults" and body["results"] and body["results"][0]["final"]
        ]

    def speech(self) -> list[tuple[str, float]]:
        """The persona's speech state on each change, with when (in the user's audio)."""
        changes: list[tuple[str, float]] = []
        for name, body, at in self.events:
            if name == "state":
                state = body["persona"]["1"]["speechState"]
                if not changes or changes[-1][0] != state:
                    changes.append((state, at))
        return changes

    def intents(self) -> list[str]:
        return [
            body["output"]["context"]["intent"]
            for name, body, _ in self.events
            if name == "conversationResult"
        ]


def listening(server: DpkitServer, wav: Path) -> tuple[Scene, Heard]:
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={},
        devices=MediaFileDevices(wav, loop=False),
    )
    heard = Heard(server)
    scene.on_message.add_listener(heard.on_message)
    return scene, heard


def seconds(samples: npt.NDArray[np.int16]) -> float:
    return len(samples) / SAMPLE_RATE


async def idle_history(server: DpkitServer, wav: Path) -> list[str]:
    """A session with ``wav`` as its microphone, until it ends: its warnings, finals and end."""
    scene, _ = listening(server, wav)
    history: list[str] = []
    ended = asyncio.Event()

    def warned(_scene: Scene, _left: float) -> None:
        history.append("warning")

    def recognized(
        _scene: Scene, _status: int, _error: str, results: tuple[RecognizeResult, ...]
    ) -> None:
        if any(result.final for result in results):
            history.append("heard")

    def disconnected(_scene: Scene, _id: str, reason: str) -> None:
        history.append(reason)
        ended.set()

    scene.on_idle_warning.add_listener(warned)
    scene.on_recognize_results.add_listener(recognized)
    scene.on_disconnected_event.add_listener(disconnected)
    async with scene:
        await scene.connect()
        await asyncio.wait_for(ended.wait(), 40 * UNIT)
    return history


async def test_speech_keeps_a_session_alive_that_would_have_expired(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Idle timer: a user who speaks after the warning is not timed out; a silent one is."""
    idle = persona(idle_timeout_s=4 * UNIT, idle_warning_s=3 * UNIT)  # warned after 1 unit
    server = await start_server(persona=idle)
    # The phrase starts after the first warning (1 unit) and before the expiry (4 units).
    talking = write_wav(
        tmp_path / "talking.wav",
        np.concatenate((silence(2.5 * UNIT), spoken("what can you do"), silence(1))),
    )
    quiet = write_wav(tmp_path / "quiet.wav", silence(8 * UNIT))
    silent, spoke = [await idle_history(server, wav) for wav in (quiet, talking)]
    assert silent == ["warning", "sessionTimeout"]
    # The first warning was not followed by the end: the speech after it restarted the count.
    assert spoke[0] == "warning"
    assert spoke[1] != "sessionTimeout"
    assert "heard" in spoke[: spoke.index("sessionTimeout")]
    assert spoke[-1] == "sessionTimeout"


def _over_the_answer(path: Path) -> tuple[Path, float, float]:
    """'what can you do', then 'see you' while the persona answers; where 'see you' lies."""
    first, second = spoken("what can you do"), spoken("see you", "en-gb-x-rp", 140)
    lead, gap = silence(1), silence(2.5)
    start = seconds(lead) + seconds(first) + seconds(gap)
    samples = np.concatenate((lead, first, gap, second, silence(5)))
    return write_wav(path, samples), start, start + seconds(second)


async def test_barge_in_stops_the_persona_and_the_speech_is_heard(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Barge-in on: speech over the persona's answer stops it early, and it is recognized."""
    server = await start_server(persona=persona(barge_in=True))
    wav, start, _end = _over_the_answer(tmp_path / "speech.wav")
    scene, heard = listening(server, wav)
    async with scene:
        await scene.connect()
        await until(lambda: "GOODBYE" in heard.intents(), 40 * UNIT)
    assert heard.intents()[:2] == ["HELP", "GOODBYE"]
    assert {"see", "you"} <= set(heard.finals()[1].split())
    (spoke, spoke_at), (quiet, quiet_at) = heard.speech()[:2]
    assert (spoke, quiet) == ("speaking", "idle")
    helped = next(b for n, b, _ in heard.events if n == "conversationResult")
    answer_s = seconds(spoken(helped["output"]["text"], "en-us+f3", 165))
    # The persona was speaking when 'see you' began, and went quiet long before its answer's end.
    assert spoke_at < start
    assert quiet_at - spoke_at < 0.6 * answer_s


async def test_without_barge_in_speech_over_the_persona_is_not_heard(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Barge-in off: 'see you', wholly spoken while the persona answers, gives no result."""
    server = await start_server(persona=persona(barge_in=False))
    wav, start, end = _over_the_answer(tmp_path / "speech.wav")
    scene, heard = listening(server, wav)
    total = end + 5  # the whole file
    async with scene:
        await scene.connect()
        await until(lambda: [s for s, _ in heard.speech()] == ["speaking", "idle"], 40 * UNIT)
        await until(lambda: heard.audio_s() >= total - 0.5, 20 * UNIT)
        await asyncio.sleep(1.5 * UNIT)  # what the last audio could still give is decoded
    (_, spoke_at), (_, quiet_at) = heard.speech()[:2]
    assert spoke_at < start < end < quiet_at  # the phrase overlapped the persona's speech
    assert heard.intents() == ["HELP"]
    assert len(heard.finals()) == 1


async def test_recognized_speech_goes_to_the_orchestration_server(
    start_server: ServerFactory, tmp_path: Path, orchestration: RunningOrchestrator
) -> None:
    """With control_url set, a final transcript is a conversationRequest to the orchestrator."""
    server = await start_server(persona=persona(control_url=orchestration.url))
    wav = write_wav(
        tmp_path / "speech.wav",
        np.concatenate((silence(1.5), spoken("what can you do"), silence(2))),
    )
    scene, heard = listening(server, wav)
    async with scene:
        await scene.connect()
        await until(lambda: bool(orchestration.orchestrator.requests), 30 * UNIT)
        await until(
            lambda: any(
                n == "conversationResult" and b["provider"]["kind"] == "orchestration"
                for n, b, _ in heard.events
            ),
            10 * UNIT,
        )
    assert orchestration.orchestrator.requests == heard.finals()
    assert {"what", "can", "you", "do"} <= set(heard.finals()[0].split())
