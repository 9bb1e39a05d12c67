"""The persona's offline voice: text to 48 kHz speech with eSpeak NG, plus a mouth envelope.

eSpeak NG comes from the ``espeakng-loader`` wheel, which bundles ``libespeak-ng.so`` and its
``espeak-ng-data``, so nothing has to be installed system-wide. It is driven through ctypes in
synchronous mode: ``espeak_Synth`` calls our callback with chunks of 22050 Hz int16 samples and
returns when the text has been spoken. Synthesis is fast (a few milliseconds of CPU for a
sentence) but still runs in a worker thread so the event loop never waits on it.

The library keeps one global voice, parameter set and callback per process and is not
thread-safe, so every use goes through one module-level lock and one lazily initialised engine.
That engine is the deliberate exception to "no module-level globals": the state it guards is
global in the C library whatever Python does. So is what it has said lately (``SPOKEN``): the
same words in the same voice are synthesised once, however many sessions say them.
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from dpkit.errors import DpkitError
from dpkit.server.persona_media.utterance_cache import UtteranceCache

SAMPLE_RATE = 48000
"""The rate of every :class:`Utterance` from :class:`EspeakVoice`: WebRTC's Opus rate."""

LEAD_IN_S = 0.1
TAIL_S = 0.2
"""Silence added before and after the speech, so the mouth starts closed and has time to close
again (the envelope's release) before the utterance ends."""

CLOSED_DBFS = -45.0
"""At or below this frame level the mouth is shut: the level of the persona's room tone."""

OPEN_DBFS = -20.0
"""At or above this frame level the mouth is fully open: typical of eSpeak's vowels."""

ATTACK_S = 0.015
RELEASE_S = 0.05
"""Time constants of the envelope's smoothing: the mouth opens quickly and closes a bit slower,
so it does not flutter at high frame rates between syllables."""

MIN_RATE_WPM = 80
MAX_RATE_WPM = 450

MAX_DURATION_S = 60.0
"""The longest utterance a voice renders unless told otherwise: the rest of the text is not
spoken. Text is bounded where it enters the server; this bounds what one text can cost."""

# eSpeak NG's API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() on a bad data path
_EE_OK = 0
_EE_NOT_FOUND = 2
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_BUFFER_MS = 200  # how much audio eSpeak gathers before each callback

# int cb(short *wav, int numsamples, espeak_EVENT *events); the events are not needed.
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class VoiceError(DpkitError):
    """The voice could not speak: eSpeak NG failed to load, or a voice or parameter is wrong."""

    name = "voiceError"
    advice = (
        "Check the voice name (`espeak-ng --voices` lists them) and that the espeakng-loader "
        "package is installed."
    )


