"""Whether there is a speaker to play the persona on is found out once per process, never on the
way to Connected: PortAudio lists its devices once (again only at a rescan)."""

from __future__ import annotations

import sys

import pytest

from dpkit import Scene
from dpkit.client import playback
from dpkit.client.playback import has_output_device, known_output_device
from dpkit.media.capture import rescan_audio
from dpkit.server import DpkitServer


class FakePortAudio:
    """A fake ``sounddevice`` at the library boundary: counts device queries; no output device."""

    def __init__(self) -> None:
        self.queries = 0
        self.restarts = 0
        self._initialized = 1

    def query_devices(self, device: str | int | None = None, kind: str = "") -> None:
        self.queries += 1
        raise ValueError("no default output device")

    def _terminate(self) -> None:
        self._initialized = 0

    def _initialize(self) -> None:
        self.restarts += 1
        self._initialized = 1


@pytest.fixture
def portaudio(monkeypatch: pytest.MonkeyPatch) -> FakePortAudio:
    fake = FakePortAudio()
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    monkeypatch.setattr(playback, "load_portaudio", lambda: fake)
    return fake


def quiet_scene(server: DpkitServer, play_audio: bool | None = None) -> Scene:
    return Scene(
        server.api_key(),
        requested_media_devices={},
        required_media_devices={},
        play_audio=play_audio,
    )


async def test_scenes_ask_portaudio_about_the_speaker_once_per_process(
    server: DpkitServer, portaudio: FakePortAudio
) -> None:
    """Two connects that leave play_audio open query the devices once in all; both know."""
    for _ in range(2):
        scene = quiet_scene(server)
        await scene.connect()
        assert (scene.play_audio, scene.playback) == (False, None)
        await scene.disconnect()
    assert portaudio.queries == 1


async def test_a_scene_told_whether_to_play_never_asks(
    server: DpkitServer, portaudio: FakePortAudio
) -> None:
    """play_audio=False: connect() does not query PortAudio at all."""
    scene = quiet_scene(server, play_audio=False)
    await scene.connect()
    await scene.disconnect()
    assert portaudio.queries == 0
    assert known_output_device() is None


def test_a_rescan_makes_the_answer_stale(portaudio: FakePortAudio) -> None:
    """The answer is kept until PortAudio rescans its devices; then it is asked again."""
    assert [has_output_device(), has_output_device(), known_output_device()] == [False] * 3
    assert portaudio.queries == 1
    rescan_audio()
    assert portaudio.restarts == 1
    assert known_output_device() is None
    assert not has_output_device()
    assert portaudio.queries == 2
