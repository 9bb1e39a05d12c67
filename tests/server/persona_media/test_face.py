"""FaceRenderer draws a face that blinks, sways and moves its mouth, cheaply after warm-up."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from dpkit.server.persona_media.face import (
    BLINK_DURATION,
    EYE_LEVELS,
    MOUTH_LEVELS,
    FacePose,
    FaceRenderer,
)

U8 = npt.NDArray[np.uint8]


def _closed_times(renderer: FaceRenderer, seconds: float, step: float = 0.005) -> list[float]:
    return [t for t in np.arange(0.0, seconds, step).tolist() if renderer.blink_openness(t) == 0.0]


def _whites(frame: U8) -> int:
    """Pixels as white as the eye whites; nothing else in the picture is that bright."""
    return int(np.count_nonzero(frame.min(axis=2) > 240))


@pytest.mark.parametrize(("width", "height"), [(160, 120), (640, 480), (1280, 720), (240, 320)])
def test_frames_are_rgb_of_the_requested_size(width: int, height: int) -> None:
    """render() returns a height x width x 3 uint8 array at any even size."""
    frame = FaceRenderer(width, height).render(0.0)
    assert frame.shape == (height, width, 3)
    assert frame.dtype == np.uint8


@pytest.mark.parametrize(("width", "height"), [(641, 480), (640, 481), (14, 16), (16, 14)])
def test_odd_or_tiny_sizes_are_rejected(width: int, height: int) -> None:
    """Odd sizes (no YUV 4:2:0) and sizes under 16 pixels raise ValueError."""
    with pytest.raises(ValueError, match="face"):
        FaceRenderer(width, height)


def test_eyes_are_open_between_blinks() -> None:
    """Eyes are fully open at the start and most of the time."""
    renderer = FaceRenderer(320, 240)
    samples = [renderer.blink_openness(t) for t in np.arange(0.0, 60.0, 0.01).tolist()]
    assert samples[0] == 1.0
    assert sum(s == 1.0 for s in samples) / len(samples) > 0.9


def test_blinks_come_every_three_to_five_seconds_and_are_brief() -> None:
    """Each blink starts 3-5 s after the previous one and the eyes are not open for ~150 ms."""
    renderer = FaceRenderer(320, 240)
    step = 0.001
    shut = [renderer.blink_openness(t) < 1.0 for t in np.arange(0.0, 40.0, step).tolist()]
    starts = [i * step for i in range(1, len(shut)) if shut[i] and not shut[i - 1]]
    ends = [i * step for i in range(1, len(shut)) if shut[i - 1] and not shut[i]]
    assert len(starts) >= 7
    gaps = np.diff(starts)
    assert np.all((gaps > 2.9) & (gaps < 5.1))
    durations = np.asarray(ends[: len(starts)]) - np.asarray(starts[: len(ends)])
    assert np.allclose(durations, BLINK_DURATION, atol=0.003)


def test_blink_schedule_is_deterministic_per_seed() -> None:
    """The same seed gives the same blinks; another seed gives different ones."""
    times_a = _closed_times(FaceRenderer(160, 120, seed=1), 12.0)
    times_b = _closed_times(FaceRenderer(160, 120, seed=1), 12.0)
    times_c = _closed_times(FaceRenderer(160, 120, seed=2), 12.0)
    assert times_a == times_b
    assert times_a != times_c


def test_every_blink_shows_a_closed_frame_at_15_fps() -> None:
    """Sampled at 15 fps, each blink includes at least one frame with the eyes fully shut."""
    renderer = FaceRenderer(160, 120)
    eyes = [renderer.pose(i / 15).eyes for i in range(15 * 40)]
    blinks: list[list[int]] = []
    for index, level in enumerate(eyes):
        if level < EYE_LEVELS - 1:
            if index == 0 or eyes[index - 1] == EYE_LEVELS - 1:
                blinks.append([])
            blinks[-1].append(level)
    assert len(blinks) >= 7
    assert all(0 in blink for blink in blinks)


def test_closed_eyes_show_no_eye_whites() -> None:
    """During a blink the eye whites disappear; with the eyes open they are clearly visible."""
    renderer = FaceRenderer(640, 480)
    closed_at = _closed_times(renderer, 6.0)[0]
    assert _whites(renderer.render(0.0)) > 500
    assert _whites(renderer.render(closed_at)) == 0


def test_head_sways_by_a_few_pixels() -> None:
    """The head offset changes over time and stays within about 1% of the frame width."""
    renderer = FaceRenderer(640, 480)
    offsets = {renderer.head_offset(t) for t in np.arange(0.0, 10.0, 0.05).tolist()}
    assert len(offsets) > 5
    assert max(abs(dx) for dx, _ in offsets) <= 8
    assert max(abs(dy) for _, dy in offsets) <= 4
    assert len({dy for _, dy in offsets}) > 1


def test_drawn_head_moves_with_its_offset() -> None:
    """Shifting the pose moves the hair (the darkest region) by exactly that many pixels."""
    renderer = FaceRenderer(640, 480)

    def hair_centre(pose: FacePose) -> npt.NDArray[np.float64]:
        dark = renderer.draw(pose).astype(np.int32).sum(axis=2) < 200
        rows, cols = np.nonzero(dark)
        return np.asarray([cols.mean(), rows.mean()])

    still = hair_centre(FacePose(0, 0, EYE_LEVELS - 1, 0))
    moved = hair_centre(FacePose(5, -3, EYE_LEVELS - 1, 0))
    assert moved - still == pytest.approx([5.0, -3.0], abs=0.05)


def test_mouth_opening_changes_only_the_mouth() -> None:
    """An open mouth differs from the closed smile, only in the lower face, and is darker."""
    renderer = FaceRenderer(640, 480)
    closed = renderer.draw(FacePose(0, 0, EYE_LEVELS - 1, 0))
    wide = renderer.draw(FacePose(0, 0, EYE_LEVELS - 1, MOUTH_LEVELS - 1))
    rows, cols = np.nonzero(np.any(closed != wide, axis=2))
    assert rows.size > 500
    assert rows.min() > 480 * 0.5
    assert rows.max() < 480 * 0.75
    assert abs(cols.mean() - 320) < 5
    assert wide.astype(np.int32).sum() < closed.astype(np.int32).sum()


def test_mouth_levels_grow_monotonically() -> None:
    """Each step of mouth opening changes more of the face than the one before."""
    renderer = FaceRenderer(320, 240)
    closed = renderer.draw(FacePose(0, 0, EYE_LEVELS - 1, 0))
    changed = [
        int(np.count_nonzero(np.any(renderer.draw(FacePose(0, 0, EYE_LEVELS - 1, m)) != closed, 2)))
        for m in range(1, MOUTH_LEVELS)
    ]
    assert changed == sorted(changed)


@pytest.mark.parametrize(
    ("mouth_open", "level"), [(-1.0, 0), (0.0, 0), (0.5, 4), (1.0, 7), (3.0, 7), (float("nan"), 0)]
)
def test_mouth_open_is_clamped_and_quantised(mouth_open: float, level: int) -> None:
    """mouth_open is clamped to 0..1 (NaN counts as closed) and rounded to eight levels."""
    assert FaceRenderer(160, 120).pose(0.0, mouth_open).mouth == level


def test_repeated_poses_come_from_the_cache() -> None:
    """The same pose renders once; later requests return the same read-only array."""
    renderer = FaceRenderer(320, 240)
    first = renderer.render(0.0)
    second = renderer.render(0.0)
    assert second is first
    assert not first.flags.writeable
    assert (renderer.frame_cache.hits, renderer.frame_cache.misses) == (1, 1)


def test_idle_animation_is_all_cache_hits_after_warm_up() -> None:
    """Replaying a minute of idle animation renders nothing new."""
    renderer = FaceRenderer(160, 120)
    times = [i / 15 for i in range(15 * 60)]
    for t in times:
        renderer.render(t)
    misses = renderer.frame_cache.misses
    assert misses < renderer.frame_cache.capacity
    for t in times:
        renderer.render(t)
    assert renderer.frame_cache.misses == misses


def test_cache_is_bounded() -> None:
    """The frame cache never holds more than its capacity."""
    renderer = FaceRenderer(160, 120, cache_size=8)
    for level in range(MOUTH_LEVELS):
        for eyes in range(EYE_LEVELS):
            renderer.render_pose(FacePose(0, 0, eyes, level))
    assert len(renderer.frame_cache) == 8


@pytest.mark.parametrize(
    "pose",
    [FacePose(100, 0, 3, 0), FacePose(0, -100, 3, 0), FacePose(0, 0, 4, 0), FacePose(0, 0, 3, 8)],
)
def test_out_of_range_poses_are_rejected(pose: FacePose) -> None:
    """draw() refuses offsets beyond the sway range and levels beyond the quantisation."""
    with pytest.raises(ValueError, match=r"offset|level"):
        FaceRenderer(640, 480).draw(pose)
