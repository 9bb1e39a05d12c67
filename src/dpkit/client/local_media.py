"""The user's microphone and camera on the peer connection, switchable during a session.

A :class:`SwitchableTrack` sits on one sender for the whole session and relays whichever device
track is switched in. Turning a device off switches the source out (the sender then waits and
sends nothing, so the server sees the media stop on the same media section); turning it on
switches a new source in. No new offer is needed, as in the browser.

aiortc's sender stops for good if the track it reads from raises ``MediaStreamError``, which a
stopped device track does; the relay absorbs that, and re-stamps timestamps so they keep rising
across sources. ``muted`` replaces the microphone's sound with silence (``microphoneMuteDelay``).
"""

from __future__ import annotations

import asyncio
import fractions

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class SwitchableTrack(MediaStreamTrack):
    """Relays the current source track; waits, sending nothing, while there is none."""

    def __init__(self, kind: str, source: MediaStreamTrack | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._source = source
        self._changed = asyncio.Event()
        self.muted = False
        self._offset: int | None = None
        self._last_pts = -1
        self._step = 1

    @property
    def source(self) -> MediaStreamTrack | None:
        return self._source

    def switch(self, source: MediaStreamTrack | None) -> None:
        """Relay ``source`` from now on (None: nothing); the previous source is stopped."""
        previous, self._source = self._source, source
        self._offset = None  # the next frame decides how to continue the timestamps
        self._changed.set()
        if previous is not None and previous is not source:
            previous.stop()

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        while self.readyState == "live":
            source = self._source
            if source is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                frame = await source.recv()
            except MediaStreamError:
                if source is self._source:
                    self._source = None  # the device went away by itself
                continue
            if source is not self._source:
                continue  # switched while we waited: drop the old source's frame
            assert isinstance(frame, av.AudioFrame | av.VideoFrame)
            return self._restamp(self._silence(frame) if self.muted else frame)
        raise MediaStreamError

    def _restamp(self, frame: av.AudioFrame | av.VideoFrame) -> av.AudioFrame | av.VideoFrame:
        pts = frame.pts or 0
        if self._offset is None:
            # Continue one frame after the last one sent, whatever the new source counts from.
            self._offset = self._last_pts + self._step - pts
        new_pts = pts + self._offset
        if self._last_pts >= 0:
            self._step = max(1, new_pts - self._last_pts)
        self._last_pts = new_pts
        frame.pts = new_pts
        return frame

    @staticmethod
    def _silence(frame: av.AudioFrame | av.VideoFrame) -> av.AudioFrame | av.VideoFrame:
        if not isinstance(frame, av.AudioFrame):
            return frame
        import numpy as np  # only when muting: keeps `import dpkit` light

        silent = av.AudioFrame.from_ndarray(
            np.zeros_like(frame.to_ndarray()), format=frame.format.name, layout=frame.layout.name
        )
        silent.sample_rate = frame.sample_rate
        silent.pts = frame.pts
        silent.time_base = frame.time_base or fractions.Fraction(1, frame.sample_rate)
        return silent

    def stop(self) -> None:
        self.switch(None)
        super().stop()
        self._changed.set()
