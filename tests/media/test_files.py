"""Media files as devices: a WAV file's sound is sent as the user's microphone."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from dpkit import MediaDevices, Scene
from dpkit.client.devices import DeviceError, DeviceFailure
from dpkit.media.files import MediaFileDevices
from dpkit.server import DpkitServer
from tests.support import until


def write_tone(path: Path, seconds: float = 1.0) -> None:
    """A 440 Hz tone as a 48 kHz mono WAV file, written with PyAV."""
    samples = np.sin(2 * np.pi * 440 * np.arange(int(48000 * seconds)) / 48000) * 8000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            samples.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 48000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


async def test_a_wav_file_is_the_microphone(server: DpkitServer, tmp_path: Path) -> None:
    """The file's tone reaches the server as the user's microphone."""
    tone = tmp_path / "tone.wav"
    write_tone(tone)
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=MediaFileDevices(tone),
    )
    session_id = await scene.connect()
    try:
        session = server.state.sessions[session_id]
        await until(lambda: (session.user_audio_dbfs or -200.0) > -40.0)
    finally:
        await scene.disconnect()


async def test_a_file_without_video_is_no_camera(tmp_path: Path) -> None:
    """Asking an audio file for a camera: not available, saying which device is missing."""
    tone = tmp_path / "tone.wav"
    write_tone(tone, 0.2)
    with pytest.raises(DeviceError) as caught:
        await MediaFileDevices(tone).open(MediaDevices(camera=True))
    assert caught.value.failure is DeviceFailure.NOT_AVAILABLE
    assert "no stream for the camera" in caught.value.message
    with pytest.raises(DeviceError, match="no media file"):
        await MediaFileDevices(tmp_path / "missing.wav").open(MediaDevices(microphone=True))
