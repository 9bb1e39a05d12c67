"""The persona's decoded frames for the application: the newest few, never a backlog.

aiortc queues every decoded frame of a remote track until someone reads it, without a bound.
One :class:`FramePump` per persona track reads every frame as it is decoded, for the whole
session, so that queue never grows, and hands each frame to every open :class:`FrameStream`
(what ``Scene.video_frames()`` and ``Scene.audio_frames()`` return). A stream keeps at most
``capacity`` frames; when its reader is slower than the media, the oldest are dropped and
counted. Memory is flat whatever the readers do, and the frame a slow reader gets next is one of
the newest::

    decoder -> RemoteStreamTrack -> FramePump -> FrameStream (bounded) -> the app's async for
                                              -> FrameStream (bounded) -> the speaker ...

Frames are shared, not copied: every stream gets the same ``av`` frame object. A stream that
the application drops without closing is forgotten (the pump holds streams weakly).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dpkit.errors import ConfigurationError

VIDEO_BUFFER = 2
"""Video frames a stream keeps for a slow reader: a stale picture is worse than a skipped one."""
AUDIO_BUFFER = 10
"""Audio frames a stream keeps for a slow reader: 200 ms of 20 ms frames."""
MAX_BUFFER = 500
"""The most frames a stream may be asked to keep (10 s of audio; 33 s of 15 fps video)."""

FrameT = TypeVar("FrameT", av.VideoFrame, av.AudioFrame)


@dataclass
class FrameCounts:
    """What one kind of persona media did over a scene's life (every session, every stream)."""

    #: Frames the persona sent that were decoded and handed to the streams open at the time.
    received: int = 0
    #: Frames a stream dropped unread because its reader fell ``capacity`` frames behind.
    dropped: int = 0


class FrameStream(Generic[FrameT]):
    """One reader's frames: an async iterator over at most ``capacity`` of the newest.

    It ends when the session ends (or on :meth:`close`), letting go of what it held.
    :attr:`dropped` counts the frames it skipped because its reader was behind.
    """

    def __init__(self, capacity: int, counts: FrameCounts) -> None:
        if not 1 <= capacity <= MAX_BUFFER:
            raise ConfigurationError(
                f"buffer: a frame stream keeps from 1 to {MAX_BUFFER} frames (MAX_BUFFER), "
                f"not {capacity}"
            )
        self.capacity = capacity
        self._frames: deque[FrameT] = deque()
        self._ready = asyncio.Event()
        self._ended = False
        self._counts = counts
        #: Frames this stream skipped because its reader was ``capacity`` frames behind.
        self.dropped = 0
        #: Frames this stream handed to its reader.
        self.delivered = 0

    def __aiter__(self) -> AsyncIterator[FrameT]:
        return self

    async def __anext__(self) -> FrameT:
        while not self._frames:
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        self.delivered += 1
        return self._frames.popleft()

    @property
    def ended(self) -> bool:
        """Whether the stream has ended: the session is over, or it was closed."""
        return self._ended

    def close(self) -> None:
        """Stop receiving frames and let go of the buffered ones. Idempotent."""
        self._end()

    async def aclose(self) -> None:
        """:meth:`close`, for ``contextlib.aclosing`` and other async cleanup."""
        self.close()

    def _push(self, frame: FrameT) -> None:
        if self._ended:
            return
        if len(self._frames) >= self.capacity:
            self._frames.popleft()
            self.dropped += 1
            self._counts.dropped += 1
        self._frames.append(frame)
        self._ready.set()

    def _end(self) -> None:
        # Buffered frames go too: they are of a session that is over, and hold memory.
        self._ended = True
        self._frames.clear()
        self._ready.set()


class FramePump(Generic[FrameT]):
    """Reads one persona track for a session and fans its frames out to the open streams."""

    def __init__(
        self, track: MediaStreamTrack, frame_type: type[FrameT], capacity: int, counts: FrameCounts
    ) -> None:
        self._track = track
        self._type: type[FrameT] = frame_type
        self._capacity = capacity
        self._counts = counts
        self._streams: weakref.WeakSet[FrameStream[FrameT]] = weakref.WeakSet()
        self._ended = False

    def subscribe(self, capacity: int | None = None) -> FrameStream[FrameT]:
        """A new stream of the frames from now on (an ended one if the session has ended)."""
        size = self._capacity if capacity is None else capacity
        stream: FrameStream[FrameT] = FrameStream(size, self._counts)
        if self._ended:
            stream._end()
        else:
            self._streams.add(stream)
        return stream

    async def run(self) -> None:
        """Read every frame until the track ends (or this task is cancelled); then end streams."""
        try:
            while True:
                try:
                    frame = await self._track.recv()
                except MediaStreamError:
                    return
                if not isinstance(frame, self._type):
                    continue
                self._counts.received += 1
                for stream in list(self._streams):
                    stream._push(frame)
        finally:
            self.end()

    def end(self) -> None:
        """End every stream: the session is over. Idempotent."""
        self._ended = True
        for stream in list(self._streams):
            stream._end()
        self._streams.clear()