@dataclass(frozen=True, eq=False)
class Utterance:
    """Spoken text: mono int16 samples (read-only), and the mouth movement that goes with them.

    Equality is identity (``eq=False``): comparing numpy arrays with ``==`` gives an array, not a
    bool, so a generated ``__eq__`` would raise.
    """

    text: str
    samples: npt.NDArray[np.int16]
    sample_rate: int = SAMPLE_RATE
    _envelopes: dict[float, npt.NDArray[np.float32]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {self.sample_rate}")
        samples = self.samples
        if not isinstance(samples, np.ndarray) or samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError("utterance samples must be a 1-D int16 numpy array")
        # A read-only view makes "frozen" true of the audio too, yet leaves the caller's array
        # writable.
        view = samples.view()
        view.setflags(write=False)
        object.__setattr__(self, "samples", view)

    @property
    def duration_s(self) -> float:
        """How long the utterance lasts, in seconds."""
        return len(self.samples) / self.sample_rate

    def mouth_envelope(self, fps: float) -> npt.NDArray[np.float32]:
        """How open the mouth is in each video frame at ``fps``: float32 from 0 (shut) to 1.

        There is one value per frame started during the utterance (a last partial frame
        counts). Each is the RMS level of that frame's samples, mapped from
        :data:`CLOSED_DBFS`..:data:`OPEN_DBFS` to 0..1 (so ordinary speech reads 0.7-1 and
        silence 0), then smoothed with a fast attack and a slower release.
        """
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps}")
        # Utterances are shared by the sessions that say the same words: worked out once each.
        envelope = self._envelopes.get(fps)
        if envelope is None:
            envelope = self._envelopes[fps] = self._mouth_envelope(fps)
            envelope.setflags(write=False)
        return envelope

    def _mouth_envelope(self, fps: float) -> npt.NDArray[np.float32]:
        count = len(self.samples)
        frames = math.ceil(count * fps / self.sample_rate - 1e-9)
        if frames <= 0:
            return np.zeros(0, dtype=np.float32)
        edges = np.minimum(
            np.round(np.arange(frames + 1) * (self.sample_rate / fps)).astype(np.int64), count
        )
        # Per-frame sums of squares in float32, frame by frame: a cumulative sum over the whole
        # utterance in float64 cost 16 bytes a sample (tens of MiB for a minute of speech).
        lengths = np.maximum(np.diff(edges), 1)
        sums = np.zeros(frames, dtype=np.float64)
        for index in range(frames):
            chunk = self.samples[edges[index] : edges[index + 1]].astype(np.float32) / 32768.0
            sums[index] = float(np.dot(chunk, chunk))
        mean_square = np.maximum(sums / lengths, 1e-20)
        level_db = 10.0 * np.log10(mean_square)
        target = np.clip((level_db - CLOSED_DBFS) / (OPEN_DBFS - CLOSED_DBFS), 0.0, 1.0)
        period = 1.0 / fps
        attack = 1.0 - math.exp(-period / ATTACK_S)
        release = 1.0 - math.exp(-period / RELEASE_S)
        envelope = np.empty(frames, dtype=np.float32)
        value = 0.0
        for index, goal in enumerate(target.tolist()):
            value += (goal - value) * (attack if goal > value else release)
            envelope[index] = value
        return envelope


class EspeakVoice:
    """An eSpeak NG voice: ``voice`` (e.g. ``"en-us"`` or ``"en-us+f3"``), speed and pitch.

    Construction only checks the numbers; an unknown voice name is reported by the first call
    that has something to say, since finding it out means loading the library.
    """

    def __init__(
        self,
        voice: str = "en-us",
        rate_wpm: int = 165,
        pitch: int = 50,
        *,
        max_duration_s: float = MAX_DURATION_S,
    ) -> None:
        if not math.isfinite(max_duration_s) or max_duration_s <= 0:
            raise VoiceError(f"max_duration_s must be positive, got {max_duration_s}")
        if not voice or not voice.isprintable():
            raise VoiceError(f"voice name must be a non-empty printable string, got {voice!r}")
        if not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
            raise VoiceError(
                f"speaking rate must be {MIN_RATE_WPM}-{MAX_RATE_WPM} words a minute, "
                f"got {rate_wpm}"
            )
        if not 0 <= pitch <= 100:
            raise VoiceError(f"pitch must be 0-100, got {pitch}")
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.pitch = pitch
        self.max_duration_s = max_duration_s

    def __repr__(self) -> str:
        return f"EspeakVoice({self.voice!r}, rate_wpm={self.rate_wpm}, pitch={self.pitch})"

    async def speak(self, text: str) -> Utterance:
        """``text`` spoken, synthesised in a worker thread (see :meth:`speak_sync`) unless the
        same voice has said the same words lately: those come from the process's cache."""
        key = (self.voice, self.rate_wpm, self.pitch, self.max_duration_s, text)
        return await SPOKEN.get_or_speak(key, lambda: self.speak_sync(text))

    def speak_sync(self, text: str) -> Utterance:
        """Synthesise ``text`` now, blocking: 48 kHz mono int16, padded with silence.

        Empty or blank text gives an empty utterance without touching the library. Speech past
        ``max_duration_s`` is not rendered: synthesis stops there.
        """
        if not text.strip():
            return Utterance(text, np.zeros(0, dtype=np.int16))
        with _LOCK:
            raw, rate = _ENGINE.synthesise(
                text, self.voice, self.rate_wpm, self.pitch, self.max_duration_s
            )
        lead_in = np.zeros(round(LEAD_IN_S * rate), dtype=np.int16)
        tail = np.zeros(round(TAIL_S * rate), dtype=np.int16)
        # Padding before resampling also keeps the resampler's input longer than its filter,
        # which it needs to produce any output at all.
        padded = np.concatenate((lead_in, raw, tail))
        return Utterance(text, _resample(padded, rate, SAMPLE_RATE))


