"""Encode once, fan out, through the real server: Python clients on loopback, real WebRTC.

Idle sessions are sent the shared encoder's packets (the server counts them in ``/metrics``); a
session whose persona speaks moves to its own encoder, on a keyframe, and back; a receiver's
keyframe request (a real RTCP PLI) is answered; and the pictures the clients decode show the
mouth moving in the speaking session only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest

from dpkit import Persona, Scene
from dpkit.server import DpkitServer, PersonaSettings
from dpkit.server.persona_media.broadcast import OWN, SHARED, VideoSubscription
from dpkit.server.persona_media.face import FaceRenderer
from tests.support import UNIT, ServerFactory, until

WIDTH, HEIGHT = 320, 240
LONG_TEXT = (
    "Once upon a time there was a digital person who liked to talk about the weather, "
    "the sea, the mountains and the stars, for a good long while."
)


@pytest.fixture
async def server(start_server: ServerFactory) -> DpkitServer:
    persona = PersonaSettings(video_width=WIDTH, video_height=HEIGHT, greet_at_start=False)
    started: DpkitServer = await start_server(capacity=3, persona=persona)
    return started


@pytest.fixture
async def scenes(server: DpkitServer) -> AsyncIterator[list[Scene]]:
    made = [
        Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
        for _ in range(2)
    ]
    try:
        await asyncio.gather(*(scene.connect() for scene in made))
        yield made
    finally:
        await asyncio.gather(*(scene.disconnect() for scene in made))


def _subscription(server: DpkitServer, scene: Scene) -> VideoSubscription:
    """The server's video subscription of ``scene``'s session (read at aiortc's boundary)."""
    session = server.state.sessions[scene.session_id or ""]
    peer = session._peer
    assert peer is not None
    assert peer.video is not None
    subscription = peer.video.subscription
    assert subscription is not None
    return subscription


async def _metrics(server: DpkitServer) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(dpkit_media_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


SHARED_VIDEO = 'dpkit_media_encoded_frames_total{kind="video",encoder="shared"}'
OWN_VIDEO = 'dpkit_media_encoded_frames_total{kind="video",encoder="own"}'


WORKER_STARTS = "dpkit_media_encoding_worker_starts_total"


async def test_the_encoding_worker_starts_with_the_server_not_the_first_session(
    server: DpkitServer,
) -> None:
    """Otherwise the first session's first frames wait for the worker to start."""
    assert not server.state.sessions
    async with asyncio.timeout(10 * UNIT):
        while (await _metrics(server))[WORKER_STARTS] != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _speak(scene: Scene, text: str) -> None:
    await scene.send_request("startSpeaking", {"text": text, "personaId": "1"})


async def test_two_idle_sessions_are_sent_the_packets_of_one_encoder(
    server: DpkitServer, scenes: list[Scene]
) -> None:
    subs = [_subscription(server, scene) for scene in scenes]
    await until(lambda: all(sub.source == SHARED for sub in subs), 5 * UNIT)
    before = await _metrics(server)
    counts = [sub.frames[SHARED] for sub in subs]
    await asyncio.sleep(1.0)
    after = await _metrics(server)
    sent = [sub.frames[SHARED] - count for sub, count in zip(subs, counts, strict=True)]
    encoded = after[SHARED_VIDEO] - before[SHARED_VIDEO]
    # Fifteen frames a second, encoded once and sent to both.
    assert 10 <= encoded <= 20
    assert abs(sent[0] - encoded) <= 1
    assert abs(sent[1] - encoded) <= 1
    assert after[OWN_VIDEO] == before[OWN_VIDEO]
    assert after['dpkit_media_video_sessions{source="shared"}'] == 2


async def test_a_speaking_session_moves_to_its_own_encoder_on_a_keyframe_and_back(
    server: DpkitServer, scenes: list[Scene]
) -> None:
    talker, listener = (_subscription(server, scene) for scene in scenes)
    persona = Persona(scenes[0])
    states: list[str] = []
    persona.on_speech.add_listener(lambda _p, state, _text: states.append(state))
    await until(lambda: talker.source == SHARED and listener.source == SHARED, 5 * UNIT)
    await _speak(scenes[0], "Hello there, nice to meet you.")
    await until(lambda: talker.source == OWN, 10 * UNIT)
    assert talker.switches[-1] == (OWN, True)
    assert talker.own is not None
    await until(lambda: "idle" in states[states.index("speaking") :] if states else False)
    await until(lambda: talker.source == SHARED, 5 * UNIT)
    assert talker.switches[-2:] == [(OWN, True), (SHARED, True)]
    assert talker.own is None
    assert listener.switches == [(SHARED, True)]


async def test_a_keyframe_request_from_the_receiver_is_answered(
    server: DpkitServer, scenes: list[Scene]
) -> None:
    """A real RTCP PLI from the client's receiver; the shared stream sends a keyframe."""
    subscription = _subscription(server, scenes[0])
    await until(lambda: subscription.source == SHARED, 5 * UNIT)
    await asyncio.sleep(0.8)  # past the shared stream's keyframe gap
    before = subscription.keyframes
    session = server.state.sessions[scenes[0].session_id or ""]
    assert session._peer is not None
    server_pc = session._peer._pc
    ssrc = next(t.sender._ssrc for t in server_pc.getTransceivers() if t.kind == "video")
    connection = scenes[0]._connection
    assert connection is not None
    assert connection.peer is not None
    receiver = next(t.receiver for t in connection.peer._pc.getTransceivers() if t.kind == "video")
    await receiver._send_rtcp_pli(ssrc)
    await until(lambda: subscription.keyframes > before, 3 * UNIT)


def mouth_inside_pixels(picture: npt.NDArray[np.uint8]) -> int:
    """How many pixels of the picture are the dark red of the inside of an open mouth."""
    rgb = picture.astype(np.int16)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    inside = (red > 70) & (red < 160) & (green < 75) & (blue < 85) & (red - green > 45)
    return int(inside.sum())


def test_the_mouth_detector_tells_open_from_closed() -> None:
    renderer = FaceRenderer(WIDTH, HEIGHT)
    assert mouth_inside_pixels(renderer.render(1.0, 0.0)) < 5
    assert mouth_inside_pixels(renderer.render(1.0, 1.0)) > 60


async def _mouths(scene: Scene, seconds: float) -> list[int]:
    counts: list[int] = []

    async def read() -> None:
        frame: av.VideoFrame
        async for frame in scene.video_frames():
            picture = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            counts.append(mouth_inside_pixels(picture))

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(seconds)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    return counts


async def test_the_mouth_moves_only_in_the_speaking_session(
    server: DpkitServer, scenes: list[Scene]
) -> None:
    """Decoded on the clients: the speaker's mouth opens and closes, the other stays shut."""
    persona = Persona(scenes[0])
    speaking = asyncio.Event()
    persona.on_speech.add_listener(
        lambda _p, state, _text: speaking.set() if state == "speaking" else None
    )
    await _speak(scenes[0], LONG_TEXT)
    await asyncio.wait_for(speaking.wait(), 10 * UNIT)
    talker, other = await asyncio.gather(_mouths(scenes[0], 2.0), _mouths(scenes[1], 2.0))
    assert len(talker) >= 15
    assert len(other) >= 15
    # The speaker's mouth is open (the count is in the hundreds) and moving (it varies); the
    # other's stays shut (a few pixels of compression noise at the lips' edges).
    opened = [count for count in talker if count > 60]
    assert len(opened) >= 10
    assert max(opened) - min(opened) > 50
    assert max(other) < 20
