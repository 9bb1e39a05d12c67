"""Speech recognition: intent accuracy, word error rate, real-time factor and answer latency.

Run with ``python benchmarks/recognition.py [--mode session|offline|both] [--limit N]``. It prints
a table and whether the targets were met, and asserts nothing (the exit status is always 0).

The speech: every pattern of the built-in corpus (Ava's, 13 in 4 intents), spoken by three eSpeak
NG voices that are not the persona's (``en-us+f3``) at two rates, clean and with pink noise mixed
in at 20 dB SNR (relative to the RMS of the speech itself, over the whole file, gaps included).
One file per voice/rate/noise combination holds all its phrases, separated by silence (room
noise, for the noisy files).

``session`` mode goes through the real session path: an in-process ``DpkitServer`` on 127.0.0.1
(the test settings, the greeting off) and a ``dpkit.Scene`` whose microphone is the file
(``MediaFileDevices(wav, loop=False)``). The file's audio track is wrapped to record when each of
its frames is handed to the peer connection, so the moment a phrase's speech ends is the time the
frame holding that end offset was sent. From there it measures until the first persona audio
frame above room tone reaches the client (``scene.audio_frames()``, RMS over -45 dBFS); the
phrase's transcript is the ``recognizeResults`` final that arrives in its window
(``scene.on_recognize_results``), its intent the ``conversationResult`` that follows
(``Persona.on_conversation_result``). Barge-in is off, so the silence after each phrase
(``--gap``, 8 s by default) leaves room for the persona's longest answer (about 5 s) to end
before the next phrase: speech while the persona speaks is not heard. Three sessions run at once
(``--parallel``), each a combination; all twelve take about ten minutes.

``offline`` mode feeds the same files straight to the recognizer, through the listener's own
end-pointing and resampling, as fast as it decodes (a few seconds in all): it is the loop used
to tune recognition, and gives the same accuracy figures without the session's latency.

Word error rate is the word-level edit distance from the pattern, over the pattern's word count,
summed over every phrase (a phrase with no final result counts all its words as deleted).
The real-time factor is the listener's decoding time over the audio it heard (one core).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from dpkit import Persona, Scene
from dpkit.client.devices import UserMedia
from dpkit.client.options import MediaDevices
from dpkit.media.files import MediaFileDevices
from dpkit.media.levels import rms_dbfs
from dpkit.server import DpkitServer, PersonaSettings, Settings
from dpkit.server.conversation import FALLBACK_INTENT, Corpus
from dpkit.server.persona_media.voice import SAMPLE_RATE, EspeakVoice
from dpkit.server.recognition.endpointing import Boundary, Endpointer
from dpkit.server.recognition.engine import Alternative, new_recognizer
from dpkit.server.recognition.intents import corpus_phrases, decide
from dpkit.server.recognition.listener import _Resampler

CORPUS_PATH = Path(__file__).parents[1] / "src/dpkit/personas/ava/corpus.json"
VOICES = ("en-us-nyc", "en-gb-x-rp", "en-gb-scotland")
RATES = (140, 180)
SNR_DB = 20.0
LEAD_S = 1.5
#: Persona audio louder than this is speech (its room tone is far below).
SPEECH_DBFS = -45.0
ACCURACY_TARGET = 0.90
LATENCY_TARGET_MS = 700.0


@dataclass(frozen=True)
class Phrase:
    text: str
    intent: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Track:
    voice: str
    rate: int
    noisy: bool
    samples: npt.NDArray[np.int16]
    phrases: tuple[Phrase, ...]

    @property
    def label(self) -> str:
        return f"{self.voice}@{self.rate}{' +noise' if self.noisy else ''}"


@dataclass
class Outcome:
    phrase: Phrase
    transcript: str = ""
    intent: str = FALLBACK_INTENT
    latency_ms: float | None = None


@dataclass
class Run:
    track: Track
    outcomes: list[Outcome] = field(default_factory=list)
    real_time_factor: float = 0.0


def _trimmed(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """``samples`` without eSpeak's leading and trailing silence (10 ms windows under -55 dBFS)."""
    window = SAMPLE_RATE // 100
    loud = [
        index
        for index in range(0, len(samples) - window, window)
        if rms_dbfs(samples[index : index + window]) > -55.0
    ]
    if not loud:
        return samples
    return samples[loud[0] : loud[-1] + window]


