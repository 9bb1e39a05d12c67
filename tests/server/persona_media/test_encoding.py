"""The encoding backends: a worker process (the server's) and worker threads, alike."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator

import av
import numpy as np
import pytest

from dpkit.server.persona_media.encoders import H264, VP8
from dpkit.server.persona_media.encoding import (
    AudioRequest,
    EncodingBackend,
    EncodingFailed,
    ProcessEncoding,
    ThreadedEncoding,
    VideoRequest,
    _Channel,
)
from dpkit.server.persona_media.face import FaceRenderer
from tests.support import until

WIDTH, HEIGHT, FPS = 96, 72, 15.0


@pytest.fixture(params=["process", "threads"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[EncodingBackend]:
    made: EncodingBackend
    if request.param == "process":
        made = ProcessEncoding(WIDTH, HEIGHT, FPS)
    else:
        renderer = FaceRenderer(WIDTH, HEIGHT)
        made = ThreadedEncoding(renderer, FPS, renderer.render_yuv, workers=2)
    await made.start()
    try:
        yield made
    finally:
        await made.close()


async def test_frames_come_back_as_the_face_with_keyframes_where_asked(
    backend: EncodingBackend,
) -> None:
    renderer = FaceRenderer(WIDTH, HEIGHT)
    decoder = av.CodecContext.create("vp8", "r")
    for index in range(6):
        t = index / FPS
        pose = renderer.pose(t, 1.0 if index >= 3 else 0.0)
        [done] = await backend.video(index * 6000, [VideoRequest(1, VP8, pose, index == 4)])
        assert done.encoder == 1
        assert done.keyframe == (index in (0, 4))
        [picture] = [f for p in done.payloads for f in decoder.decode(av.Packet(p))]
        expected = renderer.render(t, 1.0 if index >= 3 else 0.0).astype(int)
        assert np.abs(picture.to_ndarray(format="rgb24").astype(int) - expected).mean() < 6


async def test_requests_in_flight_are_answered_in_order(backend: EncodingBackend) -> None:
    renderer = FaceRenderer(WIDTH, HEIGHT)
    slots = [
        backend.video(
            i * 6000, [VideoRequest(n, VP8, renderer.pose(i / FPS), False) for n in (1, 2)]
        )
        for i in range(5)
    ]
    results = await asyncio.gather(*slots)
    assert [sorted(done.encoder for done in slot) for slot in results] == [[1, 2]] * 5
    assert [all(done.keyframe for done in slot) for slot in results] == [True] + [False] * 4


async def test_slots_made_while_the_worker_starts_reach_it_in_order() -> None:
    """The first slot waits for the worker that a warm-up is starting; the second, made once
    the worker is up but before the first was sent, must not overtake it (the encoder would
    see time run backwards and fail)."""
    renderer = FaceRenderer(WIDTH, HEIGHT)
    encoding = ProcessEncoding(WIDTH, HEIGHT, FPS)
    try:
        warming = asyncio.ensure_future(encoding.start())
        await asyncio.sleep(0)  # the warm-up holds the start
        first = asyncio.ensure_future(
            encoding.video(0, [VideoRequest(1, VP8, renderer.pose(0.0), False)])
        )
        await until(lambda: encoding._process is not None)
        second = asyncio.ensure_future(
            encoding.video(6000, [VideoRequest(1, VP8, renderer.pose(0.4), False)])
        )
        await warming
        [done_first], [done_second] = await asyncio.gather(first, second)
        assert done_first.keyframe
        assert not done_second.keyframe
    finally:
        await encoding.close()


async def test_a_released_or_reset_encoder_starts_again_on_a_keyframe(
    backend: EncodingBackend,
) -> None:
    pose = FaceRenderer(WIDTH, HEIGHT).pose(0.0)
    first = await backend.video(0, [VideoRequest(3, H264, pose, False)])
    second = await backend.video(6000, [VideoRequest(3, H264, pose, False)])
    backend.release(3)
    third = await backend.video(12000, [VideoRequest(3, H264, pose, False)])
    backend.reset()
    fourth = await backend.video(18000, [VideoRequest(3, H264, pose, False)])
    assert [r[0].keyframe for r in (first, second, third, fourth)] == [True, False, True, True]


async def test_audio_comes_back_as_opus(backend: EncodingBackend) -> None:
    tone = (np.sin(np.arange(960) * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)
    decoder = av.CodecContext.create("opus", "r")
    levels = []
    for index in range(5):
        [done] = await backend.audio(index * 960, [AudioRequest(7, tone.tobytes())])
        for frame in decoder.decode(av.Packet(done.payloads[0])):
            levels.append(float(np.abs(frame.to_ndarray()).mean()))
    assert await backend.audio(0, []) == []
    assert max(levels) > 0.05


async def test_a_worker_that_dies_is_started_again_with_fresh_encoders() -> None:
    backend = ProcessEncoding(WIDTH, HEIGHT, FPS)
    try:
        await backend.start()
        process = backend._process
        assert process is not None
        assert process.pid is not None
        pose = FaceRenderer(WIDTH, HEIGHT).pose(0.0)
        await backend.video(0, [VideoRequest(1, VP8, pose, False)])
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.join, 5)
        [done] = await backend.video(6000, [VideoRequest(1, VP8, pose, False)])
        assert done.keyframe  # a new worker, a new encoder
        assert backend.starts == 2
    finally:
        await backend.close()
    assert backend._process is None
    assert not process.is_alive()


async def test_requests_waiting_when_the_worker_goes_away_fail_by_name() -> None:
    ours, theirs = multiprocessing.Pipe()
    channel = _Channel(ours)
    try:
        waiting = [asyncio.ensure_future(channel.ask(("video", n))) for n in range(3)]
        assert await asyncio.to_thread(theirs.poll, 5)
        assert theirs.recv() == ("video", 0)
        await until(lambda: len(channel._answers) == 3)  # all three are waiting
        theirs.send("first answer")
        theirs.close()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert outcomes[0] == "first answer"
        assert all(isinstance(o, EncodingFailed) for o in outcomes[1:])
        with pytest.raises(EncodingFailed, match="went away"):
            await channel.ask(("video", 9))
    finally:
        channel.close()
