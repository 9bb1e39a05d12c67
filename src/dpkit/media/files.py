"""Media files as the user's microphone and camera, for headless machines and repeatable runs.

A :class:`MediaFileDevices` provider plays a file's audio as the microphone and its video as
the camera (through aiortc's ``MediaPlayer``, paced in real time, looping if asked). Every
failure names the file, in its message and in its advice.
"""

from __future__ import annotations

import asyncio
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

    async def probe(self, devices: MediaDevices) -> None:
        """Raise :class:`DeviceError` naming the file if it is not there to be played."""
        if devices.any:
            await asyncio.to_thread(self._check_file)

    def _check_file(self) -> None:
        path = self.path
        if path.is_file():
            return
        if path.exists():
            raise DeviceError(
                DeviceFailure.NOT_AVAILABLE,
                f"{path} is not a media file (it is a directory or a device)",
                advice=f"The media file {path} is not a regular file: give the path of an audio "
                "or video file (--media-file FILE, MediaFileDevices(path)).",
            )
        raise DeviceError(
            DeviceFailure.NOT_AVAILABLE,
            f"no media file at {path}",
            advice=f"The media file {path} does not exist: check the path given to "
            "--media-file (MediaFileDevices(path)).",
        )

    async def open(self, devices: MediaDevices) -> UserMedia:
        await self.probe(devices)
        try:
            # PyAV reads the file's header here, which blocks: off the event loop.
            player = await asyncio.to_thread(_player, self.path, self.loop)
        except Exception as exc:  # PyAV's errors for a file it cannot read
            raise DeviceError(
                DeviceFailure.NOT_USABLE,
                f"{self.path}: {exc}",
                advice=f"{self.path} could not be read as audio or video ({exc}): give a file "
                "FFmpeg can play (a .wav, .mp4, .webm ...).",
            ) from exc
        media = UserMedia(
            player.audio if devices.microphone else None,
            player.video if devices.camera else None,
        )
        missing = [
            (name, stream)
            for name, stream, wanted, got in (
                ("microphone", "audio", devices.microphone, media.microphone),
                ("camera", "video", devices.camera, media.camera),
            )
            if wanted and got is None
        ]
        if missing:
            media.stop()
            name, stream = missing[0]
            raise DeviceError(
                DeviceFailure.NOT_AVAILABLE,
                f"{self.path} has no stream for the {name}",
                advice=f"{self.path} has no {stream} stream to play as the {name}: use a file "
                f"with one, or do not request the {name}.",
            )
        return media


def _player(path: Path, loop: bool) -> MediaPlayer:
    return MediaPlayer(str(path), loop=loop)
