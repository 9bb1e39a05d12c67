"""The shared timeline: idle frames encoded once for all, a speaking session on its own encoder.

The broadcast runs on fake time here (its clocks never sleep for real), so every frame slot is
encoded and handed out as fast as the encoders go. Pictures are small, and real: the packets are
VP8 (or H.264, or Opus) from PyAV's encoders, and the tests decode them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc.mediastreams import MediaStreamError

from dpkit.server.persona_media.broadcast import (
    MAX_PENDING_SLOTS,
    MAX_QUEUED_FRAMES,
    MIN_SHARED_KEYFRAME_GAP_S,
    OWN,
    SHARED,
    AudioSubscription,
    PersonaBroadcast,
    VideoSubscription,
)
from dpkit.server.persona_media.encoders import AUDIO_FRAME_SAMPLES, H264, VP8
from dpkit.server.persona_media.encoding import ThreadedEncoding
from dpkit.server.persona_media.face import FaceRenderer
from tests.fake_time import FakeTime
from tests.support import until

if TYPE_CHECKING:
    from dpkit.server.persona_media.encoders import Packet

WIDTH, HEIGHT, FPS = 96, 72, 15.0
GAP_FRAMES = round(MIN_SHARED_KEYFRAME_GAP_S * FPS)


def _broadcast(renderer: FaceRenderer | None = None) -> PersonaBroadcast:
    face = renderer or FaceRenderer(WIDTH, HEIGHT)
    encoding = ThreadedEncoding(face, FPS, face.render_yuv, workers=2)
    return PersonaBroadcast(face, FPS, encoding, clock=FakeTime().clock)


@pytest.fixture
async def broadcast() -> AsyncIterator[PersonaBroadcast]:
    shared = _broadcast()
    try:
        yield shared
    finally:
        await shared.close()


async def _frames(sub: VideoSubscription, count: int) -> list[list[Packet]]:
    """The next ``count`` frames' packets (a frame's packets share a pts)."""
    frames: list[list[Packet]] = []
    async with asyncio.timeout(5):
        while len(frames) < count:
            packet = await sub.outbox.get()
            if frames and frames[-1][0].pts == packet.pts:
                frames[-1].append(packet)
            else:
                frames.append([packet])
    return frames


def _is_key(frame: list[Packet]) -> bool:
    return any(packet.is_keyframe for packet in frame)


class Switch:
    """A speaking flag a test turns on and off."""

    def __init__(self) -> None:
        self.on = False

    def __call__(self) -> bool:
        return self.on


async def test_idle_sessions_get_every_frame_from_the_one_shared_encoder(
    broadcast: PersonaBroadcast,
) -> None:
    """Two idle sessions: the same packets, counted once by the shared encoder, no own one."""
    first = broadcast.subscribe_video(VP8)
    second = broadcast.subscribe_video(VP8)
    a, b = await asyncio.gather(_frames(first, 20), _frames(second, 20))
    assert [bytes(f[0]) for f in a] == [bytes(f[0]) for f in b]
    assert [f[0].pts for f in a] == [6000 * i for i in range(20)]
    assert first.switches == second.switches == [(SHARED, True)]
    stats = broadcast.stats()
    assert stats.own_video_frames == 0
    assert stats.video_on_shared == 2
    assert first.frames[SHARED] == second.frames[SHARED] >= 20
    # Counted when planned: a few slots may still be being encoded.
    in_flight = stats.shared_video_frames - first.frames[SHARED]
    assert 0 <= in_flight <= MAX_PENDING_SLOTS + 1


async def test_a_joiner_after_a_while_joins_the_shared_stream_on_a_keyframe_at_once(
    broadcast: PersonaBroadcast,
) -> None:
    """The last shared keyframe is older than the gap: the shared stream sends one now."""
    early = broadcast.subscribe_video(VP8)
    await _frames(early, 3 * GAP_FRAMES)
    late = broadcast.subscribe_video(VP8)
    frames, _early_frames = await asyncio.gather(_frames(late, 3), _frames(early, 3))
    assert _is_key(frames[0])
    assert late.switches == [(SHARED, True)]
    assert broadcast.stats().own_video_frames == 0


async def test_a_joiner_right_after_a_keyframe_starts_on_its_own_and_joins_within_the_gap(
    broadcast: PersonaBroadcast,
) -> None:
    """Its first frame is a keyframe of its own; it moves to the shared stream on the next
    shared keyframe, at most the gap later, and the others are sent just that one extra."""
    early = broadcast.subscribe_video(VP8)
    await _frames(early, 3 * GAP_FRAMES)
    early.request_keyframe()
    while not _is_key((await _frames(early, 1))[0]):
        pass
    keyframes_before = early.keyframes
    late = broadcast.subscribe_video(VP8)
    frames, early_frames = await asyncio.gather(
        _frames(late, GAP_FRAMES + 3), _frames(early, GAP_FRAMES + 3)
    )
    assert _is_key(frames[0])
    assert late.switches == [(OWN, True), (SHARED, True)]
    assert late.frames[OWN] <= GAP_FRAMES + 1 + MAX_PENDING_SLOTS
    assert early.keyframes == keyframes_before + 1
    assert sum(_is_key(frame) for frame in early_frames) == 1


async def test_speaking_switches_to_its_own_encoder_on_a_keyframe_and_back() -> None:
    """Shared (idle), own from its first speaking frame (a keyframe), shared again after."""
    shared = _broadcast()
    try:
        speaking = Switch()
        mouth_open = 0.0
        talker = shared.subscribe_video(VP8, mouth=lambda: mouth_open, speaking=speaking)
        idle = shared.subscribe_video(VP8)
        await asyncio.gather(_frames(talker, 5), _frames(idle, 5))
        speaking.on, mouth_open = True, 1.0
        talking, _idle_frames = await asyncio.gather(_frames(talker, 10), _frames(idle, 10))
        assert talker.source == OWN
        assert talker.switches[:2] == [(SHARED, True), (OWN, True)]
        # Frames already queued before the switch come first; then the own keyframe.
        assert sum(_is_key(frame) for frame in talking) == 1
        speaking.on, mouth_open = False, 0.0
        await asyncio.gather(_frames(talker, GAP_FRAMES + 3), _frames(idle, GAP_FRAMES + 3))
        assert talker.switches == [(SHARED, True), (OWN, True), (SHARED, True)]
        assert talker.own is None
        assert idle.switches == [(SHARED, True)]
        assert shared.stats().video_on_shared == 2
        # Speaking again reuses the spare encoder, and it too starts on a keyframe.
        spare = shared._spare_encoders[VP8][-1]
        speaking.on, mouth_open = True, 1.0
        await asyncio.gather(_frames(talker, 5), _frames(idle, 5))
        assert talker.own == spare
        assert talker.switches[-1] == (OWN, True)
    finally:
        await shared.close()


async def test_keyframe_requests_on_the_shared_stream_are_answered_and_coalesced(
    broadcast: PersonaBroadcast,
) -> None:
    """Many requests in one gap give one shared keyframe, within the gap."""
    subs = [broadcast.subscribe_video(VP8) for _ in range(5)]
    await asyncio.gather(*(_frames(sub, 2 * GAP_FRAMES) for sub in subs))
    before = broadcast.stats().shared_video_keyframes
    for sub in subs:
        sub.request_keyframe()
    received = await asyncio.gather(*(_frames(sub, GAP_FRAMES + 1) for sub in subs))
    assert all(any(_is_key(frame) for frame in frames) for frames in received)
    assert broadcast.stats().shared_video_keyframes == before + 1
    assert all(sub.source == SHARED for sub in subs)


async def test_a_keyframe_request_on_an_own_encoder_is_answered_at_the_next_frame(
    broadcast: PersonaBroadcast,
) -> None:
    speaking = Switch()
    speaking.on = True
    sub = broadcast.subscribe_video(VP8, mouth=lambda: 0.5, speaking=speaking)
    frames = await _frames(sub, 5)
    assert _is_key(frames[0])
    assert not any(_is_key(f) for f in frames[1:])
    sub.request_keyframe()
    # The slots already planned (being encoded, or queued) come first.
    after = await _frames(sub, MAX_PENDING_SLOTS + 3)
    assert any(_is_key(frame) for frame in after)
    assert sub.source == OWN


async def test_switches_decode_cleanly_and_show_the_face(broadcast: PersonaBroadcast) -> None:
    """A receiver decoding across shared -> own -> shared gets every frame, each the face."""
    speaking = Switch()
    sub = broadcast.subscribe_video(
        VP8, mouth=lambda: 1.0 if speaking.on else 0.0, speaking=speaking
    )
    frames = await _frames(sub, 10)
    speaking.on = True
    frames += await _frames(sub, 10)
    speaking.on = False
    frames += await _frames(sub, GAP_FRAMES + 5)
    assert [source for source, _ in sub.switches] == [SHARED, OWN, SHARED]
    decoder = av.CodecContext.create("vp8", "r")
    renderer = broadcast.renderer
    mouths = []
    for frame in frames:
        decoded = [out for packet in frame for out in decoder.decode(packet)]
        assert len(decoded) == 1
        picture = decoded[0].to_ndarray(format="rgb24")
        t = (frame[0].pts or 0) / 90000
        # The frame shows the face at that moment, open-mouthed while speaking.
        candidates = [renderer.render(t, mouth) for mouth in (0.0, 1.0)]
        errors = [np.abs(picture.astype(int) - c.astype(int)).mean() for c in candidates]
        assert min(errors) < 6, errors
        mouths.append(int(np.argmin(errors)))
    # Closed, open while speaking, closed: the switches land a few frames after the flag
    # changes (the slots already planned come first), and the open stretch is as long as
    # the speaking one.
    opened = mouths.index(1)
    closed = opened + mouths[opened:].index(0)
    assert 10 <= opened <= 10 + MAX_PENDING_SLOTS + 2
    assert 8 <= closed - opened <= 12
    assert set(mouths[closed:]) == {0}


async def test_an_h264_session_has_its_own_shared_stream(broadcast: PersonaBroadcast) -> None:
    vp8 = broadcast.subscribe_video(VP8)
    h264 = broadcast.subscribe_video(H264)
    vp8_frames = await _frames(vp8, 5)
    h264_frames = await _frames(h264, 5)
    assert vp8.switches == h264.switches == [(SHARED, True)]
    decoder = av.CodecContext.create("h264", "r")
    pictures = [out for frame in h264_frames for p in frame for out in decoder.decode(p)]
    assert len(pictures) >= 4  # the decoder may hold one frame back
    assert (pictures[0].width, pictures[0].height) == (WIDTH, HEIGHT)
    assert bytes(vp8_frames[0][0])[:3] != bytes(h264_frames[0][0])[:3]


async def test_a_stalled_sender_keeps_a_bounded_backlog_and_gets_a_keyframe(
    broadcast: PersonaBroadcast,
) -> None:
    stalled = broadcast.subscribe_video(VP8)
    reader = broadcast.subscribe_video(VP8)
    await _frames(reader, 4 * MAX_QUEUED_FRAMES)
    assert len(stalled.outbox.packets) <= MAX_QUEUED_FRAMES + 1
    frames = await _frames(stalled, len(stalled.outbox.packets) + GAP_FRAMES + 2)
    assert sum(_is_key(frame) for frame in frames) >= 1


async def test_unsubscribing_ends_the_senders_wait_and_the_timeline_stops(
    broadcast: PersonaBroadcast,
) -> None:
    sub = broadcast.subscribe_video(VP8)
    audio = broadcast.subscribe_audio()
    await _frames(sub, 2)
    waiting = asyncio.ensure_future(_drain(sub))
    await asyncio.sleep(0)
    broadcast.unsubscribe(sub)
    broadcast.unsubscribe(audio)
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 5)
    await until(lambda: broadcast._video_task is None and broadcast._audio_task is None)
    assert broadcast.stats().video_on_shared + broadcast.stats().video_on_own == 0
    assert broadcast._video_task is None
    assert broadcast._audio_task is None
    # A new session starts the timeline again, on a fresh keyframe.
    again = broadcast.subscribe_video(VP8)
    assert _is_key((await _frames(again, 1))[0])


async def _drain(sub: VideoSubscription) -> None:
    while True:
        await sub.outbox.get()


async def test_a_closed_broadcast_refuses_subscriptions() -> None:
    shared = _broadcast()
    await shared.close()
    await shared.close()
    with pytest.raises(RuntimeError, match="closed"):
        shared.subscribe_video(VP8)
    with pytest.raises(ValueError, match="cannot encode video"):
        _broadcast().subscribe_video("video/AV1")


# -- audio -------------------------------------------------------------------------------------


class Speech:
    """A sample source that speaks ``frames`` 20 ms frames of a tone when told to."""

    def __init__(self) -> None:
        self.left = 0

    def say(self, frames: int) -> None:
        self.left = frames * AUDIO_FRAME_SAMPLES

    def __call__(self, count: int) -> npt.NDArray[np.int16]:
        take = min(count, self.left)
        self.left -= take
        phase = np.arange(take) * 2 * np.pi * 440 / 48000
        return (8000 * np.sin(phase)).astype(np.int16)


async def _audio(sub: AudioSubscription, count: int) -> list[Packet]:
    async with asyncio.timeout(5):
        return [await sub.outbox.get() for _ in range(count)]


def _decoded_dbfs(packets: list[Packet]) -> list[float]:
    decoder = av.CodecContext.create("opus", "r")
    levels = []
    for packet in packets:
        for frame in decoder.decode(packet):
            samples = frame.to_ndarray().astype(np.float64)
            if frame.format.name.startswith("s16"):
                samples /= 32768.0
            levels.append(10 * np.log10(max(float(np.mean(samples**2)), 1e-12)))
    return levels


async def test_quiet_sessions_share_room_tone_and_a_speaking_one_has_its_own_opus(
    broadcast: PersonaBroadcast,
) -> None:
    speech = Speech()
    talker = broadcast.subscribe_audio(speech)
    quiet = broadcast.subscribe_audio()
    first, _quiet_first = await asyncio.gather(_audio(talker, 10), _audio(quiet, 10))
    speech.say(25)
    spoken, _quiet_then = await asyncio.gather(_audio(talker, 40), _audio(quiet, 40))
    assert talker.frames[SHARED] >= 10
    assert 24 <= talker.frames[OWN] <= 27
    assert quiet.frames[OWN] == 0
    # The room tone is a 4 s loop: its 200 frames are encoded once, then only stamped.
    assert broadcast.stats().shared_audio_frames == 200
    assert quiet.frames[SHARED] >= 50
    pts = [packet.pts for packet in first + spoken]
    assert pts == [960 * i for i in range(len(pts))]
    levels = _decoded_dbfs(first + spoken)
    assert max(levels[:10]) < -35  # room tone
    assert min(levels[14:30]) > -20  # the tone it speaks
    assert max(levels[-5:]) < -35  # room tone again


async def test_a_broken_audio_source_ends_its_own_session_only(
    broadcast: PersonaBroadcast, caplog: pytest.LogCaptureFixture
) -> None:
    def wrong(count: int) -> npt.NDArray[np.int16]:
        return np.zeros(count, np.float32)

    broken = broadcast.subscribe_audio(wrong)
    fine = broadcast.subscribe_audio()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(broken.outbox.get(), 5)
    assert len(await _audio(fine, 5)) == 5
    assert "its source failed" in caplog.text
