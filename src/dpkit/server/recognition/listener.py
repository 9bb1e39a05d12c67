"""One session's listening: microphone frames in, speech start, interim and final results out.

The session's audio drain calls :meth:`Listener.feed` on the event loop with each decoded frame of
the user's microphone; the frame is mixed to mono and queued, bounded, for one worker thread (a
full queue drops the frame and counts it: the worker is behind). The worker resamples to 16 kHz,
end-points, and runs the :class:`~dpkit.server.recognition.engine.Recognizer`. What it finds
comes back to the loop and goes out through the listener's callbacks, from one task of its own,
in order.

A session that never sends its microphone costs no thread and no recognizer: the worker starts
with the first frame that is to be heard, and builds the recognizer there (loading a model is
slow and blocking: 0.1-0.4 s for PocketSphinx). Audio that arrives meanwhile waits in the queue,
so the first words are decoded late, not lost.

Every change of what counts (recognition stopped or started, the persona speaking without
barge-in) starts a new *generation*: audio and results of an older one are discarded, so an
utterance cut by the persona's speech gives no final result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from dpkit.media.levels import audio_frame_to_mono
from dpkit.server.recognition.endpointing import HANGOVER_S, Boundary, Endpointer
from dpkit.server.recognition.engine import SAMPLE_RATE, Alternative, Recognizer
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server.recognition")

#: At most one interim result this often (seconds), and only when its text changed.
INTERIM_INTERVAL_S = 0.3
#: Alternatives below this confidence are not results: noise the engine guessed at.
NOTHING_HEARD = 0.05
#: How long the worker waits for audio before it looks whether it should stop (seconds).
_POLL_S = 0.1
_MIN_RATE, _MAX_RATE = 8000, 192000


@dataclass(frozen=True)
class _Audio:
    generation: int
    samples: npt.NDArray[np.int16]
    rate: int


@dataclass(frozen=True)
class _Started:
    generation: int


@dataclass(frozen=True)
class _Interim:
    generation: int
    text: str


@dataclass(frozen=True)
class _Final:
    generation: int
    alternatives: tuple[Alternative, ...]
    truncated: bool


@dataclass(frozen=True)
class _Failed:
    message: str


_Event = _Started | _Interim | _Final | _Failed


@dataclass
class ListenerStats:
    """What the listener did, for tests, logs and the benchmark."""

    utterances: int = 0
    finals: int = 0
    interims: int = 0
    dropped_frames: int = 0
    audio_s: float = 0.0
    decode_s: float = 0.0

    @property
    def real_time_factor(self) -> float:
        """Seconds of decoding per second of audio heard (0: none yet)."""
        return self.decode_s / self.audio_s if self.audio_s else 0.0


class Listener:
    """Hears one session's microphone while active, in one worker thread."""

    def __init__(
        self,
        recognizer: Callable[[], Recognizer],
        *,
        on_speech_started: Callable[[], None],
        on_interim: Callable[[str], Awaitable[None]],
        on_final: Callable[[tuple[Alternative, ...]], Awaitable[None]],
        on_failure: Callable[[str], Awaitable[None]],
        speaking: Callable[[], bool] = lambda: False,
        barge_in: bool = False,
        max_utterance_s: float = 15.0,
        hangover_s: float = HANGOVER_S,
        max_queued_s: float = 2.0,
        active: bool = True,
        name: str = "listener",
    ) -> None:
        self._recognizer_factory = recognizer
        self._on_speech_started = on_speech_started
        self._on_interim = on_interim
        self._on_final = on_final
        self._on_failure = on_failure
        self._speaking = speaking
        self._barge_in = barge_in
        self._endpointer = Endpointer(hangover_s=hangover_s, max_utterance_s=max_utterance_s)
        # Frames are 10-20 ms; bound by count for 10 ms frames, the shortest WebRTC sends.
        self._audio: queue.Queue[_Audio] = queue.Queue(maxsize=max(1, round(max_queued_s / 0.01)))
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._stopping = threading.Event()
        self._tasks = TaskOwner(name)
        self._name = name
        #: Done when the worker thread has ended (set from the thread, through the loop);
        #: None until the first audio to hear starts it.
        self._worker: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._active = active
        self._gated = False
        self.failed = False
        self.stats = ListenerStats()

    # --- on the event loop ------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether recognition is on (results are sent)."""
        return self._active and not self.failed

    def set_active(self, active: bool) -> None:
        """Turn recognition on or off; an utterance under way is dropped either way."""
        if active != self._active:
            self._active = active
            self._generation += 1

    @property
    def thread_name(self) -> str:
        """The name of the worker thread, once the first audio has started it."""
        return f"dpkit-{self._name}"

    @property
    def started(self) -> bool:
        """Whether the worker thread has been started (by the first audio to hear)."""
        return self._worker is not None

    def open(self) -> None:
        """Start the task that passes results on; the worker waits for the first audio."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._tasks.spawn(self._dispatch(), "results")

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        self._worker = loop.create_future()
        # A thread of its own, not the loop's default executor: that has only a few threads
        # (min(32, cores + 4)), which the persona's speech synthesis and file reads need, and a
        # listener keeps its thread for the rest of the session.
        self._thread = threading.Thread(target=self._run_worker, name=self.thread_name, daemon=True)
        self._thread.start()

    def feed(self, frame: av.AudioFrame) -> None:
        """One decoded frame of the user's microphone (called by the audio drain)."""
        loop = self._loop
        if not self.active or loop is None or self._stopping.is_set():
            return
        if self._speaking() and not self._barge_in:
            if not self._gated:
                self._gated = True
                self._generation += 1  # what was said before the persona spoke is cut
            return
        self._gated = False
        rate = int(frame.sample_rate or 0)
        if not _MIN_RATE <= rate <= _MAX_RATE:
            self.stats.dropped_frames += 1
            return
        if self._worker is None:
            self._start_worker(loop)
        try:
            self._audio.put_nowait(_Audio(self._generation, audio_frame_to_mono(frame), rate))
        except queue.Full:
            self.stats.dropped_frames += 1
            if self.stats.dropped_frames in (1, 100, 10000):
                logger.info(
                    "%s: the recognizer is behind, %d frames dropped",
                    self._name,
                    self.stats.dropped_frames,
                )

    async def close(self) -> None:
        """Stop the worker and the results task; wait for both. Idempotent."""
        self._stopping.set()
        if self._worker is not None and not self._worker.done():
            await asyncio.wait([self._worker], timeout=5.0)
        if self._thread is not None and self._worker is not None and self._worker.done():
            # The thread resolved the future as its last act: it is returning now.
            self._thread.join(timeout=0.5)
        await self._tasks.close()

    def _post(self, event: _Event) -> None:
        """From the worker: hand ``event`` to the loop (nothing if the loop is gone)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: the session is over
            loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def _dispatch(self) -> None:
        while True:
            event = await self._events.get()
            if isinstance(event, _Failed):
                if not self.failed:
                    self.failed = True
                    logger.warning("%s: speech recognition stopped: %s", self._name, event.message)
                    await self._guarded(self._on_failure(event.message), "reporting a failure")
                return
            if event.generation != self._generation or not self.active:
                continue
            if isinstance(event, _Started):
                self._on_speech_started()
            elif isinstance(event, _Interim):
                self.stats.interims += 1
                await self._guarded(self._on_interim(event.text), "an interim result")
            else:
                heard = tuple(a for a in event.alternatives if a.confidence >= NOTHING_HEARD)
                if heard and heard[0].transcript:
                    self.stats.finals += 1
                    await self._guarded(self._on_final(heard), "a final result")

    async def _guarded(self, work: Awaitable[None], what: str) -> None:
        # A failure to deliver one result must not stop listening for the next.
        try:
            await work
        except Exception as exc:
            logger.warning("%s: %s failed: %s: %s", self._name, what, type(exc).__name__, exc)

    # --- in the worker thread ---------------------------------------------------------------

    def _run_worker(self) -> None:
        try:
            self._work()
        finally:
            loop, done = self._loop, self._worker
            if loop is not None and done is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(_resolve, done)

    def _work(self) -> None:
        recognizer: Recognizer | None = None
        resampler: _Resampler | None = None
        generation = -1
        in_utterance = False
        last_interim = 0.0
        last_text = ""
        try:
            while not self._stopping.is_set():
                try:
                    item = self._audio.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if recognizer is None:
                    recognizer = self._recognizer_factory()
                if resampler is None or resampler.rate != item.rate:
                    resampler = _Resampler(item.rate)
                started = time.perf_counter()
                if item.generation != generation:
                    generation = item.generation
                    if in_utterance:
                        recognizer.finish()  # cut: its result is of no use now
                        in_utterance = False
                    self._endpointer.reset()
                pcm = resampler.resample(item.samples)
                self.stats.audio_s += len(pcm) / SAMPLE_RATE
                for step in self._endpointer.push(pcm):
                    if step.boundary is Boundary.SILENCE:
                        continue
                    if step.boundary is Boundary.STARTED:
                        recognizer.start()
                        in_utterance, last_text = True, ""
                        last_interim = time.monotonic()
                        self.stats.utterances += 1
                        self._post(_Started(generation))
                    recognizer.feed(step.audio)
                    if step.boundary is Boundary.ENDED:
                        in_utterance = False
                        self._post(_Final(generation, recognizer.finish(), step.truncated))
                    elif time.monotonic() - last_interim >= INTERIM_INTERVAL_S:
                        last_interim = time.monotonic()
                        text = recognizer.partial()
                        if text and text != last_text:
                            last_text = text
                            self._post(_Interim(generation, text))
                self.stats.decode_s += time.perf_counter() - started
        except Exception as exc:  # the engine's, whatever they are: reported once, then quiet
            self._post(_Failed(f"{type(exc).__name__}: {exc}"))
        finally:
            if recognizer is not None:
                recognizer.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Resampler:
    """Mono int16 at ``rate`` to 16 kHz, keeping the filter's state across frames."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def resample(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if self.rate == SAMPLE_RATE or not len(samples):
            return samples
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        out = self._resampler.resample(frame)
        if not out:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([np.asarray(f.to_ndarray()[0], dtype=np.int16) for f in out])


def pcm_frames(
    samples: npt.NDArray[np.int16], rate: int, frame_s: float = 0.02
) -> Sequence[av.AudioFrame]:
    """``samples`` as the decoded frames a microphone track gives (for tests and benchmarks)."""
    size = max(1, round(rate * frame_s))
    frames = []
    for start in range(0, len(samples), size):
        chunk = np.ascontiguousarray(samples[start : start + size]).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate = rate
        frames.append(frame)
    return frames
