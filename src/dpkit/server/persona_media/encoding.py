"""Where the persona's frames are drawn and encoded: worker threads, or a process of their own.

A :class:`~dpkit.server.persona_media.broadcast.PersonaBroadcast` hands each frame slot's work
to an :class:`EncodingBackend` as small requests: "encoder 7 (VP8): the face in this pose at
this pts, as a keyframe", "encoder 9 (Opus): these 960 samples". Encoders are named by number;
the backend makes one on first use and forgets it when told it is released.

* :class:`ThreadedEncoding` draws on the event loop (the renderer's cache is there) and encodes
  in worker threads. PyAV releases the GIL while it encodes, but each call still takes and gives
  back the GIL around it, and with a hundred sessions the event loop, which gives up the GIL at
  every ``sendto``, kept losing it to them: audio slots fell behind.
* :class:`ProcessEncoding` does both in a process of its own (from a ``multiprocessing`` fork
  server), with
  its own renderer of the same look (the face is deterministic in its seed, so it draws exactly
  what the server would). Only poses, samples and encoded payloads cross the pipes: a few
  kilobytes a slot. Video and audio each have a pipe and a thread in the worker, so a slot of
  audio never waits behind a slot of video. A worker that dies is started again, and every
  encoder starts again on a keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from dpkit.server.persona_media.encoders import AudioEncoder, VideoEncoder
from dpkit.server.persona_media.face import FacePose, FaceRenderer

logger = logging.getLogger("dpkit.server.encoding")

START_TIMEOUT_S = 30.0
"""How long a worker process may take to start (it imports PyAV and numpy)."""
STOP_TIMEOUT_S = 5.0

#: Draws the YUV 4:2:0 picture of a pose.
Picture = Callable[[FacePose], npt.NDArray[np.uint8]]


class EncodingFailed(Exception):
    """The backend could not encode a slot (its worker died, or an encoder failed)."""


@dataclass(frozen=True)
class VideoRequest:
    """Encoder ``encoder`` (of ``codec``) is to encode the face in ``pose``."""

    encoder: int
    codec: str
    pose: FacePose
    keyframe: bool


@dataclass(frozen=True)
class AudioRequest:
    """Encoder ``encoder`` is to encode ``samples`` (20 ms, mono int16)."""

    encoder: int
    samples: bytes


@dataclass(frozen=True)
class Encoded:
    """What an encoder made of one frame: its payloads, and whether it is a keyframe."""

    encoder: int
    payloads: tuple[bytes, ...]
    keyframe: bool


class EncodingBackend(Protocol):
    #: Worker processes started so far: more than one means a worker died and was replaced.
    starts: int

    async def start(self) -> None: ...

    async def video(self, pts: int, requests: Sequence[VideoRequest]) -> list[Encoded]: ...

    async def audio(self, pts: int, requests: Sequence[AudioRequest]) -> list[Encoded]: ...

    def release(self, encoder: int) -> None: ...

    def reset(self) -> None: ...

    async def close(self) -> None: ...


class _Encoders:
    """The encoders of one backend, by number, made on first use. Used from one thread."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        self._size = (width, height)
        self._fps = fps
        self._video: dict[int, VideoEncoder] = {}
        self._audio: dict[int, AudioEncoder] = {}

    def video(
        self, pts: int, requests: Sequence[VideoRequest], pictures: Sequence[npt.NDArray[np.uint8]]
    ) -> list[Encoded]:
        done = []
        for request, picture in zip(requests, pictures, strict=True):
            encoder = self._video.get(request.encoder)
            if encoder is None or encoder.codec != request.codec:
                width, height = self._size
                encoder = VideoEncoder(request.codec, width, height, self._fps)
                self._video[request.encoder] = encoder
            packets = encoder.encode(picture, pts, request.keyframe)
            done.append(
                Encoded(
                    request.encoder,
                    tuple(bytes(packet) for packet in packets),
                    any(packet.is_keyframe for packet in packets),
                )
            )
        return done

    def audio(self, pts: int, requests: Sequence[AudioRequest]) -> list[Encoded]:
        done = []
        for request in requests:
            encoder = self._audio.get(request.encoder)
            if encoder is None:
                encoder = self._audio[request.encoder] = AudioEncoder()
            samples = np.frombuffer(request.samples, dtype=np.int16)
            packets = encoder.encode(samples, pts)
            done.append(Encoded(request.encoder, tuple(bytes(p) for p in packets), False))
        return done

    def release(self, encoders: Sequence[int]) -> None:
        for number in encoders:
            self._video.pop(number, None)
            self._audio.pop(number, None)

    def clear(self) -> None:
        self._video.clear()
        self._audio.clear()


