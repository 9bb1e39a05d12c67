"""Media files as the user's microphone and camera, for headless machines and repeatable runs.

A :class:`MediaFileDevices` provider plays a file's audio as the microphone and its video as
the camera (through aiortc's ``MediaPlayer``, paced in real time, looping if asked).
"""

from __future__ import annotations

from pathlib import Path

from aiortc.contrib.media import MediaPlayer

from dpkit.client.devices import DeviceError, DeviceFailure, UserMedia
from dpkit.client.options import MediaDevices


class MediaFileDevices:
    """Opens ``path`` for each connect; a device the file has no stream for is not available."""

    needs_consent = False

    def __init__(self, path: str | Path, *, loop: bool = True) -> None:
        self.path = Path(path)
        self.loop = loop

    async def open(self, devices: MediaDevices) -> UserMedia:
        if not self.path.is_file():
            raise DeviceError(DeviceFailure.NOT_AVAILABLE, f"no media file at {self.path}")
        try:
            player = MediaPlayer(str(self.path), loop=self.loop)
        except Exception as exc:  # PyAV's errors for a file it cannot read
            raise DeviceError(DeviceFailure.NOT_USABLE, f"{self.path}: {exc}") from exc
        media = UserMedia(
            player.audio if devices.microphone else None,
            player.video if devices.camera else None,
        )
        missing = [
            name
            for name, wanted, got in (
                ("microphone", devices.microphone, media.microphone),
                ("camera", devices.camera, media.camera),
            )
            if wanted and got is None
        ]
        if missing:
            media.stop()
            raise DeviceError(
                DeviceFailure.NOT_AVAILABLE, f"{self.path} has no stream for the {missing[0]}"
            )
        return media
