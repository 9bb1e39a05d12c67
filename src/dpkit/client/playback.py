"""The persona's voice on this machine's speakers (PortAudio), silent while it is muted.

A :class:`PersonaPlayback` reads the persona's decoded audio (48 kHz, what aiortc's Opus decoder
gives: packed stereo s16) and writes it to an output device from a worker thread, so a slow
device never holds up the event loop. Muting (``Scene.set_persona_muted``) writes silence, as
muting the browser's video element does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import av

from dpkit.client.devices import DeviceError
from dpkit.media.capture import device_error, load_portaudio

logger = logging.getLogger("dpkit.client")

SAMPLE_RATE = 48000


def has_output_device(device: str | int | None = None) -> bool:
    """Whether PortAudio has this (or a default) output device to play on."""
    try:
        load_portaudio().query_devices(device, kind="output")
    except Exception:  # no PortAudio, no device, or no default: nothing to play on
        return False
    return True


class PersonaPlayback:
    """Plays frames on an output device until they end."""

    def __init__(
        self,
        frames: AsyncIterator[av.AudioFrame],
        muted: Callable[[], bool],
        device: str | int | None = None,
    ) -> None:
        self._frames = frames
        self._muted = muted
        self._device = device
        self.frames_played = 0
        self.error: DeviceError | None = None

    def _open(self) -> Any:
        try:
            sounddevice = load_portaudio()
            stream = sounddevice.OutputStream(
                samplerate=SAMPLE_RATE, channels=2, dtype="int16", device=self._device
            )
            stream.start()
        except Exception as exc:
            raise device_error("speaker", exc) from exc
        return stream

    async def run(self) -> None:
        """Play until the persona's audio ends; a speaker that cannot open is logged, not fatal."""
        try:
            stream = await asyncio.to_thread(self._open)
        except DeviceError as exc:
            self.error = exc
            logger.warning("persona audio not played: %s", exc.message)
            return
        import numpy as np  # only once there is something to play: keeps `import dpkit` light

        try:
            async for frame in self._frames:
                samples = np.ascontiguousarray(frame.to_ndarray().reshape(-1, 2), dtype=np.int16)
                if self._muted():
                    samples = np.zeros_like(samples)
                await asyncio.to_thread(stream.write, samples)
                self.frames_played += 1
        finally:
            await asyncio.to_thread(stream.close)
