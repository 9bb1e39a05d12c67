"""Turning the user's camera and microphone on and off during a session, as the browser does."""

from __future__ import annotations

import asyncio

import pytest

from dpkit import Scene, SyntheticDevices
from dpkit.server import DpkitServer
from tests.support import UNIT, until


async def test_camera_and_microphone_toggle_mid_session(server: DpkitServer) -> None:
    """State, events and the server's view agree, and no new offer is sent."""
    scene = Scene(
        server.api_key(),
        requested_media_devices={},
        required_media_devices={},
        devices=SyntheticDevices(),
    )
    changes: list[tuple[str, bool]] = []
    scene.on_camera_active.add_listener(lambda on: changes.append(("camera", on)))
    scene.on_microphone_active.add_listener(lambda on: changes.append(("microphone", on)))
    session_id = await scene.connect()
    session = server.state.sessions[session_id]
    await until(lambda: session.info.user_camera == [False])
    assert (scene.is_camera_active(), scene.is_microphone_active()) == (False, False)

    await scene.set_media_device_active(camera=True, microphone=True)
    assert (scene.is_camera_active(), scene.is_microphone_active()) == (True, True)
    await until(lambda: session.info.user_camera == [False, True])
    await until(lambda: session.received_frames.get("video", 0) > 10)
    await until(lambda: session.received_frames.get("audio", 0) > 25)

    await scene.set_media_device_active(camera=False)
    assert not scene.is_camera_active()
    await until(lambda: session.info.user_camera == [False, True, False])
    await asyncio.sleep(0.3 * UNIT)  # frames already on the wire may still land
    stopped_at = session.received_frames["video"]
    await asyncio.sleep(0.7 * UNIT)
    assert session.received_frames["video"] <= stopped_at + 1

    await scene.set_media_device_active(camera=True)
    await until(lambda: session.received_frames["video"] > stopped_at + 10)
    # At connect both are reported (off), then each change, with one argument as in the Web SDK.
    assert changes == [
        ("microphone", False),
        ("camera", False),
        ("microphone", True),
        ("camera", True),
        ("camera", False),
        ("camera", True),
    ]
    assert session.info.offers == 1
    await scene.disconnect()


async def test_toggling_needs_a_session(server: DpkitServer) -> None:
    """set_media_device_active before connect says the scene is not connected."""
    from dpkit.errors import InvalidStateError

    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    with pytest.raises(InvalidStateError, match="scene is not connected"):
        await scene.set_media_device_active(camera=True)