class _ToForget:
    """What the next slot of each kind tells its encoders to forget: the encoders released
    since the last one, or (after a reset) all of them. Shared by both backends."""

    def __init__(self) -> None:
        self._video: list[int] = []
        self._audio: list[int] = []
        self._all = False

    def release(self, encoder: int) -> None:
        self._video.append(encoder)
        self._audio.append(encoder)

    def reset(self) -> None:
        """Forget every encoder at the next video slot."""
        self.clear()
        self._all = True

    def clear(self) -> None:
        """Nothing to forget (new encoders, as in a new worker)."""
        self._video.clear()
        self._audio.clear()
        self._all = False

    def take_video(self) -> tuple[list[int], bool]:
        """The released encoders, and whether all are to be forgotten; taken once."""
        released, self._video = self._video, []
        everything, self._all = self._all, False
        return released, everything

    def take_audio(self) -> list[int]:
        released, self._audio = self._audio, []
        return released


class ThreadedEncoding:
    """Draw on the event loop, encode in ``workers`` threads (video) and one more (audio).

    Encoders are split between the video threads by number, and what they are told to forget
    is applied in their own thread at the next slot: each encoder is only used by one thread.
    """

    def __init__(
        self, renderer: FaceRenderer, fps: float, picture: Picture, workers: int | None = None
    ) -> None:
        self._picture = picture
        self._workers = workers or os.cpu_count() or 1
        # One thread per shard: a shard's encoders then see their frames in slot order, even
        # when the next slot is submitted before this one is done.
        self._video_pools = [
            ThreadPoolExecutor(1, thread_name_prefix=f"dpkit-encode-{index}")
            for index in range(self._workers)
        ]
        self._audio_pool = ThreadPoolExecutor(1, thread_name_prefix="dpkit-opus")
        size = (renderer.width, renderer.height)
        self._shards = [_Encoders(*size, fps) for _ in range(self._workers)]
        self._audio_encoders = _Encoders(*size, fps)
        self._forget = _ToForget()
        self.starts = 0  # threads, no worker process

    async def start(self) -> None:
        pass

    async def video(self, pts: int, requests: Sequence[VideoRequest]) -> list[Encoded]:
        pictures = [self._picture(request.pose) for request in requests]
        released, reset = self._forget.take_video()
        loop = asyncio.get_running_loop()
        calls = []
        for index, shard in enumerate(self._shards):
            mine = [i for i, r in enumerate(requests) if r.encoder % self._workers == index]
            calls.append(
                loop.run_in_executor(
                    self._video_pools[index],
                    _shard_slot,
                    shard,
                    pts,
                    [requests[i] for i in mine],
                    [pictures[i] for i in mine],
                    [number for number in released if number % self._workers == index],
                    reset,
                )
            )
        results = await asyncio.gather(*calls)
        return [encoded for chunk in results for encoded in chunk]

    async def audio(self, pts: int, requests: Sequence[AudioRequest]) -> list[Encoded]:
        if not requests:
            return []
        released = self._forget.take_audio()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._audio_pool, _audio_slot, self._audio_encoders, pts, requests, released
        )

    def release(self, encoder: int) -> None:
        self._forget.release(encoder)

    def reset(self) -> None:
        self._forget.reset()

    async def close(self) -> None:
        for pool in [*self._video_pools, self._audio_pool]:
            await asyncio.to_thread(pool.shutdown)


