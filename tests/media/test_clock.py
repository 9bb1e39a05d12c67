"""MediaClock hands out evenly spaced timestamps and sleeps until each frame is due."""

from __future__ import annotations

import fractions
import time

import pytest

from dpkit.media.clock import MAX_LAG_S, MediaClock
from tests.fake_time import FakeTime


async def test_first_timestamp_is_zero_and_immediate() -> None:
    """The first frame has pts 0, time base 1/rate, and is not delayed."""
    fake = FakeTime()
    clock = fake.clock(90000, 1 / 15)
    assert await clock.next_timestamp() == (0, fractions.Fraction(1, 90000))
    assert fake.sleeps == []


async def test_frames_are_one_period_apart() -> None:
    """Each later frame waits one period and advances pts by rate * period."""
    fake = FakeTime()
    clock = fake.clock(90000, 1 / 15)
    stamps = [(await clock.next_timestamp())[0] for _ in range(5)]
    assert stamps == [0, 6000, 12000, 18000, 24000]
    assert fake.sleeps == pytest.approx([1 / 15] * 4)


async def test_work_between_frames_shortens_the_wait() -> None:
    """Time spent producing a frame is deducted from the next wait, so the schedule holds."""
    fake = FakeTime()
    clock = fake.clock(48000, 0.02)
    await clock.next_timestamp()
    fake.advance(0.006)
    pts, _ = await clock.next_timestamp()
    assert pts == 960
    assert fake.sleeps == pytest.approx([0.014])


async def test_a_late_frame_catches_up_without_skipping() -> None:
    """A little behind, frames go out at once with consecutive pts until back on schedule."""
    fake = FakeTime()
    clock = fake.clock(48000, 0.02)
    await clock.next_timestamp()
    fake.advance(0.05)
    stamps = [(await clock.next_timestamp())[0] for _ in range(3)]
    assert stamps == [960, 1920, 2880]
    assert fake.sleeps == pytest.approx([0.01])


async def test_a_long_stall_skips_ahead_instead_of_bursting() -> None:
    """Far behind, the clock jumps to the frame due now rather than replaying the missed ones."""
    fake = FakeTime()
    clock = fake.clock(48000, 0.02)
    await clock.next_timestamp()
    behind = round(MAX_LAG_S / 0.02) + 20
    fake.advance(0.02 * behind + 0.001)
    pts, _ = await clock.next_timestamp()
    assert pts == 960 * behind
    assert fake.sleeps == []
    pts, _ = await clock.next_timestamp()
    assert pts == 960 * (behind + 1)


async def test_a_short_stall_is_caught_up_without_a_gap() -> None:
    """Audio 200 ms behind (ten frames) sends every missed frame: no gap under the lag budget."""
    fake = FakeTime()
    clock = fake.clock(48000, 0.02)
    await clock.next_timestamp()
    fake.advance(0.2)
    stamps = [(await clock.next_timestamp())[0] for _ in range(10)]
    assert stamps == [960 * n for n in range(1, 11)]
    assert fake.sleeps == []


async def test_fractional_periods_round_each_timestamp() -> None:
    """At a frame rate that does not divide the clock rate, pts stay within one tick of exact."""
    fake = FakeTime()
    clock = fake.clock(90000, 1 / 7)
    for index in range(50):
        pts, _ = await clock.next_timestamp()
        assert abs(pts - index * 90000 / 7) <= 0.5


@pytest.mark.parametrize(("rate", "period"), [(0, 0.02), (48000, 0.0), (48000, float("nan"))])
def test_invalid_clock_parameters_are_rejected(rate: int, period: float) -> None:
    """A non-positive rate or a non-positive or NaN period raises ValueError."""
    with pytest.raises(ValueError, match=r"clock rate|frame period"):
        MediaClock(rate, period)


async def test_real_clock_paces_frames() -> None:
    """With the real clock, five frames at 50 fps cannot arrive faster than four periods."""
    clock = MediaClock(48000, 0.02)
    started = time.monotonic()
    for _ in range(5):
        await clock.next_timestamp()
    # A lower bound only (sleeps never end early by more than the clock's resolution).
    assert time.monotonic() - started >= 4 * 0.02 - 0.001
