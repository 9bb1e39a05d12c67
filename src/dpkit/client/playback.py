"""The persona's voice on this machine's speakers (PortAudio), silent while it is muted.

A :class:`PersonaPlayback` reads the persona's decoded audio (48 kHz, what aiortc's Opus decoder
gives: packed stereo s16) and writes it to an output device from a worker thread, so a slow
device never holds up the event loop. Muting (``Scene.set_persona_muted``) writes silence, as
muting the browser's video element does.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import av

from dpkit.client.devices import DeviceError
from dpkit.media.capture import audio_scan, device_error, load_portaudio

logger = logging.getLogger("dpkit.client")

SAMPLE_RATE = 48000


def has_output_device(device: str | int | None = None) -> bool:
    """Whether PortAudio has this (or a default) output device to play on.

    The first call in a process loads PortAudio (tens of milliseconds: call it from a worker
    thread); the answer is kept until PortAudio rescans (:func:`known_output_device`).
    """
    known = known_output_device(device)
    if known is not None:
        return known
    try:
        load_portaudio().query_devices(device, kind="output")
    except Exception:  # no PortAudio, no device, or no default: nothing to play on
        present = False
    else:
        present = True
    key = _probe_key(device)
    if key is not None:
        _Probes.answers[key] = present
    return present


def known_output_device(device: str | int | None = None) -> bool | None:
    """:func:`has_output_device`'s answer if this process already has it, else None.

    PortAudio lists the devices once when it starts (and again at each
    :func:`~dpkit.media.capture.rescan_audio`), so an answer read from that list holds until
    then: each Scene need not probe again (a probe is a hop to a worker thread, which costs a
    connect milliseconds while other threads hold the GIL).
    """
    key = _probe_key(device)
    return None if key is None else _Probes.answers.get(key)


class _Probes:
    """The answers :func:`has_output_device` gave, per PortAudio instance, scan and device."""

    answers: ClassVar[dict[tuple[int, int, str | int | None], bool]] = {}


def _probe_key(device: str | int | None) -> tuple[int, int, str | int | None] | None:
    sounddevice = sys.modules.get("sounddevice")
    if sounddevice is None:
        return None  # not loaded (or made unloadable): nothing is known yet
    return id(sounddevice), audio_scan(), device


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
