"""PersonaAudioTrack sends paced 20 ms mono frames: quiet room tone, or speech when given."""

from __future__ import annotations

import fractions

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc.mediastreams import MediaStreamError

from dpkit.media.levels import audio_frame_to_mono, rms_dbfs
from dpkit.server.persona_media.audio import (
    FRAME_SAMPLES,
    PersonaAudioTrack,
    SampleSource,
    room_tone,
)
from tests.fake_time import FakeTime


def _track(source: SampleSource | None = None) -> PersonaAudioTrack:
    return PersonaAudioTrack(source, clock=FakeTime().clock(48000, 0.02))


async def _samples(track: PersonaAudioTrack, frames: int) -> npt.NDArray[np.int16]:
    return np.concatenate([audio_frame_to_mono(await track.recv()) for _ in range(frames)])


async def test_frames_are_20ms_of_48khz_mono_s16() -> None:
    """Frames hold 960 s16 mono samples at 48 kHz; the track's kind is audio."""
    track = _track()
    frame = await track.recv()
    assert track.kind == "audio"
    assert isinstance(frame, av.AudioFrame)
    assert (frame.samples, frame.format.name, frame.layout.name) == (960, "s16", "mono")
    assert frame.sample_rate == 48000


async def test_pts_count_samples() -> None:
    """pts rise by 960 per frame in a 1/48000 time base."""
    track = _track()
    frames = [await track.recv() for _ in range(4)]
    assert [f.pts for f in frames] == [0, 960, 1920, 2880]
    assert all(f.time_base == fractions.Fraction(1, 48000) for f in frames)


async def test_room_tone_is_quiet_but_present() -> None:
    """By default the track plays room tone around -45 dBFS, and no frame is silent."""
    track = _track()
    frames = [audio_frame_to_mono(await track.recv()) for _ in range(50)]
    assert -55.0 < rms_dbfs(np.concatenate(frames)) < -35.0
    assert min(rms_dbfs(f) for f in frames) > -65.0


def test_room_tone_loops_without_a_seam() -> None:
    """Wrapping from the end of the loop to its start is no bigger a step than any other."""
    tone = room_tone().astype(np.int32)
    steps = np.abs(np.diff(tone))
    assert abs(int(tone[0]) - int(tone[-1])) <= steps.max()
    assert tone.size % FRAME_SAMPLES == 0
    assert not room_tone().flags.writeable


async def test_source_samples_replace_the_room_tone() -> None:
    """With a source, frames carry exactly the samples it returns."""
    speech = np.arange(FRAME_SAMPLES, dtype=np.int16)
    asked: list[int] = []

    def source(count: int) -> npt.NDArray[np.int16]:
        asked.append(count)
        return speech

    samples = await _samples(_track(source), 2)
    assert asked == [FRAME_SAMPLES, FRAME_SAMPLES]
    assert np.array_equal(samples, np.concatenate([speech, speech]))


async def test_short_source_is_topped_up_with_room_tone() -> None:
    """When the source runs short, the rest of the frame is room tone, not digital silence."""
    samples = await _samples(_track(lambda count: np.full(100, 5000, dtype=np.int16)), 1)
    assert np.all(samples[:100] == 5000)
    assert np.array_equal(samples[100:], room_tone()[100:FRAME_SAMPLES])


@pytest.mark.parametrize(
    "returned",
    [
        np.zeros(FRAME_SAMPLES + 1, dtype=np.int16),
        np.zeros(FRAME_SAMPLES, dtype=np.float32),
        np.zeros((2, FRAME_SAMPLES), dtype=np.int16),
    ],
)
async def test_malformed_source_output_is_rejected(returned: npt.NDArray[np.generic]) -> None:
    """Too many samples, the wrong dtype or a 2-D array from the source raises ValueError."""
    track = _track(lambda count: returned)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="audio source"):
        await track.recv()


def test_clock_must_tick_in_20ms_frames() -> None:
    """A clock with another period is refused."""
    with pytest.raises(ValueError, match="clock"):
        PersonaAudioTrack(clock=FakeTime().clock(48000, 0.01))


async def test_stopped_track_raises() -> None:
    """recv() on a stopped track raises aiortc's MediaStreamError."""
    track = _track()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()
