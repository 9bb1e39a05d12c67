"""What a session's listening costs: nothing until the user's audio arrives, and no more after.

Most sessions never send a microphone (load tests, kiosks): their listener must start no thread
and build no recognizer. The first audio starts both, without losing what arrives while the
recognizer loads; closing stops the thread. PocketSphinx's read-only language model is shared
by every session's recognizer, which must not let one session's audio reach another's results.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dpkit.server.conversation import Corpus
from dpkit.server.recognition.endpointing import Boundary, Endpointer
from dpkit.server.recognition.engine import Alternative, Recognizer
from dpkit.server.recognition.intents import corpus_phrases
from dpkit.server.recognition.listener import Listener, _Resampler, pcm_frames
from dpkit.server.recognition.sphinx import SharedModels, SphinxRecognizer
from tests.server.recognition.speech import silence, spoken

CORPUS_PATH = Path(__file__).parents[3] / "src/dpkit/personas/ava/corpus.json"
PHRASES = corpus_phrases(Corpus.from_json(json.loads(CORPUS_PATH.read_text())))


class Quiet:
    """A recognizer that hears nothing: the listener's threads without a model's cost."""

    def __init__(self) -> None:
        self.closed = False

    def start(self) -> None:
        pass

    def feed(self, pcm: npt.NDArray[np.int16]) -> None:
        pass

    def partial(self) -> str:
        return ""

    def finish(self) -> tuple[Alternative, ...]:
        return ()

    def close(self) -> None:
        self.closed = True


class Built:
    """A recognizer factory that records what it built, and can be held back (a slow load)."""

    def __init__(self) -> None:
        self.recognizers: list[Quiet] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> Recognizer:
        self.release.wait(10)
        recognizer = Quiet()
        self.recognizers.append(recognizer)
        return recognizer


async def _ignore(_: object) -> None:
    return None


def listener(built: Built, name: str) -> Listener:
    return Listener(
        built,
        on_speech_started=lambda: None,
        on_interim=_ignore,
        on_final=_ignore,
        on_failure=_ignore,
        name=name,
    )


def running(name: str) -> bool:
    return any(thread.name == name and thread.is_alive() for thread in threading.enumerate())


async def heard_s(listener: Listener, seconds: float) -> None:
    """Wait (bounded) until the worker has decoded ``seconds`` of audio, less resampler lag."""
    async with asyncio.timeout(10):
        while listener.stats.audio_s < seconds - 0.05:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_listener_without_audio_starts_no_thread_and_builds_no_recognizer() -> None:
    """Opened and closed with no audio: no thread ever, no recognizer built."""
    built = Built()
    before = threading.active_count()
    quiet = listener(built, "session no-audio")
    quiet.open()
    await asyncio.sleep(0.2)
    assert (threading.active_count(), running(quiet.thread_name)) == (before, False)
    assert not quiet.started
    await quiet.close()
    assert (threading.active_count(), running(quiet.thread_name)) == (before, False)
    assert built.recognizers == []


async def test_audio_while_recognition_is_off_starts_no_thread() -> None:
    """With recognition stopped, microphone frames start neither the thread nor a recognizer."""
    built = Built()
    off = listener(built, "session off")
    off.set_active(False)
    off.open()
    try:
        for frame in pcm_frames(silence(0.5), 48000):
            off.feed(frame)
        await asyncio.sleep(0.2)
        assert (off.started, running(off.thread_name), built.recognizers) == (False, False, [])
    finally:
        await off.close()


async def test_the_first_audio_starts_one_thread_and_closing_stops_it() -> None:
    """The first frame starts the worker and its one recognizer; close ends both."""
    built = Built()
    heard = listener(built, "session first-audio")
    heard.open()
    try:
        frames = pcm_frames(silence(1), 48000)
        heard.feed(frames[0])
        assert heard.started
        assert running(heard.thread_name)
        for frame in frames[1:]:
            heard.feed(frame)
            await asyncio.sleep(0)
        await heard_s(heard, 1.0)
        assert len(built.recognizers) == 1
    finally:
        await heard.close()
    assert not running(heard.thread_name)
    assert built.recognizers[0].closed
    heard.feed(frames[0])  # after close, audio starts nothing again
    assert not running(heard.thread_name)


async def test_audio_that_arrives_while_the_recognizer_loads_is_kept() -> None:
    """Frames fed while the recognizer is still being built are all decoded once it is."""
    built = Built()
    built.release.clear()
    slow = listener(built, "session slow-load")
    slow.open()
    try:
        for frame in pcm_frames(silence(1), 48000):  # 50 frames, within the queue's bound
            slow.feed(frame)
        await asyncio.sleep(0.2)
        assert (slow.stats.audio_s, built.recognizers) == (0.0, [])
        built.release.set()
        await heard_s(slow, 1.0)
    finally:
        await slow.close()
    assert slow.stats.dropped_frames == 0


def _decode(recognizers: list[SphinxRecognizer], tracks: list[npt.NDArray[np.int16]]) -> list[str]:
    """Each track through its own recognizer, frame by frame in turn: each one's finals."""
    endpointers = [Endpointer() for _ in tracks]
    resamplers = [_Resampler(48000) for _ in tracks]
    finals: list[list[str]] = [[] for _ in tracks]
    for start in range(0, max(len(track) for track in tracks), 960):
        for index, track in enumerate(tracks):
            pcm = resamplers[index].resample(track[start : start + 960])
            for step in endpointers[index].push(pcm):
                recognizer = recognizers[index]
                if step.boundary is Boundary.SILENCE:
                    continue
                if step.boundary is Boundary.STARTED:
                    recognizer.start()
                recognizer.feed(step.audio)
                if step.boundary is Boundary.ENDED:
                    finals[index].append(repr(recognizer.finish()))
    for recognizer in recognizers:
        recognizer.close()
    return [" | ".join(heard) for heard in finals]


def test_recognizers_sharing_the_language_model_hear_only_their_own_audio() -> None:
    """Two sessions decoding at once on the shared model give what each gives alone."""
    tracks = [
        np.concatenate((silence(0.3), spoken("what can you do"), silence(1))),
        np.concatenate((silence(0.6), spoken("see you", "en-gb-x-rp", 140), silence(1))),
    ]
    shared = SharedModels()
    alone = [_decode([SphinxRecognizer(PHRASES, shared=shared)], [track])[0] for track in tracks]
    together = _decode([SphinxRecognizer(PHRASES, shared=shared) for _ in tracks], tracks)
    assert together == alone
    assert all(alone)
