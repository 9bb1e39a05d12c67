"""A Scene uses the machine's real microphone and camera by default, behind consent.

As the browser does: nothing is opened or asked for unless requested; a device that does not
exist is not asked about; a required device that is missing, or not allowed, fails connect()
with ``noUserMedia`` before any socket opens; a requested-only one is done without. Synthetic
devices are only used when asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import av
import pytest

from dpkit import (
    DeviceError,
    DeviceFailure,
    MediaDevices,
    NotSupported,
    NoUserMedia,
    Scene,
    ServerConnectionFailed,
)
from dpkit.apikey import ApiKey
from dpkit.client.consent import ConsentGate, MemoryConsentStore
from dpkit.client.playback import PersonaPlayback, has_output_device
from dpkit.media.capture import SystemDevices, open_microphone
from dpkit.media.devices_list import list_devices
from dpkit.server import DpkitServer
from tests import support_audio
from tests.support import UNIT, ServerFactory, until
from tests.support_audio import VirtualAudio

virtual_audio = support_audio.virtual_audio

SEED_MESSAGES = {failure.value for failure in DeviceFailure}
AUDIO_EXTRA = "pip install 'dpkit[audio]'"

REQUIRES_A_MICROPHONE = """
import asyncio, json, sys
from dpkit import DpkitError, Scene

async def main() -> None:
    scene = Scene(sys.argv[1], requested_media_devices={"microphone": True},
                  required_media_devices={"microphone": True}, play_audio=False)
    try:
        await scene.connect()
    except DpkitError as error:
        print(json.dumps({"name": error.name, "message": error.message, "advice": error.advice}))

asyncio.run(main())
"""


@asynccontextmanager
async def raw_listener() -> AsyncIterator[tuple[str, list[str]]]:
    """A bare TCP listener on loopback that records every connection it accepts."""
    accepted: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(str(writer.get_extra_info("peername")))
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield ApiKey(f"http://127.0.0.1:{port}/api/token", "k", "s").encode(), accepted
    finally:
        listener.close()
        await listener.wait_closed()


def camera_present() -> bool:
    return Path("/dev/video0").exists()


async def allow(origin: str, devices: MediaDevices) -> MediaDevices:
    """A fake at the user-interaction boundary: the user allows whatever is asked."""
    return devices


class CountingPrompt:
    """A fake at the user-interaction boundary: allows everything, and counts each question."""

    def __init__(self) -> None:
        self.asked: list[MediaDevices] = []

    async def __call__(self, origin: str, devices: MediaDevices) -> MediaDevices:
        self.asked.append(devices)
        return devices


async def test_by_default_a_required_microphone_is_never_a_tone(tmp_path: Path) -> None:
    """A script with no terminal, no stored consent and this machine's devices: noUserMedia with
    one of the seed's messages, and not a byte sent anywhere (a raw listener sees nothing)."""
    async with raw_listener() as (key, accepted):
        environ = {
            name: value for name, value in os.environ.items() if not name.startswith("PULSE_")
        }
        environ["XDG_STATE_HOME"] = str(tmp_path / "state")  # no remembered consent
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            REQUIRES_A_MICROPHONE,
            key,
            stdin=asyncio.subprocess.DEVNULL,  # no terminal to ask on
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environ,
        )
        async with asyncio.timeout(60 * UNIT):
            out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    error = json.loads(out)
    assert error["name"] == "noUserMedia"
    assert error["message"] in SEED_MESSAGES
    assert error["advice"]
    assert accepted == []
    assert not (tmp_path / "state" / "dpkit" / "permissions.json").exists()  # nothing counted


async def test_requested_only_devices_that_are_missing_or_declined_connect_without(
    server: DpkitServer,
) -> None:
    """Requesting both without requiring either: connect goes on with no media (the browser's
    fallback), whatever this machine has, when nobody can allow them."""
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True, "camera": True},
        required_media_devices={},
        consent=ConsentGate(MemoryConsentStore(), None),
        play_audio=False,
    )
    async with scene:
        session_id = await scene.connect()
        assert (scene.is_microphone_active(), scene.is_camera_active()) == (False, False)
        assert session_id in server.state.sessions


async def test_the_default_devices_are_the_machines_real_microphone(
    virtual_audio: VirtualAudio, start_server: ServerFactory
) -> None:
    """With a (virtual) sound card and consent, a Scene given no devices sends the real
    microphone: the server hears the tone playing into it, after one question."""
    server = await start_server()
    prompt = CountingPrompt()
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        consent=ConsentGate(MemoryConsentStore(), prompt),
        play_audio=False,
    )
    async with scene:
        session_id = await scene.connect()
        assert scene.is_microphone_active()
        session = server.state.sessions[session_id]
        await until(lambda: (session.user_audio_dbfs or -200.0) > -40.0, within=15 * UNIT)
    assert prompt.asked == [MediaDevices(microphone=True)]


