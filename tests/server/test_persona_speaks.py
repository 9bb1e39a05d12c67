"""The persona speaks: its welcome is heard and its mouth moves, at the right moment."""

from __future__ import annotations

import asyncio
import itertools
import time

import av
import numpy as np

from dpkit import Persona, Scene, SyntheticDevices
from dpkit.media.levels import audio_frame_to_mono, rms_dbfs
from dpkit.server import DpkitServer, PersonaSettings
from tests.support import UNIT, ServerFactory, until

WELCOME = "Hello! I'm Ava, a digital person. How can I help you today?"


def talking_persona(**overrides: object) -> PersonaSettings:
    values: dict[str, object] = {"video_width": 320, "video_height": 240, "greet_wait_s": 30.0}
    values.update(overrides)
    return PersonaSettings(**values)  # type: ignore[arg-type]


def scene_and_persona(server: DpkitServer, *, muted: bool = False) -> tuple[Scene, Persona]:
    scene = Scene(
        server.api_key(),
        requested_media_devices={},
        required_media_devices={},
        persona_muted=muted,
    )
    return scene, Persona(scene)


def speech_times(persona: Persona) -> asyncio.Queue[tuple[float, str, str]]:
    """Each speechState change with the time it arrived."""
    changes: asyncio.Queue[tuple[float, str, str]] = asyncio.Queue()
    persona.on_speech.add_listener(
        lambda _p, state, text: changes.put_nowait((time.monotonic(), state, text))
    )
    return changes


def energy_db(levels: list[float]) -> float:
    return float(10 * np.log10(np.mean(np.power(10.0, np.array(levels) / 10))))


def mouth_motion(frames: list[av.VideoFrame]) -> float:
    """Mean change between consecutive frames in the mouth's part of the picture."""
    crops = []
    for frame in frames:
        gray = frame.to_ndarray(format="gray").astype(np.float32)
        height, width = gray.shape
        crops.append(
            gray[int(height * 0.55) : int(height * 0.8), int(width * 0.35) : int(width * 0.65)]
        )
    return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(crops)]))


async def test_the_welcome_is_heard_and_the_mouth_moves_while_speaking(
    start_server: ServerFactory,
) -> None:
    """While speechState is speaking the persona's audio is loud and its mouth moves; not after."""
    server = await start_server(persona=talking_persona())
    scene, persona = scene_and_persona(server)
    changes = speech_times(persona)
    audio: list[tuple[float, float]] = []
    video: list[tuple[float, av.VideoFrame]] = []

    async def record() -> None:
        async def audio_loop() -> None:
            async for frame in scene.audio_frames():
                audio.append((time.monotonic(), rms_dbfs(audio_frame_to_mono(frame))))

        async def video_loop() -> None:
            async for frame in scene.video_frames():
                video.append((time.monotonic(), frame))

        await asyncio.gather(audio_loop(), video_loop())

    await scene.connect()
    recording = asyncio.create_task(record())
    started, state, text = await asyncio.wait_for(changes.get(), 10 * UNIT)
    assert (state, text) == ("speaking", WELCOME)
    stopped, state, _ = await asyncio.wait_for(changes.get(), 20 * UNIT)
    assert state == "idle"
    await asyncio.sleep(1.0 * UNIT)  # some silence after the speech, to compare with
    recording.cancel()
    await asyncio.gather(recording, return_exceptions=True)
    await scene.disconnect()

    margin = 0.3
    speaking_audio = [db for t, db in audio if started + margin < t < stopped - margin]
    quiet_audio = [db for t, db in audio if t > stopped + 2 * margin]
    # Energy, not the mean of levels: speech has pauses between its words.
    assert energy_db(speaking_audio) > energy_db(quiet_audio) + 15
    speaking_video = [f for t, f in video if started + margin < t < stopped - margin]
    quiet_video = [f for t, f in video if t > stopped + 2 * margin]
    assert mouth_motion(speaking_video) > 2 * mouth_motion(quiet_video) + 0.05


async def test_greeting_waits_for_video_started(start_server: ServerFactory) -> None:
    """Muted, the client sends no videoStarted: the greeting comes after greet_wait_s; unmuted
    at once."""
    server = await start_server(persona=talking_persona(greet_wait_s=2.0 * UNIT))
    muted, muted_persona = scene_and_persona(server, muted=True)
    changes = speech_times(muted_persona)
    connected = time.monotonic()
    await muted.connect()
    at, state, text = await asyncio.wait_for(changes.get(), 10 * UNIT)
    assert (state, text) == ("speaking", WELCOME)
    assert at - connected >= 2.0 * UNIT
    await muted.disconnect()

    unmuted, unmuted_persona = scene_and_persona(server)
    changes = speech_times(unmuted_persona)
    connected = time.monotonic()
    await unmuted.connect()
    at, state, _ = await asyncio.wait_for(changes.get(), 10 * UNIT)
    assert state == "speaking"
    assert at - connected < 2.0 * UNIT
    await unmuted.disconnect()


async def test_unmuting_later_starts_the_greeting(start_server: ServerFactory) -> None:
    """A muted start loses nothing: unmuting sends videoStarted and the persona greets then."""
    server = await start_server(persona=talking_persona(greet_wait_s=30.0))
    scene, persona = scene_and_persona(server, muted=True)
    changes = speech_times(persona)
    await scene.connect()
    await asyncio.sleep(0.5 * UNIT)
    assert changes.empty()
    await scene.set_persona_muted(False)
    _, state, text = await asyncio.wait_for(changes.get(), 10 * UNIT)
    assert (state, text) == ("speaking", WELCOME)
    await scene.disconnect()


async def test_with_greeting_off_the_init_request_greets(start_server: ServerFactory) -> None:
    """greet_at_start off: silence until conversation_send('', {}, {'kind': 'init'})."""
    server = await start_server(persona=talking_persona(greet_at_start=False))
    scene, persona = scene_and_persona(server)
    changes = speech_times(persona)
    results: list[dict[str, object]] = []
    persona.on_conversation_result.add_listener(lambda _p, result: results.append(result))
    await scene.connect()
    await asyncio.sleep(0.5 * UNIT)
    assert changes.empty()
    reply = await persona.conversation_send("", {}, {"kind": "init"})
    assert isinstance(reply, dict)  # status 0: the response's body
    _, state, text = await asyncio.wait_for(changes.get(), 10 * UNIT)
    assert (state, text) == ("speaking", WELCOME)
    assert results[0]["output"] == {"text": WELCOME, "context": {"intent": "WELCOME_MESSAGE"}}
    answer = await persona.conversation_send("what is your name?")
    assert isinstance(answer, dict)
    await scene.disconnect()


async def test_the_microphone_is_muted_while_the_persona_speaks(
    start_server: ServerFactory,
) -> None:
    """microphoneMuteDelay: the server hears silence from the user's microphone during the
    persona's speech, and the microphone again after it."""
    server = await start_server(persona=talking_persona(), microphone_mute_delay_ms=200)
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=SyntheticDevices(),
    )
    persona = Persona(scene)
    changes = speech_times(persona)
    session_id = await scene.connect()
    session = server.state.sessions[session_id]
    _, state, _ = await asyncio.wait_for(changes.get(), 10 * UNIT)
    assert state == "speaking"
    await until(lambda: (session.user_audio_dbfs or 0.0) < -90.0, within=5 * UNIT)
    _, state, _ = await asyncio.wait_for(changes.get(), 20 * UNIT)
    assert state == "idle"
    await until(lambda: (session.user_audio_dbfs or -200.0) > -40.0, within=5 * UNIT)
    await scene.disconnect()
