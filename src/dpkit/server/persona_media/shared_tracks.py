"""One session's persona tracks, fed by the look's shared :class:`PersonaBroadcast`.

The tracks hand aiortc's senders encoded packets (``Packet``), which aiortc packetises without
encoding again. A video track learns its codec once the answer is negotiated (``codec``) and
subscribes at its first ``recv()``, when the sender starts; a receiver's keyframe request reaches
it through :meth:`SharedVideoTrack.request_keyframe`. Stopping a track ends its subscription.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dpkit.server.persona_media.broadcast import (
    AudioSubscription,
    PersonaBroadcast,
    SampleSource,
    VideoSubscription,
)
from dpkit.server.persona_media.encoders import VIDEO_CODECS, VP8

if TYPE_CHECKING:
    from dpkit.server.persona_media.encoders import Packet


class SharedVideoTrack(MediaStreamTrack):
    """The persona's face for one session: shared idle frames, its own while it speaks."""

    kind = "video"

    def __init__(
        self,
        broadcast: PersonaBroadcast,
        mouth: Callable[[], float] | None = None,
        speaking: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self._broadcast = broadcast
        self._mouth = mouth
        self._speaking = speaking
        self._codec = VP8
        self.subscription: VideoSubscription | None = None

    @property
    def codec(self) -> str:
        """The negotiated codec's MIME type (``video/VP8`` or ``video/H264``)."""
        return self._codec

    @codec.setter
    def codec(self, codec: str) -> None:
        if codec not in VIDEO_CODECS:
            raise ValueError(f"cannot send video as {codec!r}; known: {', '.join(VIDEO_CODECS)}")
        if self.subscription is not None:
            raise RuntimeError("the video track has started: its codec is fixed")
        self._codec = codec

    def request_keyframe(self) -> None:
        """The receiver lost the picture (PLI or FIR): its next keyframe comes promptly."""
        if self.subscription is not None:
            self.subscription.request_keyframe()

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.subscription is None:
            self.subscription = self._broadcast.subscribe_video(
                self._codec, self._mouth, self._speaking
            )
        return await self.subscription.outbox.get()

    def stop(self) -> None:
        super().stop()
        if self.subscription is not None:
            self._broadcast.unsubscribe(self.subscription)


class SharedAudioTrack(MediaStreamTrack):
    """The persona's voice for one session: shared room tone, its own Opus while it speaks."""

    kind = "audio"

    def __init__(self, broadcast: PersonaBroadcast, source: SampleSource | None = None) -> None:
        super().__init__()
        self._broadcast = broadcast
        self._source = source
        self.subscription: AudioSubscription | None = None

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.subscription is None:
            self.subscription = self._broadcast.subscribe_audio(self._source)
        return await self.subscription.outbox.get()

    def stop(self) -> None:
        super().stop()
        if self.subscription is not None:
            self._broadcast.unsubscribe(self.subscription)