def pink_noise(size: int, seed: int) -> npt.NDArray[np.float64]:
    """Unit-RMS pink (1/f) noise: white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).normal(size=size))
    scale = np.ones(len(spectrum))
    scale[1:] = 1.0 / np.sqrt(np.arange(1, len(spectrum)))
    scale[0] = 0.0
    shaped = np.fft.irfft(spectrum * scale, n=size)
    return np.asarray(shaped / np.sqrt(np.mean(shaped**2)), dtype=np.float64)


def make_track(
    corpus: Corpus, voice: str, rate: int, noisy: bool, gap_s: float, limit: int | None
) -> Track:
    """All of ``corpus``'s patterns spoken by ``voice`` at ``rate``, ``gap_s`` apart."""
    speaker = EspeakVoice(voice, rate, 50)
    pieces = [np.zeros(round(LEAD_S * SAMPLE_RATE), dtype=np.int16)]
    spoken: list[npt.NDArray[np.int16]] = []
    phrases: list[Phrase] = []
    offset = LEAD_S
    patterns = [(p, intent.name) for intent in corpus.intents for p in intent.patterns]
    for text, intent in patterns[:limit]:
        speech = _trimmed(np.asarray(speaker.speak_sync(text).samples, dtype=np.int16))
        length = len(speech) / SAMPLE_RATE
        phrases.append(Phrase(text, intent, offset, offset + length))
        spoken.append(speech)
        pieces += [speech, np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.int16)]
        offset += length + gap_s
    mixed = np.concatenate(pieces).astype(np.float64)
    if noisy:
        speech_rms = float(np.sqrt(np.mean(np.concatenate(spoken).astype(np.float64) ** 2)))
        seed = zlib.crc32(f"{voice}@{rate}".encode())  # the same noise on every run
        mixed += pink_noise(len(mixed), seed) * speech_rms / 10 ** (SNR_DB / 20)
    samples = np.clip(np.round(mixed), -32768, 32767).astype(np.int16)
    return Track(voice, rate, noisy, samples, tuple(phrases))


def write_wav(path: Path, samples: npt.NDArray[np.int16]) -> Path:
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return path


def _window(phrases: Sequence[Phrase], offset_s: float) -> int | None:
    """The phrase whose window (its start to the next one's start) holds ``offset_s``."""
    starts = [phrase.start_s for phrase in phrases]
    index = bisect.bisect_right(starts, offset_s) - 1
    return index if index >= 0 else None


# --- offline: the listener's pipeline, synchronously -----------------------------------------


def run_offline(track: Track, corpus: Corpus, threshold: float) -> Run:
    """Decode ``track`` with the listener's resampler, end-pointer and recognizer, no threads."""
    recognizer = new_recognizer("pocketsphinx", corpus_phrases(corpus))
    endpointer = Endpointer()
    resampler = _Resampler(SAMPLE_RATE)
    run = Run(track, [Outcome(phrase) for phrase in track.phrases])
    frame = SAMPLE_RATE // 50
    heard_s = decode_s = 0.0
    started_at = 0.0
    for start in range(0, len(track.samples), frame):
        began = time.perf_counter()
        pcm = resampler.resample(track.samples[start : start + frame])
        heard_s += len(pcm) / 16000
        for step in endpointer.push(pcm):
            if step.boundary is Boundary.SILENCE:
                continue
            if step.boundary is Boundary.STARTED:
                recognizer.start()
                started_at = (start + frame) / SAMPLE_RATE
            recognizer.feed(step.audio)
            if step.boundary is Boundary.ENDED:
                alternatives = tuple(a for a in recognizer.finish() if a.confidence >= 0.05)
                _record(run, corpus, threshold, started_at, alternatives)
        decode_s += time.perf_counter() - began
    recognizer.close()
    run.real_time_factor = decode_s / heard_s if heard_s else 0.0
    return run


def _record(
    run: Run,
    corpus: Corpus,
    threshold: float,
    offset_s: float,
    alternatives: tuple[Alternative, ...],
) -> None:
    if not alternatives or not alternatives[0].transcript:
        return
    index = _window(run.track.phrases, offset_s)
    if index is None:
        return
    outcome = run.outcomes[index]
    decision = decide(alternatives, corpus, threshold)
    if outcome.transcript:  # a second utterance in one window: keep both words, the worse intent
        outcome.transcript += " " + decision.transcript
        if decision.intent != outcome.phrase.intent:
            outcome.intent = decision.intent
        return
    outcome.transcript, outcome.intent = decision.transcript, decision.intent


# --- session: the real server and client ---------------------------------------------------


