"""The session density benchmark's own helpers: the RTP frame counter and the speaking tally."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.density_receivers import (
    RtpCounter,
    StreamCounts,
    check_picture,
    speaking_stats,
)

from dpkit.server.persona_media.face import FaceRenderer

VIDEO_STEP = 6000  # 90 kHz at 15 fps
AUDIO_STEP = 960  # 48 kHz, 20 ms


def _video(counter: RtpCounter, frames: list[tuple[int, int, int]]) -> None:
    """Feed ``(first sequence, timestamp, packets)`` frames, the marker on each last packet."""
    for first, timestamp, packets in frames:
        for n in range(packets):
            counter.add(1, (first + n) & 0xFFFF, timestamp & 0xFFFFFFFF, n == packets - 1)


def test_video_frames_are_packets_sharing_a_timestamp_ended_by_the_marker() -> None:
    """Three frames of 1, 3 and 2 packets count as three frames and six packets."""
    counter = RtpCounter(VIDEO_STEP, video=True)
    _video(counter, [(10, 0, 1), (11, VIDEO_STEP, 3), (14, 2 * VIDEO_STEP, 2)])
    assert counter.counts() == StreamCounts(packets=6, frames=3)


def test_sequence_and_timestamp_wrap_around() -> None:
    """Counting goes on across the 16-bit sequence and 32-bit timestamp wrap."""
    counter = RtpCounter(VIDEO_STEP, video=True)
    start = 2**32 - VIDEO_STEP
    _video(
        counter, [(65534, start, 1), (65535, start + VIDEO_STEP, 2), (1, start + 2 * VIDEO_STEP, 1)]
    )
    assert counter.counts() == StreamCounts(packets=4, frames=3)


def test_a_timestamp_gap_without_loss_is_frames_the_sender_skipped() -> None:
    """Two frames' worth of timestamp missing, sequence contiguous: two skipped, none lost."""
    counter = RtpCounter(VIDEO_STEP, video=True)
    _video(counter, [(0, 0, 1), (1, 3 * VIDEO_STEP, 1)])
    assert counter.counts() == StreamCounts(packets=2, frames=2, skipped=2)


def test_a_lost_marker_packet_loses_the_frame_and_counts_the_loss() -> None:
    """A frame whose last packet never came is not counted; the gap is one lost packet."""
    counter = RtpCounter(VIDEO_STEP, video=True)
    counter.add(1, 0, 0, False)
    counter.add(1, 2, VIDEO_STEP, True)  # sequence 1 (frame 0's marker) lost
    assert counter.counts() == StreamCounts(packets=2, frames=1, lost=1)


def test_audio_is_one_frame_a_packet_and_loss_is_not_skipping() -> None:
    """Audio: a lost packet is lost, a timestamp jump beyond it is skipped frames."""
    counter = RtpCounter(AUDIO_STEP, video=False)
    for sequence, frame in ((100, 0), (101, 1), (103, 3), (104, 7)):
        counter.add(7, sequence, frame * AUDIO_STEP, False)
    assert counter.counts() == StreamCounts(packets=4, frames=4, lost=1, skipped=3)


def test_late_duplicate_and_foreign_packets_are_not_frames() -> None:
    """A repeated or older sequence number is late; another SSRC is foreign; neither counts."""
    counter = RtpCounter(AUDIO_STEP, video=False)
    counter.add(7, 10, 0, False)
    counter.add(7, 11, AUDIO_STEP, False)
    counter.add(7, 11, AUDIO_STEP, False)
    counter.add(7, 9, 0, False)
    counter.add(8, 12, 2 * AUDIO_STEP, False)
    assert counter.counts() == StreamCounts(packets=2, frames=2, late=2, foreign=1)


def test_frame_step_must_be_positive() -> None:
    """A counter with no frame step is refused."""
    with pytest.raises(ValueError, match="frame_step"):
        RtpCounter(0, video=True)


def test_speaking_stats_over_a_window() -> None:
    """Two speak before the window, one more for its second half: min 2, mean 2.5, max 3."""
    changes = [(0.0, 1), (1.0, 1), (15.0, 1), (30.0, -1), (30.0, -1)]
    assert speaking_stats(changes, 10.0, 20.0) == (2, 2.5, 3)


def test_the_drawn_persona_passes_the_picture_check_and_black_does_not() -> None:
    """The renderer's own picture is a persona picture; black and noise are not."""
    persona = FaceRenderer(640, 480).render(1.0)
    assert check_picture(persona, 640, 480) == ""
    assert "luma" in check_picture(np.zeros((480, 640, 3), np.uint8), 640, 480)
    noise = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert check_picture(noise, 640, 480) != ""
    assert "size" in check_picture(persona, 320, 240)
