"""EspeakVoice speaks text as 48 kHz int16 audio; Utterance gives the mouth movement to match."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import numpy.typing as npt
import pytest

from dpkit.errors import DpkitError
from dpkit.media.levels import rms_dbfs
from dpkit.server.persona_media.voice import (
    LEAD_IN_S,
    SAMPLE_RATE,
    TAIL_S,
    EspeakVoice,
    Utterance,
    VoiceError,
    _resample,
)

FPS = 15
SENTENCE = "Hello! I'm Ava, a digital person. How can I help you today?"


def tone(seconds: float, dbfs: float, rate: int = SAMPLE_RATE) -> npt.NDArray[np.int16]:
    """A 440 Hz sine whose RMS is ``dbfs`` (a full-scale sine measures -3 dBFS)."""
    amplitude = 32768.0 * math.sqrt(2.0) * 10.0 ** (dbfs / 20.0)
    t = np.arange(round(seconds * rate)) / rate
    return np.asarray(np.round(amplitude * np.sin(2.0 * math.pi * 440.0 * t)), dtype=np.int16)


def speech_frames(envelope: npt.NDArray[np.float32], fps: float) -> npt.NDArray[np.float32]:
    """The envelope without the frames that fall in the silent lead-in and tail."""
    return envelope[math.ceil(LEAD_IN_S * fps) : len(envelope) - math.ceil(TAIL_S * fps)]


def test_hello_world_is_audible_48k_int16_speech() -> None:
    """ "hello world" gives 0.5-3 s of 48 kHz mono int16 audio well above silence."""
    utterance = EspeakVoice().speak_sync("hello world")
    assert utterance.text == "hello world"
    assert utterance.sample_rate == SAMPLE_RATE == 48000
    assert utterance.samples.dtype == np.int16
    assert utterance.samples.ndim == 1
    assert 0.5 <= utterance.duration_s <= 3.0
    assert rms_dbfs(utterance.samples) > -40.0


def test_longer_text_gives_a_longer_utterance() -> None:
    """A sentence takes longer to say than two words."""
    voice = EspeakVoice()
    assert voice.speak_sync(SENTENCE).duration_s > voice.speak_sync("hello world").duration_s + 1.0


def test_faster_rate_gives_a_shorter_utterance() -> None:
    """The words-per-minute setting reaches the synthesiser."""
    slow = EspeakVoice(rate_wpm=120).speak_sync(SENTENCE)
    fast = EspeakVoice(rate_wpm=300).speak_sync(SENTENCE)
    assert fast.duration_s < slow.duration_s * 0.7


def test_speech_is_padded_with_silence() -> None:
    """The utterance starts and ends with the lead-in and tail of digital silence."""
    samples = EspeakVoice().speak_sync("hello world").samples
    assert not samples[: round(LEAD_IN_S * SAMPLE_RATE * 0.9)].any()
    assert rms_dbfs(samples[-round(TAIL_S * SAMPLE_RATE * 0.9) :]) < -80.0


def test_mouth_envelope_follows_speech() -> None:
    """At 15 fps there is one value per frame, mostly open in speech and shut at both ends."""
    utterance = EspeakVoice().speak_sync("hello world")
    envelope = utterance.mouth_envelope(FPS)
    assert envelope.dtype == np.float32
    assert len(envelope) == math.ceil(utterance.duration_s * FPS)
    assert float(envelope.min()) >= 0.0
    assert float(envelope.max()) <= 1.0
    assert envelope[0] < 0.05
    assert envelope[-1] < 0.05
    speech = speech_frames(envelope, FPS)
    assert np.mean(speech > 0.5) > 0.6
    assert float(speech.max()) > 0.9


def test_empty_or_blank_text_gives_an_empty_utterance() -> None:
    """Nothing to say gives no samples and no frames."""
    voice = EspeakVoice()
    for text in ("", "  \n\t"):
        utterance = voice.speak_sync(text)
        assert utterance.text == text
        assert utterance.samples.size == 0
        assert utterance.duration_s == 0.0
        assert utterance.mouth_envelope(FPS).size == 0


def test_unknown_voice_raises_voice_error() -> None:
    """A voice name eSpeak NG does not know is a VoiceError naming it."""
    with pytest.raises(VoiceError, match="no-such-voice") as caught:
        EspeakVoice("no-such-voice").speak_sync("hello")
    assert caught.value.name == "voiceError"
    assert isinstance(caught.value, DpkitError)


async def test_unknown_voice_raises_voice_error_async() -> None:
    """speak() reports an unknown voice the same way as speak_sync()."""
    with pytest.raises(VoiceError, match="no-such-voice"):
        await EspeakVoice("no-such-voice").speak("hello")


def test_a_failed_voice_does_not_spoil_the_next() -> None:
    """After an unknown voice fails, a good voice still speaks."""
    with pytest.raises(VoiceError):
        EspeakVoice("no-such-voice").speak_sync("hello")
    assert EspeakVoice().speak_sync("hello").duration_s > 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"voice": ""}, "voice name"),
        ({"rate_wpm": 10}, "rate"),
        ({"rate_wpm": 1000}, "rate"),
        ({"pitch": -1}, "pitch"),
        ({"pitch": 101}, "pitch"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs: dict[str, object], message: str) -> None:
    """Out-of-range rate or pitch, or an empty voice name, fail before anything is spoken."""
    with pytest.raises(VoiceError, match=message):
        EspeakVoice(**kwargs)  # type: ignore[arg-type]


async def test_concurrent_speak_calls_do_not_mix() -> None:
    """Two voices speaking at once each get their own whole utterance (the lock holds)."""
    first, second = EspeakVoice(), EspeakVoice("en-us+f3", rate_wpm=250, pitch=70)
    alone = [first.speak_sync(SENTENCE).duration_s, second.speak_sync("hello world").duration_s]
    together = await asyncio.gather(first.speak(SENTENCE), second.speak("hello world"))
    assert [u.text for u in together] == [SENTENCE, "hello world"]
    for utterance, expected in zip(together, alone, strict=True):
        assert utterance.duration_s == pytest.approx(expected, rel=0.05)
        assert rms_dbfs(utterance.samples) > -40.0


def test_resampling_keeps_length_timing_and_pitch() -> None:
    """22050 -> 48000 Hz gives exactly the scaled length, no delay, and the same frequency."""
    source = tone(1.0, -10.0, rate=22050)
    source[:2205] = 0
    result = _resample(source, 22050, SAMPLE_RATE)
    assert result.dtype == np.int16
    assert len(result) == SAMPLE_RATE
    # The tone starts at 0.1 s in both; a resampler that shifted it would show sound earlier.
    assert rms_dbfs(result[: round(0.095 * SAMPLE_RATE)]) < -60.0
    spectrum = np.abs(np.fft.rfft(result[SAMPLE_RATE // 2 :]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (SAMPLE_RATE // 2)
    assert peak_hz == pytest.approx(440.0, abs=2.0)
    assert rms_dbfs(result[SAMPLE_RATE // 2 :]) == pytest.approx(-10.0, abs=0.2)


def test_envelope_maps_levels_to_openness() -> None:
    """A loud tone opens the mouth fully, silence keeps it shut, a quiet tone half-opens it."""
    silence = np.zeros(SAMPLE_RATE // 2, dtype=np.int16)
    samples = np.concatenate((silence, tone(1.0, -15.0), silence, tone(1.0, -32.5), silence))
    envelope = Utterance("test", samples).mouth_envelope(10)
    assert len(envelope) == 35
    assert envelope[:5].max() == 0.0
    assert envelope[7:15] == pytest.approx(1.0, abs=0.01)
    assert envelope[18:20] == pytest.approx(0.0, abs=0.01)
    assert envelope[22:30] == pytest.approx(0.5, abs=0.03)
    assert envelope[33:] == pytest.approx(0.0, abs=0.01)


def test_envelope_counts_a_last_partial_frame() -> None:
    """One value per frame begun: 1.01 s at 15 fps is 16 frames, exactly 1 s is 15."""
    assert len(Utterance("x", tone(1.01, -20.0)).mouth_envelope(15)) == 16
    assert len(Utterance("x", tone(1.0, -20.0)).mouth_envelope(15)) == 15
    assert len(Utterance("x", tone(1.0, -20.0)).mouth_envelope(29.97)) == 30


def test_envelope_refuses_a_bad_frame_rate() -> None:
    """fps must be a positive finite number."""
    utterance = Utterance("x", tone(0.1, -20.0))
    for fps in (0.0, -15.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="fps"):
            utterance.mouth_envelope(fps)


def test_utterance_samples_are_read_only_and_checked() -> None:
    """The audio of a frozen utterance cannot be changed, and must be 1-D int16."""
    source = tone(0.1, -20.0)
    utterance = Utterance("x", source)
    with pytest.raises(ValueError, match="read-only"):
        utterance.samples[0] = 1
    source[0] = 1  # the caller's own array stays writable
    with pytest.raises(ValueError, match="int16"):
        Utterance("x", source.astype(np.float32))
    with pytest.raises(ValueError, match="1-D"):
        Utterance("x", source.reshape(1, -1))
    with pytest.raises(ValueError, match="sample rate"):
        Utterance("x", source, sample_rate=0)