class _TimedFileDevices(MediaFileDevices):
    """A file microphone that notes when each of its frames goes to the peer connection."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, loop=False)
        self.sent: list[tuple[float, float]] = []  # (the frame's end offset in the file, when)

    async def open(self, devices: MediaDevices) -> UserMedia:
        media = await super().open(devices)
        track = media.microphone
        if track is not None:
            recv = track.recv

            async def timed_recv() -> Any:
                frame = await recv()
                if isinstance(frame, av.AudioFrame) and frame.pts is not None:
                    assert frame.time_base is not None
                    end = float(frame.pts * frame.time_base) + frame.samples / frame.sample_rate
                    self.sent.append((end, time.monotonic()))
                return frame

            track.recv = timed_recv  # type: ignore[method-assign]
        return media

    def sent_at(self, offset_s: float) -> float | None:
        """When the frame holding ``offset_s`` of the file was handed on (None: not yet)."""
        ends = [end for end, _ in self.sent]
        index = bisect.bisect_left(ends, offset_s)
        return self.sent[index][1] if index < len(self.sent) else None


async def run_session(server: DpkitServer, track: Track, folder: Path) -> Run:
    """Play ``track`` as the microphone of one session; what the client saw of each phrase."""
    devices = _TimedFileDevices(write_wav(folder / f"{track.label}.wav", track.samples))
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=devices,
    )
    persona = Persona(scene, "1")
    finals: list[tuple[float, str]] = []
    intents: list[tuple[float, str]] = []
    loud: list[float] = []

    def on_results(_: Scene, status: int, __: str, results: Sequence[Any]) -> None:
        for result in results:
            if status == 0 and result.final and result.transcript:
                finals.append((time.monotonic(), result.transcript))

    def on_result(_: Persona, body: dict[str, Any]) -> None:
        intent = body.get("output", {}).get("context", {}).get("intent", "")
        intents.append((time.monotonic(), str(intent)))

    scene.on_recognize_results.add_listener(on_results)
    persona.on_conversation_result.add_listener(on_result)
    run = Run(track, [Outcome(phrase) for phrase in track.phrases])
    duration = len(track.samples) / SAMPLE_RATE
    async with scene:
        await scene.connect(connect_timeout=30)

        async def listen() -> None:
            async for frame in scene.audio_frames(buffer=500):
                if rms_dbfs(frame.to_ndarray()) > SPEECH_DBFS:
                    loud.append(time.monotonic())

        listening = asyncio.ensure_future(listen())
        try:
            while devices.sent_at(duration - 0.05) is None:  # noqa: ASYNC110 - the file's pace
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
        session = next(iter(server.state.sessions.values()), None)
        listening_state = getattr(session, "_listening", None)
        if listening_state is not None:
            run.real_time_factor = listening_state.listener.stats.real_time_factor
    # Times to file offsets: the sender's clock, frame by frame.
    origin = statistics.median(when - end for end, when in devices.sent)
    for when, transcript in finals:
        index = _window(track.phrases, when - origin - 0.3)
        if index is not None and not run.outcomes[index].transcript:
            run.outcomes[index].transcript = transcript
    for when, intent in intents:
        index = _window(track.phrases, when - origin - 0.3)
        if index is not None and run.outcomes[index].intent == FALLBACK_INTENT:
            run.outcomes[index].intent = intent
    for index, outcome in enumerate(run.outcomes):
        ended = devices.sent_at(outcome.phrase.end_s)
        following = track.phrases[index + 1].start_s if index + 1 < len(track.phrases) else None
        if ended is None:
            continue
        limit = ended + ((following - outcome.phrase.end_s) if following else 10.0)
        first = next((t for t in loud if ended <= t < limit), None)
        if first is not None:
            outcome.latency_ms = (first - ended) * 1000
    return run


async def run_sessions(tracks: Sequence[Track], parallel: int) -> list[Run]:
    with tempfile.TemporaryDirectory(prefix="dpkit-recognition-") as folder:
        settings = Settings(
            host="127.0.0.1",
            port=0,
            data_dir=Path(folder) / "data",
            capacity=parallel,
            ice_addresses=("127.0.0.1",),
            persona=PersonaSettings(
                video_width=160, video_height=120, video_fps=10, greet_at_start=False
            ),
            offer_timeout_s=30,
            connect_timeout_s=30,
        )
        runs: list[Run] = []
        async with DpkitServer(settings) as server:
            queue = list(tracks)

            async def worker() -> None:
                while queue:
                    track = queue.pop(0)
                    started = time.monotonic()
                    run = await run_session(server, track, Path(folder))
                    runs.append(run)
                    print(f"  {track.label}: {time.monotonic() - started:.0f} s", flush=True)
                    await asyncio.sleep(0.5)  # the server frees the person

            await asyncio.gather(*(worker() for _ in range(parallel)))
        order = {track.label: index for index, track in enumerate(tracks)}
        return sorted(runs, key=lambda run: order[run.track.label])


# --- figures ------------------------------------------------------------------------------


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word-level Levenshtein distance."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Figures:
    phrases: int
    correct: int
    errors: int
    words: int
    rtf: float
    latencies: list[float]

    @property
    def accuracy(self) -> float:
        return self.correct / self.phrases if self.phrases else 0.0

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0


def figures(runs: Sequence[Run]) -> Figures:
    outcomes = [outcome for run in runs for outcome in run.outcomes]
    return Figures(
        phrases=len(outcomes),
        correct=sum(outcome.intent == outcome.phrase.intent for outcome in outcomes),
        errors=sum(
            word_errors(outcome.phrase.text.split(), outcome.transcript.split())
            for outcome in outcomes
        ),
        words=sum(len(outcome.phrase.text.split()) for outcome in outcomes),
        rtf=max((run.real_time_factor for run in runs), default=0.0),
        latencies=[o.latency_ms for o in outcomes if o.latency_ms is not None],
    )


def report(title: str, runs: Sequence[Run], verbose: bool) -> None:
    print(f"\n{title}")
    print(f"{'combination':<28}{'intent acc':>11}{'WER':>8}{'RTF':>7}{'p50 ms':>9}{'p95 ms':>9}")
    groups: list[tuple[str, list[Run]]] = [(run.track.label, [run]) for run in runs]
    groups += [
        ("all clean", [run for run in runs if not run.track.noisy]),
        ("all +noise (20 dB SNR)", [run for run in runs if run.track.noisy]),
        ("all", list(runs)),
    ]
    for label, group in groups:
        if not group:
            continue
        got = figures(group)
        p50 = f"{_percentile(got.latencies, 0.5):.0f}" if got.latencies else "-"
        p95 = f"{_percentile(got.latencies, 0.95):.0f}" if got.latencies else "-"
        print(
            f"{label:<28}{got.accuracy:>10.1%}{got.wer:>8.1%}{got.rtf:>7.3f}{p50:>9}{p95:>9}"
            f"  ({got.correct}/{got.phrases})"
        )
    if verbose:
        for run in runs:
            for outcome in run.outcomes:
                if outcome.intent != outcome.phrase.intent:
                    print(
                        f"  miss {run.track.label}: {outcome.phrase.text!r} -> "
                        f"{outcome.transcript!r} {outcome.intent}"
                    )
    got = figures(runs)
    print(f"target: intent accuracy >= {ACCURACY_TARGET:.0%}: {got.accuracy:.1%}", end=" ")
    print("met" if got.accuracy >= ACCURACY_TARGET else "NOT met")
    if got.latencies:
        median = _percentile(got.latencies, 0.5)
        print(
            f"target: end of speech -> first persona audio <= {LATENCY_TARGET_MS:.0f} ms p50:",
            end=" ",
        )
        print(f"{median:.0f} ms", "met" if median <= LATENCY_TARGET_MS else "NOT met")
        missing = got.phrases - len(got.latencies)
        if missing:
            print(f"  ({missing} phrases had no persona audio in their window)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mode", choices=("session", "offline", "both"), default="both")
    parser.add_argument("--limit", type=int, default=None, help="phrases per combination")
    parser.add_argument("--voices", type=int, default=len(VOICES), help="how many voices")
    parser.add_argument("--gap", type=float, default=8.0, help="silence after a phrase (s)")
    parser.add_argument("--parallel", type=int, default=3, help="sessions at once")
    parser.add_argument("--verbose", action="store_true", help="list every missed phrase")
    options = parser.parse_args(argv)
    corpus = Corpus.from_json(json.loads(CORPUS_PATH.read_text()))
    threshold = PersonaSettings().recognition_threshold
    combos = [
        (voice, rate, noisy)
        for noisy in (False, True)
        for voice in VOICES[: options.voices]
        for rate in RATES
    ]
    print(f"Python {sys.version.split()[0]}; {len(combos)} combinations", flush=True)
    if options.mode in ("offline", "both"):
        tracks = [make_track(corpus, v, r, n, 2.0, options.limit) for v, r, n in combos]
        runs = [run_offline(track, corpus, threshold) for track in tracks]
        report("offline (the listener's pipeline, no session)", runs, options.verbose)
    if options.mode in ("session", "both"):
        tracks = [make_track(corpus, v, r, n, options.gap, options.limit) for v, r, n in combos]
        runs = asyncio.run(run_sessions(tracks, max(1, options.parallel)))
        report("session (server + Scene on loopback, file microphone)", runs, options.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
