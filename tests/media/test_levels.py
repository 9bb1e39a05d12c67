"""Level metering and conversion of any PyAV audio frame to int16 mono."""

from __future__ import annotations

import fractions

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from dpkit.media.levels import SILENCE_DBFS, audio_frame_to_mono, rms_dbfs


def _sine(peak: float, count: int = 4800) -> npt.NDArray[np.float64]:
    return peak * np.sin(2 * np.pi * 1000.0 * np.arange(count) / 48000)


def test_full_scale_sine_is_minus_3_dbfs() -> None:
    """RMS is relative to full scale, so a full-scale sine reads about -3 dBFS."""
    assert rms_dbfs(np.round(_sine(32767.0)).astype(np.int16)) == pytest.approx(-3.01, abs=0.01)


def test_float_samples_are_taken_as_minus_one_to_one() -> None:
    """Float input uses 1.0 as full scale and measures the same as the int16 equivalent."""
    assert rms_dbfs(_sine(0.1)) == pytest.approx(-23.01, abs=0.01)
    assert rms_dbfs(_sine(0.1).astype(np.float32)) == pytest.approx(-23.01, abs=0.01)


@pytest.mark.parametrize(
    "samples", [np.zeros(960, dtype=np.int16), np.zeros(0, dtype=np.int16), np.zeros(10)]
)
def test_silence_reads_the_floor(samples: npt.NDArray[np.generic]) -> None:
    """Silence and empty input read -120 dBFS rather than -inf."""
    assert rms_dbfs(samples) == SILENCE_DBFS == -120.0


def test_non_numeric_samples_are_rejected() -> None:
    """Samples that are neither integers nor floats raise TypeError."""
    with pytest.raises(TypeError):
        rms_dbfs(np.zeros(4, dtype=np.complex64))


def test_mono_s16_passes_through() -> None:
    """A mono s16 frame comes back as its own samples."""
    samples = np.arange(-480, 480, dtype=np.int16)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    assert np.array_equal(audio_frame_to_mono(frame), samples)


def test_interleaved_stereo_is_averaged() -> None:
    """Packed s16 stereo (L, R, L, R...) is averaged channel by channel."""
    left = np.full(960, 1000, dtype=np.int16)
    right = np.full(960, -3000, dtype=np.int16)
    interleaved = np.stack([left, right], axis=1).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    mono = audio_frame_to_mono(frame)
    assert mono.dtype == np.int16
    assert np.all(mono == -1000)


def test_planar_float_stereo_is_converted_and_averaged() -> None:
    """Planar float stereo is clipped to -1..1, scaled to int16 and averaged."""
    planes = np.stack([np.full(960, 0.5), np.full(960, 2.0)]).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="stereo")
    assert np.all(audio_frame_to_mono(frame) == round((16384 + 32767) / 2))


def test_opus_round_trip_yields_packed_stereo_3db_down() -> None:
    """aiortc decodes Opus to packed s16 stereo; mono sent through aiortc arrives 3 dB down."""
    encoder, decoder = OpusEncoder(), OpusDecoder()
    sent = np.round(_sine(3276.7, 960 * 25)).astype(np.int16)
    received = []
    for index in range(25):
        chunk = sent[index * 960 : (index + 1) * 960].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = index * 960
        frame.time_base = fractions.Fraction(1, 48000)
        payloads, timestamp = encoder.encode(frame)
        for payload in payloads:
            for decoded in decoder.decode(JitterFrame(data=payload, timestamp=timestamp)):
                assert isinstance(decoded, av.AudioFrame)
                assert (decoded.format.name, decoded.layout.name) == ("s16", "stereo")
                received.append(audio_frame_to_mono(decoded))
    # aiortc's encoder upmixes mono to stereo with swresample, which pans each channel at -3 dB;
    # averaging the channels back cannot undo that. Skip the codec's start-up ramp.
    level = rms_dbfs(np.concatenate(received[5:]))
    assert level == pytest.approx(rms_dbfs(sent) - 3.0, abs=1.0)
