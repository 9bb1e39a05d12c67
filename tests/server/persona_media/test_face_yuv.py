"""FaceRenderer composes yuv420p frames directly that match swscale's conversion of its RGB ones."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from dpkit.server.persona_media.face import (
    EYE_LEVELS,
    MOUTH_LEVELS,
    SWAY_X,
    SWAY_Y,
    YUV420P,
    FacePose,
    FaceRenderer,
)
from dpkit.server.persona_media.video import PersonaVideoTrack, Yuv420pConverter
from tests.fake_time import FakeTime

I32 = npt.NDArray[np.int32]


def _max_offset(width: int, height: int) -> tuple[int, int]:
    """The largest head offset a renderer of this size accepts (its sway range)."""
    unit = min(0.75 * width, float(height)) / 320
    return math.ceil(SWAY_X * unit), math.ceil(SWAY_Y * unit)


def _poses(width: int, height: int) -> list[FacePose]:
    """Every eye and mouth level, each at several offsets: extreme, odd, even and none."""
    max_dx, max_dy = _max_offset(width, height)
    xs = sorted({-max_dx, -1, 0, 1, min(2, max_dx), max_dx})
    ys = sorted({-max_dy, -1, 0, 1, max_dy})
    offsets = [(dx, dy) for dx in xs for dy in ys]
    levels = [(eyes, mouth) for eyes in range(EYE_LEVELS) for mouth in range(MOUTH_LEVELS)]
    count = max(len(offsets), len(levels))
    return [FacePose(*offsets[i % len(offsets)], *levels[i % len(levels)]) for i in range(count)]


def _planes(frame: npt.NDArray[np.uint8], width: int, height: int) -> list[I32]:
    """The Y, U and V planes of a packed yuv420p array, as signed integers for differencing."""
    pixels = frame.reshape(-1).astype(np.int32)
    luma, quarter = width * height, width * height // 4
    return [
        pixels[:luma].reshape(height, width),
        pixels[luma : luma + quarter].reshape(height // 2, width // 2),
        pixels[luma + quarter :].reshape(height // 2, width // 2),
    ]


def _differences(width: int, height: int) -> list[list[I32]]:
    """Per pose, the absolute differences per plane between render_yuv and swscale's frame."""
    renderer = FaceRenderer(width, height)
    convert = Yuv420pConverter()
    differences = []
    for pose in _poses(width, height):
        expected = _planes(convert(renderer.render_pose(pose)), width, height)
        actual = _planes(renderer.render_yuv(pose), width, height)
        differences.append([np.abs(a - e) for a, e in zip(actual, expected, strict=True)])
    return differences


@pytest.mark.parametrize(("width", "height"), [(640, 480), (320, 240), (1280, 720), (240, 320)])
def test_yuv_matches_swscale_of_the_rgb_frame(width: int, height: int) -> None:
    """Luma is within a level; chroma is under 0.25 off on average, 2-4 off at a few rim samples."""
    for luma, *chroma in _differences(width, height):
        assert luma.max() <= 1
        assert luma.mean() < 0.05
        for plane in chroma:
            assert plane.mean() < 0.25
            assert plane.max() <= 4
            # Where the head's rim crosses an edge of the backdrop (the neck), chroma blends
            # the subsampled backdrop rather than the full-resolution one: a handful of samples.
            assert np.count_nonzero(plane > 1) <= plane.size // 1000


def test_yuv_matches_swscale_at_the_minimum_size() -> None:
    """At 16x16, where the whole face is rim, chroma averages under half a level off."""
    for luma, *chroma in _differences(16, 16):
        assert luma.max() <= 1
        assert luma.mean() < 0.1
        for plane in chroma:
            assert plane.mean() < 0.5
            assert plane.max() <= 8


@pytest.mark.parametrize(("width", "height"), [(640, 480), (16, 16), (1280, 720), (18, 16)])
def test_yuv_frames_are_packed_yuv420p_and_read_only(width: int, height: int) -> None:
    """render_yuv returns height * 3 / 2 rows of width bytes that cannot be written."""
    frame = FaceRenderer(width, height).render_yuv(FacePose(0, 0, EYE_LEVELS - 1, 0))
    assert frame.shape == (height * 3 // 2, width)
    assert frame.dtype == np.uint8
    assert not frame.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        frame[0, 0] = 0


def test_yuv_frames_are_cached_apart_from_rgb_ones() -> None:
    """A repeated pose is a hit returning the same array; RGB and YUV frames have their own keys."""
    renderer = FaceRenderer(320, 240)
    pose = FacePose(1, -1, 2, 5)
    first = renderer.render_yuv(pose)
    assert (renderer.frame_cache.hits, renderer.frame_cache.misses) == (0, 1)
    assert renderer.render_yuv(pose) is first
    assert (renderer.frame_cache.hits, renderer.frame_cache.misses) == (1, 1)
    rgb = renderer.render_pose(pose)
    assert rgb.shape == (240, 320, 3)
    assert renderer.frame_cache.misses == 2
    assert (YUV420P, pose) in renderer.frame_cache
    assert (None, pose) in renderer.frame_cache


def test_draw_yuv_bypasses_the_cache() -> None:
    """draw_yuv returns a fresh, writable copy of the cached frame and leaves the counters alone."""
    renderer = FaceRenderer(320, 240)
    pose = FacePose(-2, 1, 0, 7)
    cached = renderer.render_yuv(pose)
    drawn = renderer.draw_yuv(pose)
    assert drawn is not cached
    assert drawn.flags.writeable
    assert np.array_equal(drawn, cached)
    assert (renderer.frame_cache.hits, renderer.frame_cache.misses) == (0, 1)


@pytest.mark.parametrize(
    "pose",
    [FacePose(7, 0, 3, 0), FacePose(0, -4, 3, 0), FacePose(0, 0, 4, 0), FacePose(0, 0, 3, 8)],
)
def test_out_of_range_poses_are_rejected(pose: FacePose) -> None:
    """draw_yuv refuses offsets just beyond the sway range and levels beyond the quantisation."""
    assert _max_offset(640, 480) == (6, 3)
    with pytest.raises(ValueError, match=r"offset|level"):
        FaceRenderer(640, 480).draw_yuv(pose)


@pytest.mark.parametrize(("width", "height"), [(320, 240), (16, 16), (1280, 720)])
async def test_video_track_sends_the_renderers_yuv_frames(width: int, height: int) -> None:
    """PersonaVideoTrack sends width x height yuv420p frames, render_yuv's pixel for pixel."""
    renderer = FaceRenderer(width, height)
    clock = FakeTime().clock(90000, 1 / 15)
    track = PersonaVideoTrack(width, height, 15.0, renderer, lambda: 0.5, clock=clock)
    frame = await track.recv()
    assert (frame.width, frame.height, frame.format.name) == (width, height, "yuv420p")
    expected = renderer.render_yuv(renderer.pose(0.0, 0.5))
    assert np.array_equal(frame.to_ndarray(), expected)
    assert renderer.frame_cache.hits == 1