class _Espeak:
    """The process's one eSpeak NG library: loaded on first use, then kept. Hold ``_LOCK``."""

    def __init__(self) -> None:
        self._lib: Any = None
        self._rate = 0
        self._chunks: list[npt.NDArray[np.int16]] = []
        self._collected = 0
        self._max_samples = 0
        # Kept on the instance for the process's life: the library calls it long after setup.
        self._callback = _SynthCallback(self._collect)

    def synthesise(
        self, text: str, voice: str, rate_wpm: int, pitch: int, max_duration_s: float
    ) -> tuple[npt.NDArray[np.int16], int]:
        """``text`` spoken by ``voice`` as int16 samples (at most ``max_duration_s`` of them),
        and their rate (22050 Hz)."""
        lib = self._load()
        self._max_samples = max(1, int(max_duration_s * self._rate))
        status = int(lib.espeak_SetVoiceByName(voice.encode()))
        if status == _EE_NOT_FOUND:
            raise VoiceError(f"eSpeak NG has no voice named {voice!r}")
        _check(status, f"selecting voice {voice!r}")
        _check(int(lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)), "setting the rate")
        _check(int(lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)), "setting the pitch")
        # A NUL would end the C string early and silently drop the rest of the text.
        data = text.replace("\0", " ").encode() + b"\0"
        self._chunks = []
        self._collected = 0
        try:
            status = int(
                lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            )
            _check(status, "synthesising speech")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        finally:
            self._chunks = []
        samples = samples[: self._max_samples]
        return samples.astype(np.int16, copy=False), self._rate

    def _collect(self, wav: Any, count: int, events: object) -> int:
        # NULL marks the end of the synthesis; returning 0 asks eSpeak to carry on, 1 to stop
        # (the utterance is as long as it may be).
        if wav and count > 0:
            self._chunks.append(np.frombuffer(ctypes.string_at(wav, count * 2), dtype=np.int16))
            self._collected += count
        return 1 if self._collected >= self._max_samples else 0

    def _load(self) -> Any:
        if self._lib is not None:
            return self._lib
        try:
            import espeakng_loader  # type: ignore[import-untyped]  # the dpkit[server] extra
        except ImportError as exc:
            raise VoiceError(
                "the persona's voice needs dpkit's 'server' extra: pip install 'dpkit[server]'"
            ) from exc
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = str(espeakng_loader.get_data_path())
        except (OSError, RuntimeError) as exc:
            raise VoiceError(f"cannot load eSpeak NG: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,  # text
            ctypes.c_size_t,  # size (unused in synchronous mode)
            ctypes.c_uint,  # position
            ctypes.c_int,  # position type
            ctypes.c_uint,  # end position (0: none)
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique identifier out
            ctypes.c_void_p,  # user data
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        rate = int(
            lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), _INITIALIZE_DONT_EXIT
            )
        )
        if rate <= 0:
            raise VoiceError(
                f"eSpeak NG did not initialise (error {rate}) with data at {data_path}"
            )
        lib.espeak_SetSynthCallback(self._callback)
        self._lib, self._rate = lib, rate
        return lib


def _check(status: int, doing: str) -> None:
    if status != _EE_OK:
        raise VoiceError(f"eSpeak NG failed {doing} (error {status})")


def _resample(
    samples: npt.NDArray[np.int16], from_rate: int, to_rate: int
) -> npt.NDArray[np.int16]:
    """Resample mono int16 with libswresample, which filters properly and compensates its delay,
    so the output is exactly ``len * to_rate / from_rate`` samples long and not shifted."""
    if from_rate == to_rate or samples.size == 0:
        return samples
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = from_rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    try:
        frames = [*resampler.resample(frame), *resampler.resample(None)]
    except (av.FFmpegError, ValueError) as exc:
        raise VoiceError(f"cannot resample speech from {from_rate} Hz: {exc}") from exc
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.asarray(out.to_ndarray()[0], dtype=np.int16) for out in frames])


_LOCK = threading.Lock()
_ENGINE = _Espeak()
#: What the process's one engine has said lately, shared by every session's voice.
SPOKEN = UtteranceCache()
