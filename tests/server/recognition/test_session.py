"""Speech recognition end to end on loopback: a file microphone, a real server, a Scene."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpkit import Scene
from dpkit.media.files import MediaFileDevices
from dpkit.protocol.messages import Frame, SceneEvent
from dpkit.server import PersonaSettings
from tests.server.recognition.speech import silence, spoken, write_wav
from tests.support import UNIT, ServerFactory, until


def persona(**overrides: Any) -> PersonaSettings:
    values: dict[str, Any] = {"video_width": 320, "video_height": 240, "greet_at_start": False}
    values.update(overrides)
    return PersonaSettings(**values)


def _speech_file(path: Path) -> Path:
    """'what can you do' twice, in another voice than the persona's, with pauses around."""
    phrase = spoken("what can you do", "en-us-nyc", 180)
    return write_wav(path, np.concatenate((silence(1.5), phrase, silence(2.5), phrase, silence(2))))


async def test_speech_reaches_the_server_and_the_persona_answers_its_intent(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Interim and final recognizeResults reach the client; the persona answers HELP by voice."""
    server = await start_server(persona=persona())
    frames: list[Frame] = []
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={},
        devices=MediaFileDevices(_speech_file(tmp_path / "speech.wav"), loop=False),
    )
    scene.on_message.add_listener(frames.append)

    def events(name: str) -> list[dict[str, Any]]:
        return [f.body for f in frames if isinstance(f, SceneEvent) and f.name == name]

    def finals() -> list[dict[str, Any]]:
        return [r for r in events("recognizeResults") if r["results"] and r["results"][0]["final"]]

    async with scene:
        await scene.connect()
        await until(lambda: bool(finals()), 30 * UNIT)
        await until(lambda: bool(events("conversationResult")), 10 * UNIT)
        await until(
            lambda: any(s["persona"]["1"]["speechState"] == "speaking" for s in events("state")),
            10 * UNIT,
        )
        # Barge-in is off: the second phrase, spoken while the persona answers, is not heard.
        await until(
            lambda: (
                not any(
                    s["persona"]["1"]["speechState"] == "speaking" for s in events("state")[-1:]
                )
            ),
            20 * UNIT,
        )
        results = events("recognizeResults")
    final = finals()[0]
    assert final["status"] == 0
    assert final["errorMessage"] == ""
    best = final["results"][0]["alternatives"][0]
    assert {"what", "can", "you", "do"} <= set(best["transcript"].split())
    assert 0.0 <= best["confidence"] <= 1.0
    assert any(not r["results"][0]["final"] for r in results if r["results"])
    answer = events("conversationResult")[0]
    assert answer["output"]["context"]["intent"] == "HELP"
    assert answer["input"]["text"] == best["transcript"]
    assert len(finals()) == 1


async def test_stop_recognize_stops_results(start_server: ServerFactory, tmp_path: Path) -> None:
    """After stopRecognize (status 0, {}), speech gives no recognizeResults; startRecognize too."""
    server = await start_server(persona=persona())
    frames: list[Frame] = []
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={},
        devices=MediaFileDevices(_speech_file(tmp_path / "speech.wav"), loop=False),
    )
    scene.on_message.add_listener(frames.append)
    async with scene:
        await scene.connect()
        assert await scene.send_request("stopRecognize", {}) == {}
        session = next(iter(server.state.sessions.values()))
        await until(lambda: session.received_frames.get("audio", 0) > 300, 30 * UNIT)
        assert await scene.send_request("startRecognize", {}) == {}
    assert not [f for f in frames if isinstance(f, SceneEvent) and f.name == "recognizeResults"]
