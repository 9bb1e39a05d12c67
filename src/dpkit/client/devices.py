"""The user's microphone and camera: where tracks come from, and the browser's fallback order.

A :class:`DeviceProvider` opens tracks for a set of devices. :func:`acquire_user_media` asks it
for the requested devices and falls back exactly as the Web SDK does (docs/protocol.md, section
7); a required device it cannot get fails ``connect()`` with ``noUserMedia``, whose message is one
of the seed's three.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Protocol

from aiortc.mediastreams import MediaStreamTrack

from dpkit.client.options import MediaDevices
from dpkit.errors import DpkitError, NoUserMedia
from dpkit.media.synthetic import TestPatternVideoTrack, ToneAudioTrack

logger = logging.getLogger("dpkit.client")


class DeviceFailure(enum.Enum):
    """Why a device could not be opened; each maps to one of the seed's ``noUserMedia`` messages."""

    NOT_AVAILABLE = "the user microphone and/or camera is not available"
    NOT_PERMITTED = "the user microphone/camera were not permitted by the user"
    NOT_USABLE = "the user microphone/camera failed to be usable"


class DeviceError(DpkitError):
    """A provider could not open a device."""

    name = "deviceError"

    def __init__(self, failure: DeviceFailure, detail: str = "") -> None:
        super().__init__(failure.value + (f" ({detail})" if detail else ""))
        self.failure = failure


@dataclass
class UserMedia:
    """The tracks a connect got; either may be None."""

    microphone: MediaStreamTrack | None = None
    camera: MediaStreamTrack | None = None

    def stop(self) -> None:
        for track in (self.microphone, self.camera):
            if track is not None:
                track.stop()


class DeviceProvider(Protocol):
    """Opens the user's devices; raises :class:`DeviceError` when it cannot."""

    async def open(self, devices: MediaDevices) -> UserMedia: ...


class SyntheticDevices:
    """A tone for a microphone and a test pattern for a camera, for headless machines."""

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0) -> None:
        self._size = (width, height, fps)

    async def open(self, devices: MediaDevices) -> UserMedia:
        width, height, fps = self._size
        return UserMedia(
            ToneAudioTrack() if devices.microphone else None,
            TestPatternVideoTrack(width, height, fps) if devices.camera else None,
        )


class NoDevices:
    """A machine with no microphone and no camera."""

    async def open(self, devices: MediaDevices) -> UserMedia:
        if devices.any:
            raise DeviceError(DeviceFailure.NOT_AVAILABLE, "this machine has no media devices")
        return UserMedia()


async def acquire_user_media(
    requested: MediaDevices, required: MediaDevices, provider: DeviceProvider
) -> UserMedia:
    """Open devices with the Web SDK's fallback order; raise ``NoUserMedia`` per its rules."""
    requested = requested | required
    if not requested.any:
        return UserMedia()
    try:
        return await provider.open(requested)
    except DeviceError as first:
        failure = first
    logger.info("could not open %s: %s", requested, failure.message)
    if required == requested:
        raise _no_user_media(failure)
    fallback: MediaDevices | None = None
    if required.any:
        fallback = required
    elif requested.microphone and requested.camera:
        fallback = MediaDevices(microphone=True)
    if fallback is None:
        return UserMedia()
    try:
        return await provider.open(fallback)
    except DeviceError as second:
        if required.any:
            raise _no_user_media(second) from second
        logger.info("going on without media: %s", second.message)
        return UserMedia()


def _no_user_media(error: DeviceError) -> NoUserMedia:
    result = NoUserMedia(error.failure.value)
    result.__cause__ = error
    return result