async def test_a_real_microphone_nobody_allowed_fails_before_any_socket(
    virtual_audio: VirtualAudio,
) -> None:
    """A microphone exists, but no terminal to ask on and nothing remembered: not permitted,
    saying nobody was asked, and no connection is made."""
    async with raw_listener() as (key, accepted):
        scene = Scene(
            key,
            requested_media_devices={"microphone": True},
            required_media_devices={"microphone": True},
            consent=ConsentGate(MemoryConsentStore(), None),
            play_audio=False,
        )
        with pytest.raises(NoUserMedia) as caught:
            await scene.connect()
    assert caught.value.message == DeviceFailure.NOT_PERMITTED.value
    assert "Nobody was asked" in caught.value.advice
    assert accepted == []


async def test_a_camera_the_machine_lacks_is_not_asked_about(virtual_audio: VirtualAudio) -> None:
    """Microphone and camera requested, only a microphone here: the user is asked about the
    microphone alone (a browser does not ask about a camera that is not there)."""
    if camera_present():
        pytest.skip("this machine has a camera at /dev/video0")
    prompt = CountingPrompt()
    async with raw_listener() as (key, _accepted):
        scene = Scene(
            key,
            requested_media_devices={"microphone": True, "camera": True},
            required_media_devices={},
            consent=ConsentGate(MemoryConsentStore(), prompt),
            play_audio=False,
        )
        # The raw listener is no token endpoint: connect fails after the devices are settled.
        with pytest.raises(ServerConnectionFailed, match="token endpoint"):
            await scene.connect()
    assert prompt.asked == [MediaDevices(microphone=True)]


async def test_without_sounddevice_the_microphone_and_speaker_name_the_audio_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No sounddevice package: microphone and speaker are 'not available', naming
    pip install 'dpkit[audio]'; nothing raises ImportError."""
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if it were not installed
    with pytest.raises(DeviceError) as opened:
        open_microphone()
    assert opened.value.failure is DeviceFailure.NOT_AVAILABLE
    assert AUDIO_EXTRA in opened.value.message
    assert AUDIO_EXTRA in opened.value.advice

    async with raw_listener() as (key, accepted):
        scene = Scene(
            key,
            requested_media_devices={"microphone": True},
            required_media_devices={"microphone": True},
            consent=ConsentGate(MemoryConsentStore(), allow),
            play_audio=False,
        )
        with pytest.raises(NoUserMedia) as caught:
            await scene.connect()
    assert caught.value.message == DeviceFailure.NOT_AVAILABLE.value
    assert AUDIO_EXTRA in caught.value.advice
    assert accepted == []

    assert not has_output_device()

    async def no_frames() -> AsyncIterator[av.AudioFrame]:
        return
        yield

    playback = PersonaPlayback(no_frames(), lambda: False)
    await playback.run()
    assert playback.error is not None
    assert playback.error.failure is DeviceFailure.NOT_AVAILABLE
    assert AUDIO_EXTRA in playback.error.message
    assert any(AUDIO_EXTRA in problem for problem in list_devices().problems)


async def test_with_no_capture_backend_at_all_devices_are_not_supported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No PortAudio and a PyAV without device inputs: notSupported, as a browser without
    getUserMedia, for a requested device too; and still before any socket."""
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    monkeypatch.setattr(av, "formats_available", set())  # a PyAV built without libavdevice
    async with raw_listener() as (key, accepted):
        for required in ({"microphone": True}, {}):
            scene = Scene(
                key,
                requested_media_devices={"microphone": True},
                required_media_devices=required,
                consent=ConsentGate(MemoryConsentStore(), allow),
                play_audio=False,
            )
            with pytest.raises(NotSupported) as caught:
                await scene.connect()
            assert caught.value.name == "notSupported"
            assert AUDIO_EXTRA in caught.value.message
            assert AUDIO_EXTRA in caught.value.advice
        assert accepted == []
        # Asking for nothing needs no backend at all: this connect does reach the network.
        with pytest.raises(ServerConnectionFailed, match="token endpoint"):
            await Scene(
                key, requested_media_devices={}, required_media_devices={}, play_audio=False
            ).connect()
        assert accepted != []


async def test_system_devices_probe_names_a_missing_camera() -> None:
    """Probing a camera path that does not exist: not available, naming the path."""
    if not sys.platform.startswith("linux"):
        pytest.skip("/dev/video9 is a Linux path")
    with pytest.raises(DeviceError, match="/dev/video9") as caught:
        await SystemDevices(camera="/dev/video9").probe(MediaDevices(camera=True))
    assert caught.value.failure is DeviceFailure.NOT_AVAILABLE
    assert "/dev/video9" in caught.value.advice
