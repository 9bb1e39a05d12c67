"""Real capture end to end: a tone played into a virtual audio device reaches the server."""

from __future__ import annotations

import aiohttp

from dpkit import MediaDevices, Scene
from dpkit.client.consent import ConsentGate, MemoryConsentStore
from dpkit.media.capture import SystemDevices
from tests import support_audio
from tests.support import ServerFactory, until
from tests.support_audio import VirtualAudio

virtual_audio = support_audio.virtual_audio


async def allow_everything(origin: str, devices: MediaDevices) -> MediaDevices:
    """A fake at the user-interaction boundary: the user allows whatever is asked."""
    return devices


async def test_a_tone_into_the_virtual_microphone_reaches_the_server(
    virtual_audio: VirtualAudio, start_server: ServerFactory
) -> None:
    """The system microphone (a null sink monitor) is sent, and the server hears its level."""
    server = await start_server()
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=SystemDevices(),
        consent=ConsentGate(MemoryConsentStore(), allow_everything),
    )
    session_id = await scene.connect()
    try:
        assert scene.is_microphone_active()
        session = server.state.sessions[session_id]
        await until(lambda: (session.user_audio_dbfs or -200.0) > -40.0, within=15.0)
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{server.url}/api/sessions/{session_id}",
                headers={"Authorization": f"Bearer {server.admin_token}"},
            ) as reply,
        ):
            live = (await reply.json())["live"]
        assert live["userAudioDbfs"] > -40.0
    finally:
        await scene.disconnect()


async def test_the_persona_is_played_on_the_default_speaker(
    virtual_audio: VirtualAudio, start_server: ServerFactory
) -> None:
    """When the machine has an output device, the persona's voice is played on it, unasked."""
    server = await start_server()
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    await scene.connect()
    try:
        await until(lambda: scene.playback is not None and scene.playback.frames_played > 50)
        assert scene.playback is not None
        assert scene.playback.error is None
    finally:
        await scene.disconnect()


def test_without_a_sound_server_there_is_nothing_to_play_on(virtual_audio: VirtualAudio) -> None:
    """The check a Scene makes before playing: true while the virtual speaker exists."""
    from dpkit.client.playback import has_output_device

    assert has_output_device()
