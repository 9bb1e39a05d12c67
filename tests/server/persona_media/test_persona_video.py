"""PersonaVideoTrack delivers paced, fresh YUV frames of the face that aiortc can encode."""

from __future__ import annotations

import fractions
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError

from dpkit.server.persona_media.face import FaceRenderer
from dpkit.server.persona_media.video import PersonaVideoTrack, Yuv420pConverter
from tests.fake_time import FakeTime


def _track(
    fps: float = 15.0,
    renderer: FaceRenderer | None = None,
    mouth: Callable[[], float] | None = None,
) -> PersonaVideoTrack:
    clock = FakeTime().clock(90000, 1 / fps)
    return PersonaVideoTrack(320, 240, fps, renderer, mouth, clock=clock)


async def test_frames_have_the_configured_size_and_format() -> None:
    """Frames are width x height yuv420p video frames; the track's kind is video."""
    track = _track()
    frame = await track.recv()
    assert track.kind == "video"
    assert isinstance(frame, av.VideoFrame)
    assert (frame.width, frame.height, frame.format.name) == (320, 240, "yuv420p")


@pytest.mark.parametrize(("fps", "step"), [(15.0, 6000), (30.0, 3000), (60.0, 1500)])
async def test_pts_advance_by_the_frame_period(fps: float, step: int) -> None:
    """pts rise by 90000 / fps per frame in a 1/90000 time base."""
    track = _track(fps)
    frames = [await track.recv() for _ in range(4)]
    assert [f.pts for f in frames] == [0, step, 2 * step, 3 * step]
    assert all(f.time_base == fractions.Fraction(1, 90000) for f in frames)


async def test_each_frame_is_a_fresh_copy() -> None:
    """Frames of a repeated pose are distinct; scribbling on one leaves later ones intact."""
    renderer = FaceRenderer(320, 240)
    first = await _track(renderer=renderer).recv()
    reference = first.to_ndarray().copy()
    for plane in first.planes:
        plane.update(bytes(plane.buffer_size))
    second = await _track(renderer=renderer).recv()
    assert second is not first
    assert np.array_equal(second.to_ndarray(), reference)


async def test_mouth_callable_opens_the_mouth() -> None:
    """The mouth callable is polled each frame and its value shows in the picture."""
    closed = await _track().recv()
    wide = await _track(mouth=lambda: 1.0).recv()
    assert not np.array_equal(closed.to_ndarray(), wide.to_ndarray())


async def test_tracks_sharing_a_renderer_share_its_cache() -> None:
    """A second track on the same renderer reuses the frames the first one converted."""
    renderer = FaceRenderer(320, 240)
    for track in (_track(renderer=renderer), _track(renderer=renderer)):
        for _ in range(3):
            await track.recv()
    assert renderer.frame_cache.hits >= 3


def test_converters_compare_equal() -> None:
    """Separate converters are equal and hash alike, so they find each other's cached frames."""
    assert Yuv420pConverter() == Yuv420pConverter()
    assert hash(Yuv420pConverter()) == hash(Yuv420pConverter())


async def test_frames_encode_with_aiortc_vp8() -> None:
    """aiortc's VP8 encoder accepts the frames and stamps them with their pts."""
    track = _track()
    encoder = Vp8Encoder()
    for _ in range(2):
        frame = await track.recv()
        # PyAV's encoder rewrites the frame's pts into its own time base, so read it first.
        pts = frame.pts
        payloads, timestamp = encoder.encode(frame)
        assert payloads
        assert timestamp == pts


@pytest.mark.parametrize("fps", [0.0, -1.0, 61.0])
def test_invalid_frame_rates_are_rejected(fps: float) -> None:
    """fps must be in (0, 60]."""
    with pytest.raises(ValueError, match="fps"):
        PersonaVideoTrack(320, 240, fps)


def test_renderer_size_must_match() -> None:
    """A renderer of another size is refused rather than silently rescaled."""
    with pytest.raises(ValueError, match="renderer"):
        PersonaVideoTrack(320, 240, renderer=FaceRenderer(160, 120))


def test_clock_must_match_the_frame_rate() -> None:
    """A clock ticking at another rate or period is refused."""
    with pytest.raises(ValueError, match="clock"):
        PersonaVideoTrack(320, 240, 15.0, clock=FakeTime().clock(90000, 1 / 30))


async def test_stopped_track_raises() -> None:
    """recv() on a stopped track raises aiortc's MediaStreamError, which ends the sender."""
    track = _track()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()
