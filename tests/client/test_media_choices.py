"""Requested and required devices with the browser's fallback order, and consent in a Scene."""

from __future__ import annotations

import pytest

from dpkit import MediaDevices, NoUserMedia, Scene
from dpkit.client.consent import ConsentGate, Decision, MemoryConsentStore
from dpkit.client.devices import (
    DeviceError,
    DeviceFailure,
    UserMedia,
    acquire_user_media,
)
from dpkit.media.synthetic import TestPatternVideoTrack, ToneAudioTrack
from dpkit.server import DpkitServer

MIC = MediaDevices(microphone=True)
CAM = MediaDevices(camera=True)
BOTH = MediaDevices(microphone=True, camera=True)
NONE = MediaDevices()


class Machine:
    """A device boundary no test machine can reach on demand (a fake, named as such): each
    device grants, is denied, or fails to open, and every open is recorded."""

    def __init__(self, microphone: str = "grant", camera: str = "grant") -> None:
        self.behaviour = {"microphone": microphone, "camera": camera}
        self.opened: list[MediaDevices] = []

    async def open(self, devices: MediaDevices) -> UserMedia:
        self.opened.append(devices)
        for name in ("microphone", "camera"):
            if getattr(devices, name) and self.behaviour[name] != "grant":
                failure = (
                    DeviceFailure.NOT_PERMITTED
                    if self.behaviour[name] == "deny"
                    else DeviceFailure.NOT_USABLE
                )
                raise DeviceError(failure, f"{name} {self.behaviour[name]}")
        return UserMedia(
            ToneAudioTrack() if devices.microphone else None,
            TestPatternVideoTrack(64, 48) if devices.camera else None,
        )

    needs_consent = False


def got(media: UserMedia) -> MediaDevices:
    media.stop()
    return MediaDevices(media.microphone is not None, media.camera is not None)


PERMITTED = "the user microphone/camera were not permitted by the user"
UNUSABLE = "the user microphone/camera failed to be usable"


@pytest.mark.parametrize(
    ("requested", "required", "mic", "cam", "expected", "opens"),
    [
        # none: nothing is opened, nothing asked
        (NONE, NONE, "deny", "deny", NONE, []),
        # requested only: what is granted, else nothing
        (MIC, NONE, "grant", "grant", MIC, [MIC]),
        (MIC, NONE, "deny", "grant", NONE, [MIC]),
        (BOTH, NONE, "grant", "deny", MIC, [BOTH, MIC]),  # fallback: the microphone alone
        (BOTH, NONE, "deny", "deny", NONE, [BOTH, MIC]),  # fallback failed: on without media
        (CAM, NONE, "grant", "fail", NONE, [CAM]),
        # required only (required is always requested too): no fallback
        (NONE, MIC, "grant", "grant", MIC, [MIC]),
        (NONE, MIC, "deny", "grant", PERMITTED, [MIC]),
        (NONE, MIC, "fail", "grant", UNUSABLE, [MIC]),
        # both
        (BOTH, MIC, "grant", "grant", BOTH, [BOTH]),
        (BOTH, MIC, "grant", "deny", MIC, [BOTH, MIC]),  # fallback: the required set alone
        (BOTH, MIC, "deny", "grant", PERMITTED, [BOTH, MIC]),
        (BOTH, BOTH, "grant", "deny", PERMITTED, [BOTH]),  # required == requested: fail at once
        (BOTH, CAM, "deny", "grant", CAM, [BOTH, CAM]),
        (BOTH, CAM, "grant", "fail", UNUSABLE, [BOTH, CAM]),
    ],
)
async def test_requested_and_required_rows(
    requested: MediaDevices,
    required: MediaDevices,
    mic: str,
    cam: str,
    expected: MediaDevices | str,
    opens: list[MediaDevices],
) -> None:
    """Each row of the table, down to the noUserMedia message, with the opens in order."""
    machine = Machine(mic, cam)
    if isinstance(expected, str):
        with pytest.raises(NoUserMedia) as caught:
            await acquire_user_media(requested, required, machine)
        assert caught.value.message == expected
        assert isinstance(caught.value.__cause__, DeviceError)
    else:
        assert got(await acquire_user_media(requested, required, machine)) == expected
    assert machine.opened == opens


class RealMachine(Machine):
    needs_consent = True  # the Scene must ask before opening these


class Refuser:
    """A fake at the user-interaction boundary: the user refuses, and every ask is counted."""

    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self, origin: str, devices: MediaDevices) -> MediaDevices:
        self.asked += 1
        return NONE


async def test_three_refusals_block_the_fourth_connect_without_asking(
    server: DpkitServer,
) -> None:
    """A required microphone refused three times is blocked: connect fails at once, with the
    command that resets it, and no socket is ever opened."""
    store = MemoryConsentStore()
    user = Refuser()
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=RealMachine(),
        consent=ConsentGate(store, user),
    )
    for _ in range(3):
        with pytest.raises(NoUserMedia):
            await scene.connect()
    assert user.asked == 3
    with pytest.raises(NoUserMedia) as caught:
        await scene.connect()
    assert user.asked == 3
    origin = server.url
    # The seed's message, and the way out in the error's own advice, not only in its cause.
    assert caught.value.message == PERMITTED
    assert f"dpkit permissions reset --origin {origin} --device microphone" in (caught.value.advice)
    assert "dpkit permissions reset --origin" in str(caught.value.__cause__)
    assert store.get(origin, "microphone").decision is Decision.BLOCKED
    assert list(server.state.ended) == []
    store.reset(origin)
    allowed = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=RealMachine(),
        consent=ConsentGate(store, allow),
    )
    await allowed.connect()
    assert allowed.is_microphone_active()
    await allowed.disconnect()


async def allow(origin: str, devices: MediaDevices) -> MediaDevices:
    """A fake at the user-interaction boundary: the user allows whatever is asked."""
    return devices


async def test_a_refusal_advises_answering_yes_and_counts_what_is_left(
    server: DpkitServer,
) -> None:
    """Refused once: the advice says it was declined, how to allow it, and how many refusals
    block it."""
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=RealMachine(),
        consent=ConsentGate(MemoryConsentStore(), Refuser()),
    )
    with pytest.raises(NoUserMedia) as caught:
        await scene.connect()
    assert caught.value.message == PERMITTED
    assert "declined" in caught.value.advice
    assert "answer y" in caught.value.advice
    assert "1 of 3 refusals" in caught.value.advice


async def test_nobody_to_ask_advises_a_terminal_or_a_prompt(server: DpkitServer) -> None:
    """No prompt (no terminal) and nothing remembered: the advice says nobody was asked."""
    store = MemoryConsentStore()
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={"microphone": True},
        devices=RealMachine(),
        consent=ConsentGate(store, None),
    )
    with pytest.raises(NoUserMedia) as caught:
        await scene.connect()
    assert caught.value.message == PERMITTED
    assert "Nobody was asked" in caught.value.advice
    assert "terminal" in caught.value.advice
    assert store.list() == []  # nobody refused, so nothing is counted