def _audio_slot(
    encoders: _Encoders, pts: int, requests: Sequence[AudioRequest], released: Sequence[int]
) -> list[Encoded]:
    encoders.release(released)
    return encoders.audio(pts, requests)


def _shard_slot(
    shard: _Encoders,
    pts: int,
    requests: Sequence[VideoRequest],
    pictures: Sequence[npt.NDArray[np.uint8]],
    released: Sequence[int],
    reset: bool,
) -> list[Encoded]:
    if reset:
        shard.clear()
    shard.release(released)
    return shard.video(pts, requests, pictures)


class _Channel:
    """One pipe to the worker. Requests may follow each other before their answers come; the
    worker answers in order, so each answer goes to the oldest request still waiting."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._answers: deque[asyncio.Future[Any]] = deque()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(connection.fileno(), self._readable)
        self._broken: str | None = None

    def _readable(self) -> None:
        try:
            message = self.connection.recv()
        except (EOFError, OSError) as exc:
            self._loop.remove_reader(self.connection.fileno())
            self._broken = f"the encoding worker went away: {exc or type(exc).__name__}"
            while self._answers:
                answer = self._answers.popleft()
                if not answer.done():
                    answer.set_exception(EncodingFailed(self._broken))
            return
        if self._answers:
            answer = self._answers.popleft()
            if not answer.done():
                answer.set_result(message)

    async def ask(self, request: object) -> Any:
        return await self.answer(self.send(request))

    def send(self, request: object) -> asyncio.Future[Any]:
        """Send ``request`` now; its answer, to await with :meth:`answer`."""
        if self._broken is not None:
            raise EncodingFailed(self._broken)
        answer = self._loop.create_future()
        try:
            self.connection.send(request)
        except (OSError, ValueError) as exc:
            raise EncodingFailed(f"the encoding worker went away: {exc}") from exc
        self._answers.append(answer)
        return answer

    @staticmethod
    async def answer(answer: asyncio.Future[Any]) -> Any:
        message = await answer
        if isinstance(message, tuple) and message and message[0] == "error":
            raise EncodingFailed(str(message[1]))
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self.connection.fileno())
        self.connection.close()


class ProcessEncoding:
    """Draw and encode in a worker process with its own renderer of ``width x height``."""

    def __init__(self, width: int, height: int, fps: float, seed: int = 0) -> None:
        self._args = (width, height, fps, seed)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._video: _Channel | None = None
        self._audio: _Channel | None = None
        self._forget = _ToForget()
        self._starting: asyncio.Lock | None = None
        # Requests of a kind reach the worker in the order they were made, even when the first
        # waits for the worker to start: an encoder given frames out of order fails.
        self._in_order: dict[str, asyncio.Lock] = {}
        self.starts = 0

    async def start(self) -> None:
        """Start the worker unless it runs; idempotent, and safe to call concurrently."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._process is not None and self._process.is_alive():
                return
            self._stop_channels()
            context = _worker_context()
            video_ours, video_theirs = context.Pipe()
            audio_ours, audio_theirs = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(*self._args, video_theirs, audio_theirs),
                name="dpkit-encoding",
                daemon=True,
            )
            await asyncio.to_thread(process.start)
            video_theirs.close()
            audio_theirs.close()
            self._process = process
            self._video, self._audio = _Channel(video_ours), _Channel(audio_ours)
            self._forget.clear()  # a new worker has no encoders to forget
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    await self._video.ask(("ready",))
            except (TimeoutError, EncodingFailed) as exc:
                await self.close()
                raise EncodingFailed(f"the encoding worker did not start: {exc}") from exc
            self.starts += 1
            logger.debug("encoding worker %d started", process.pid)

    async def video(self, pts: int, requests: Sequence[VideoRequest]) -> list[Encoded]:
        wire = [(r.encoder, r.codec, tuple(r.pose), r.keyframe) for r in requests]
        async with self._turn("video"):
            channel = await self._channel("video")
            released, reset = self._forget.take_video()
            sent = channel.send(("video", pts, wire, released, reset))
        answer = await channel.answer(sent)
        return [Encoded(number, tuple(payloads), key) for number, payloads, key in answer]

    async def audio(self, pts: int, requests: Sequence[AudioRequest]) -> list[Encoded]:
        if not requests:
            return []
        wire = [(r.encoder, r.samples) for r in requests]
        async with self._turn("audio"):
            channel = await self._channel("audio")
            released = self._forget.take_audio()
            sent = channel.send(("audio", pts, wire, released))
        answer = await channel.answer(sent)
        return [Encoded(number, tuple(payloads), False) for number, payloads in answer]

    def _turn(self, kind: str) -> asyncio.Lock:
        """Taken at once when nobody waits ahead (the usual case, no suspension); asyncio's
        lock is first come, first served."""
        return self._in_order.setdefault(kind, asyncio.Lock())

    async def _channel(self, kind: str) -> _Channel:
        if self._process is None or not self._process.is_alive():
            if self._process is not None:
                logger.error(
                    "the encoding worker died (exit code %s); starting another",
                    self._process.exitcode,
                )
            await self.start()
        channel = self._video if kind == "video" else self._audio
        assert channel is not None
        return channel

    def release(self, encoder: int) -> None:
        self._forget.release(encoder)

    def reset(self) -> None:
        self._forget.reset()

    def _stop_channels(self) -> None:
        for channel in (self._video, self._audio):
            if channel is not None:
                channel.close()
        self._video = self._audio = None

    async def close(self) -> None:
        """Stop the worker (it exits when its pipes close) and wait for it, bounded."""
        self._stop_channels()
        process, self._process = self._process, None
        if process is None:
            return
        await asyncio.to_thread(process.join, STOP_TIMEOUT_S)
        if process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join, STOP_TIMEOUT_S)


