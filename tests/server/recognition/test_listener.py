"""The recognizer and the listener on real eSpeak NG speech: transcripts, intents, no ghosts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from dpkit.server.conversation import FALLBACK_INTENT, Corpus
from dpkit.server.recognition.endpointing import Boundary, Endpointer
from dpkit.server.recognition.engine import Alternative, RecognizerError, new_recognizer
from dpkit.server.recognition.intents import corpus_phrases, decide
from dpkit.server.recognition.listener import Listener, pcm_frames
from dpkit.server.settings import PersonaSettings
from tests.server.recognition.speech import noise, silence, spoken

CORPUS_PATH = Path(__file__).parents[3] / "src/dpkit/personas/ava/corpus.json"
CORPUS = Corpus.from_json(json.loads(CORPUS_PATH.read_text()))


class Heard:
    """A listener over the Ava corpus, with everything it reported."""

    def __init__(self) -> None:
        self.started = 0
        self.interims: list[str] = []
        self.finals: list[tuple[Alternative, ...]] = []
        self.failures: list[str] = []
        phrases = corpus_phrases(CORPUS)
        self.listener = Listener(
            lambda: new_recognizer("pocketsphinx", phrases),
            on_speech_started=self._started,
            on_interim=self._interim,
            on_final=self._final,
            on_failure=self._failure,
        )

    def _started(self) -> None:
        self.started += 1

    async def _interim(self, text: str) -> None:
        self.interims.append(text)

    async def _final(self, alternatives: tuple[Alternative, ...]) -> None:
        self.finals.append(alternatives)

    async def _failure(self, message: str) -> None:
        self.failures.append(message)

    async def hear(self, samples: npt.NDArray[np.int16]) -> None:
        """Feed ``samples`` as 20 ms microphone frames, then wait until all is decoded."""
        for frame in pcm_frames(samples, 48000):
            self.listener.feed(frame)
            await asyncio.sleep(0)  # as frames arrive: the bounded queue never overflows
        while self.listener.stats.audio_s < len(samples) / 48000 - 0.05:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # results are passed on by a task of the loop's


@pytest.mark.parametrize(
    ("phrase", "voice", "rate", "intent", "words"),
    [
        ("what can you do", "en-us-nyc", 180, "HELP", {"what", "can", "you", "do"}),
        ("see you", "en-us-nyc", 180, "GOODBYE", {"see", "you"}),
        ("what can you do", "en-gb-x-rp", 140, "HELP", {"what", "can", "you", "do"}),
        ("see you", "en-gb-x-rp", 140, "GOODBYE", {"see", "you"}),
        ("hello", "en-us-nyc", 180, "GREETING", {"hello"}),
        ("your name", "en-gb-scotland", 180, "NAME", {"your", "name"}),
    ],
)
async def test_a_spoken_corpus_phrase_gives_one_final_result_with_its_intent(
    phrase: str, voice: str, rate: int, intent: str, words: set[str]
) -> None:
    """Speech of a corpus phrase: interims maybe, exactly one final, its words, its intent."""
    heard = Heard()
    heard.listener.open()
    try:
        await heard.hear(np.concatenate((silence(0.5), spoken(phrase, voice, rate), silence(1))))
    finally:
        await heard.listener.close()
    assert heard.started == 1
    assert len(heard.finals) == 1
    best = heard.finals[0][0]
    assert words <= set(best.transcript.split())
    assert decide(heard.finals[0], CORPUS, PersonaSettings().recognition_threshold).intent == intent
    assert heard.failures == []
    assert heard.listener.stats.real_time_factor < 1.0


@pytest.mark.parametrize(
    "sentence", ["please open the door", "i like pizza", "where is the train station"]
)
async def test_speech_out_of_the_corpus_is_fallback(sentence: str) -> None:
    """A sentence no pattern holds gives a final result whose intent is FALLBACK."""
    heard = Heard()
    heard.listener.open()
    try:
        await heard.hear(
            np.concatenate((silence(0.5), spoken(sentence, "en-us-nyc", 160), silence(1)))
        )
    finally:
        await heard.listener.close()
    assert len(heard.finals) == 1
    threshold = PersonaSettings().recognition_threshold
    assert decide(heard.finals[0], CORPUS, threshold).intent == FALLBACK_INTENT


async def test_silence_and_steady_noise_give_no_result() -> None:
    """Digital silence, then white noise at -30 dBFS from the start: nothing is heard."""
    for samples in (silence(3), noise(3)):
        heard = Heard()
        heard.listener.open()
        try:
            await heard.hear(samples)
        finally:
            await heard.listener.close()
        assert (heard.started, heard.interims, heard.finals) == (0, [], [])


async def test_stopped_recognition_hears_nothing() -> None:
    """With the listener off, speech gives no start and no result."""
    heard = Heard()
    heard.listener.set_active(False)
    heard.listener.open()
    try:
        for frame in pcm_frames(np.concatenate((spoken("see you"), silence(1))), 48000):
            heard.listener.feed(frame)
        await asyncio.sleep(0.5)
    finally:
        await heard.listener.close()
    assert (heard.started, heard.finals, heard.listener.stats.audio_s) == (0, [], 0.0)


async def test_an_unknown_engine_fails_once_and_listening_stops() -> None:
    """An engine that cannot be built is reported once; later audio is ignored."""
    failures: list[str] = []

    async def failed(message: str) -> None:
        failures.append(message)

    async def ignore(_: object) -> None:
        return None

    listener = Listener(
        lambda: new_recognizer("nosuchengine", ()),
        on_speech_started=lambda: None,
        on_interim=ignore,
        on_final=ignore,
        on_failure=failed,
    )
    listener.open()
    try:
        for frame in pcm_frames(spoken("hello"), 48000):
            listener.feed(frame)
        async with asyncio.timeout(10):
            while not listener.failed:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        for frame in pcm_frames(spoken("hello"), 48000):
            listener.feed(frame)
    finally:
        await listener.close()
    assert len(failures) == 1
    assert "nosuchengine" in failures[0]
    assert not listener.active


def test_unknown_engine_is_a_named_error() -> None:
    """new_recognizer names the engine it does not know."""
    with pytest.raises(RecognizerError, match="no speech recognition engine named"):
        new_recognizer("x" * 1000, ())


def test_below_the_threshold_the_intent_is_fallback() -> None:
    """A best alternative under the threshold is FALLBACK even when its text matches."""
    alternatives = (Alternative("see you", 0.4),)
    assert decide(alternatives, CORPUS, 0.5).intent == FALLBACK_INTENT
    assert decide(alternatives, CORPUS, 0.3).intent == "GOODBYE"
    assert decide((), CORPUS, 0.5).intent == FALLBACK_INTENT


def test_the_endpointer_cuts_an_utterance_at_its_longest() -> None:
    """Speech longer than max_utterance_s ends there, truncated, and a new one starts."""
    endpointer = Endpointer(hangover_s=0.5, max_utterance_s=1.0)
    tone = (np.sin(np.arange(16000 * 3) * 0.1) * 8000).astype(np.int16)
    steps = endpointer.push(np.concatenate((np.zeros(1600, np.int16), tone)))
    boundaries = [step.boundary for step in steps if step.boundary is not Boundary.SPEECH]
    ends = [step for step in steps if step.boundary is Boundary.ENDED]
    assert boundaries[:1] == [Boundary.SILENCE]
    assert Boundary.STARTED in boundaries
    assert ends
    assert ends[0].truncated
