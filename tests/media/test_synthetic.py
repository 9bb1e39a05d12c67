"""Synthetic microphone and camera tracks: a paced sine tone and a stamped test pattern."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame

from dpkit.media.levels import audio_frame_to_mono, rms_dbfs
from dpkit.media.synthetic import TestPatternVideoTrack, ToneAudioTrack, read_frame_index
from tests.fake_time import FakeTime


def _tone(frequency: float = 440.0, level_dbfs: float = -20.0) -> ToneAudioTrack:
    return ToneAudioTrack(frequency, level_dbfs, clock=FakeTime().clock(48000, 0.02))


def _pattern(width: int = 320, height: int = 240, fps: float = 15.0) -> TestPatternVideoTrack:
    return TestPatternVideoTrack(width, height, fps, clock=FakeTime().clock(90000, 1 / fps))


async def test_tone_frames_are_20ms_mono_s16_with_sample_pts() -> None:
    """The tone track sends 960-sample s16 mono frames whose pts count samples."""
    track = _tone()
    frames = [await track.recv() for _ in range(3)]
    assert track.kind == "audio"
    assert all(isinstance(f, av.AudioFrame) for f in frames)
    assert [(f.samples, f.format.name, f.layout.name) for f in frames] == [(960, "s16", "mono")] * 3
    assert [f.pts for f in frames] == [0, 960, 1920]
    assert all(f.time_base == fractions.Fraction(1, 48000) for f in frames)


async def test_tone_level_matches_its_peak_setting() -> None:
    """A -20 dBFS peak sine measures about -23 dBFS RMS."""
    track = _tone(level_dbfs=-20.0)
    samples = np.concatenate([audio_frame_to_mono(await track.recv()) for _ in range(10)])
    assert rms_dbfs(samples) == pytest.approx(-23.0, abs=0.3)
    assert int(np.abs(samples).max()) == pytest.approx(3277, abs=2)


async def test_tone_is_continuous_across_frames() -> None:
    """Consecutive frames join into one unbroken sine at the requested frequency."""
    track = _tone(frequency=1000.0)
    samples = np.concatenate([audio_frame_to_mono(await track.recv()) for _ in range(5)])
    expected = 3276.7 * np.sin(2 * np.pi * 1000.0 * np.arange(samples.size) / 48000)
    assert np.abs(samples - expected).max() <= 1.0


@pytest.mark.parametrize(
    ("frequency", "level", "rate"),
    [(0.0, -20.0, 48000), (30000.0, -20.0, 48000), (440.0, 1.0, 48000), (440.0, -20.0, 44110)],
)
def test_invalid_tone_settings_are_rejected(frequency: float, level: float, rate: int) -> None:
    """Frequencies outside (0, Nyquist), levels above 0 dBFS and odd rates raise ValueError."""
    with pytest.raises(ValueError, match=r"tone|sample rate"):
        ToneAudioTrack(frequency, level, rate)


async def test_pattern_frames_have_the_configured_size_and_pts() -> None:
    """The camera sends width x height yuv420p frames 90000 / fps apart."""
    track = _pattern(320, 240, 15.0)
    frames = [await track.recv() for _ in range(3)]
    assert track.kind == "video"
    assert [(f.width, f.height, f.format.name) for f in frames] == [(320, 240, "yuv420p")] * 3
    assert [f.pts for f in frames] == [0, 6000, 12000]
    assert all(f.time_base == fractions.Fraction(1, 90000) for f in frames)


async def test_pattern_stamps_the_frame_index() -> None:
    """read_frame_index recovers 0, 1, 2... from consecutive frames."""
    track = _pattern()
    assert [read_frame_index(await track.recv()) for _ in range(20)] == list(range(20))


async def test_pattern_band_moves() -> None:
    """Consecutive frames differ outside the stamp, so an encoder sees motion."""
    track = _pattern()
    first, second = (await track.recv()).to_ndarray(), (await track.recv()).to_ndarray()
    assert not np.array_equal(first[64:], second[64:])


async def test_frame_index_survives_vp8() -> None:
    """The stamp is still readable after a round trip through aiortc's VP8 codec."""
    track = _pattern()
    encoder, decoder = Vp8Encoder(), Vp8Decoder()
    indices = []
    for _ in range(5):
        payloads, timestamp = encoder.encode(await track.recv())
        data = b"".join(vp8_depayload(payload) for payload in payloads)
        for frame in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            assert isinstance(frame, av.VideoFrame)
            indices.append(read_frame_index(frame))
    assert indices == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("width", "height"), [(30, 240), (320, 30), (321, 240)])
def test_invalid_pattern_sizes_are_rejected(width: int, height: int) -> None:
    """Odd sizes and sizes too small for the stamp raise ValueError."""
    with pytest.raises(ValueError, match="test pattern size"):
        TestPatternVideoTrack(width, height)


def test_small_frames_cannot_carry_a_stamp() -> None:
    """read_frame_index refuses a frame smaller than the stamp."""
    with pytest.raises(ValueError, match="too small"):
        read_frame_index(av.VideoFrame(16, 16, "yuv420p"))