# --- the worker process ------------------------------------------------------------------------


def _worker_context() -> multiprocessing.context.ForkServerContext:
    """Workers come from a fork server with this module imported, so each starts in a few
    milliseconds (after the first, which starts the fork server) rather than importing PyAV
    and numpy afresh; forking the server itself, with its threads, would not be safe."""
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, multiprocessing.context.ForkServerContext)
    context.set_forkserver_preload([__name__])
    return context


def _worker_main(
    width: int, height: int, fps: float, seed: int, video: Connection, audio: Connection
) -> None:
    """The worker: a video thread and an audio thread, each answering its pipe until it closes."""
    renderer = FaceRenderer(width, height, seed=seed)
    video_encoders = _Encoders(width, height, fps)
    audio_encoders = _Encoders(width, height, fps)

    def serve_video() -> None:
        while True:
            try:
                message = video.recv()
            except (EOFError, OSError):
                return
            try:
                if message[0] == "ready":
                    video.send(("ready",))
                    continue
                _kind, pts, wire, released, reset = message
                if reset:
                    video_encoders.clear()
                video_encoders.release(released)
                requests = [
                    VideoRequest(number, codec, FacePose(*pose), key)
                    for number, codec, pose, key in wire
                ]
                pictures = [renderer.render_yuv(request.pose) for request in requests]
                done = video_encoders.video(pts, requests, pictures)
                video.send([(e.encoder, e.payloads, e.keyframe) for e in done])
            except (EOFError, OSError):
                return
            except Exception as exc:  # answered, so the server logs it and carries on
                video.send(("error", f"{type(exc).__name__}: {exc}"))

    def serve_audio() -> None:
        while True:
            try:
                message = audio.recv()
            except (EOFError, OSError):
                return
            try:
                _kind, pts, wire, released = message
                audio_encoders.release(released)
                requests = [AudioRequest(number, samples) for number, samples in wire]
                done = audio_encoders.audio(pts, requests)
                audio.send([(e.encoder, e.payloads) for e in done])
            except (EOFError, OSError):
                return
            except Exception as exc:
                audio.send(("error", f"{type(exc).__name__}: {exc}"))

    audio_thread = threading.Thread(target=serve_audio, name="dpkit-opus", daemon=True)
    audio_thread.start()
    serve_video()
    audio_thread.join(STOP_TIMEOUT_S)
