"""The user's microphone and camera: where tracks come from, and the browser's fallback order.

A :class:`DeviceProvider` opens tracks for a set of devices. :func:`acquire_user_media` asks it
for the requested devices and falls back exactly as the Web SDK does (docs/devices-and-voice.md,
"Requested and required devices"); a required device it cannot get fails ``connect()`` with
``noUserMedia``, whose message is one of the seed's three and whose advice is the cause's.

A provider may also have ``probe(devices)``: a quick check, before anyone is asked for consent,
that the devices exist at all (a browser does not ask about a camera the machine does not have).
It raises :class:`DeviceError` for a missing device, and ``NotSupported`` when the machine has
no way to capture media at all (the browser's "does not support getUserMedia").
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Protocol

from aiortc.mediastreams import MediaStreamTrack

from dpkit.client.options import MediaDevices
from dpkit.errors import DpkitError, NoUserMedia

logger = logging.getLogger("dpkit.client")


class DeviceFailure(enum.Enum):
    """Why a device could not be opened; each maps to one of the seed's ``noUserMedia`` messages."""

    NOT_AVAILABLE = "the user microphone and/or camera is not available"
    NOT_PERMITTED = "the user microphone/camera were not permitted by the user"
    NOT_USABLE = "the user microphone/camera failed to be usable"


def _general_advice(failure: DeviceFailure, detail: str) -> str:
    because = f" ({detail})" if detail else ""
    if failure is DeviceFailure.NOT_AVAILABLE:
        return (
            f"Connect a microphone or camera{because}: `dpkit devices` lists what this machine "
            "has. Without one, request no devices, or pass devices=SyntheticDevices()."
        )
    if failure is DeviceFailure.NOT_PERMITTED:
        return f"Allow access to the device when asked{because}, then connect again."
    return (
        f"The device could not be used{because}: close other programs using it, or choose "
        "another (`dpkit devices` lists them)."
    )


class DeviceError(DpkitError):
    """A provider could not open a device; ``failure`` is which of the seed's three reasons.

    ``advice`` says what to do about this cause; without one, the failure's general advice.
    """

    name = "deviceError"

    def __init__(
        self, failure: DeviceFailure, detail: str = "", *, advice: str | None = None
    ) -> None:
        super().__init__(
            failure.value + (f" ({detail})" if detail else ""),
            advice=advice if advice is not None else _general_advice(failure, detail),
        )
        self.failure = failure
        self.detail = detail


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


async def probe(provider: DeviceProvider, devices: MediaDevices) -> None:
    """Run the provider's ``probe`` if it has one (see the module docstring)."""
    check = getattr(provider, "probe", None)
    if check is not None:
        await check(devices)


class SyntheticDevices:
    """A tone for a microphone and a test pattern for a camera, for headless machines and tests.

    Only used when asked for (``Scene(devices=SyntheticDevices())``); a Scene's default is the
    machine's real devices. Needs no consent: nothing of the user's is captured.
    """

    needs_consent = False

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0) -> None:
        self._size = (width, height, fps)

    async def open(self, devices: MediaDevices) -> UserMedia:
        # numpy and the drawing code load only when a synthetic device is first opened.
        from dpkit.media.synthetic import TestPatternVideoTrack, ToneAudioTrack

        width, height, fps = self._size
        return UserMedia(
            ToneAudioTrack() if devices.microphone else None,
            TestPatternVideoTrack(width, height, fps) if devices.camera else None,
        )


class NoDevices:
    """A machine with no microphone and no camera."""

    needs_consent = False

    async def open(self, devices: MediaDevices) -> UserMedia:
        if devices.any:
            raise DeviceError(
                DeviceFailure.NOT_AVAILABLE,
                "this Scene has no devices (devices=NoDevices())",
                advice="Request no devices, or pass devices=SystemDevices() (this machine's "
                "microphone and camera) or devices=SyntheticDevices().",
            )
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
        raise no_user_media(failure)
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
            raise no_user_media(second) from second
        logger.info("going on without media: %s", second.message)
        return UserMedia()


def no_user_media(error: DeviceError) -> NoUserMedia:
    """The ``noUserMedia`` for ``error``: the seed's message, the cause's advice, and the cause."""
    result = NoUserMedia(error.failure.value, advice=error.advice)
    result.__cause__ = error
    return result
