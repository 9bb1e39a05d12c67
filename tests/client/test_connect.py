"""A Python client connecting to a real dpkit server over loopback: states, media, endings."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from dpkit import (
    ConnectionStateData,
    ConnectionStateName,
    NoScene,
    RetryOptions,
    Scene,
    ServerConnectionFailed,
)
from dpkit.media.levels import audio_frame_to_mono, rms_dbfs
from dpkit.server import DpkitServer
from tests.support import UNIT, ServerFactory, until

NO_DEVICES: dict[str, bool] = {}


def scene_for(server: DpkitServer) -> Scene:
    return Scene(
        server.api_key(), requested_media_devices=NO_DEVICES, required_media_devices=NO_DEVICES
    )


def record_states(scene: Scene) -> list[ConnectionStateData]:
    seen: list[ConnectionStateData] = []
    scene.connection_state.on_connection_state_updated.add_listener(seen.append)
    return seen


async def test_connect_passes_through_the_four_states_in_order(server: DpkitServer) -> None:
    """connect() fires each state once, in order, with steps 1-4, 25-100 % and total 5."""
    scene = scene_for(server)
    seen = record_states(scene)
    session_id = await scene.connect()
    try:
        assert [(d.name, d.current_step, d.percentage_loaded, d.total_steps) for d in seen] == [
            (ConnectionStateName.SEARCHING_FOR_DIGITAL_PERSON, 1, 25, 5),
            (ConnectionStateName.DOWNLOADING_ASSETS, 2, 50, 5),
            (ConnectionStateName.CONNECTING_TO_DIGITAL_PERSON, 3, 75, 5),
            (ConnectionStateName.CONNECTED, 4, 100, 5),
        ]
        assert scene.is_connected()
        assert list(server.state.sessions) == [session_id]
    finally:
        await scene.disconnect()


async def test_async_iterator_sees_the_same_changes_as_listeners(server: DpkitServer) -> None:
    """``async for`` over the connection state yields exactly what the listeners get."""
    scene = scene_for(server)
    seen = record_states(scene)
    iterated: list[ConnectionStateData] = []

    async def follow() -> None:
        async for data in scene.connection_state:
            iterated.append(data)
            if data.name is ConnectionStateName.DISCONNECTED:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    await scene.connect()
    await scene.disconnect()
    await asyncio.wait_for(follower, 5 * UNIT)
    assert iterated == seen
    assert seen[-1].name is ConnectionStateName.DISCONNECTED


async def test_removed_listener_is_not_called(server: DpkitServer) -> None:
    """A listener removed before connect() hears nothing."""
    scene = scene_for(server)
    heard: list[ConnectionStateData] = []
    scene.connection_state.on_connection_state_updated.add_listener(heard.append)
    scene.connection_state.on_connection_state_updated.remove_listener(heard.append)
    await scene.connect()
    await scene.disconnect()
    assert heard == []


async def test_client_receives_persona_video_of_the_configured_size_and_audio(
    server: DpkitServer,
) -> None:
    """Decoded persona frames have the persona's size; its audio is real, non-silent sound."""
    scene = scene_for(server)
    await scene.connect()
    try:
        sizes = []
        async for frame in scene.video_frames():
            sizes.append((frame.width, frame.height))
            if len(sizes) == 5:
                break
        samples = []
        async for audio in scene.audio_frames():
            samples.append(audio_frame_to_mono(audio))
            if len(samples) == 25:
                break
        assert sizes == [(320, 240)] * 5
        # Room tone (-45 dBFS) and the start of the greeting (eSpeak's speech peaks near -15):
        # sound, neither silence nor clipping.
        level = rms_dbfs(np.concatenate(samples[5:]))
        assert -70 < level < -10
    finally:
        await scene.disconnect()


async def test_persona_video_moves(server: DpkitServer) -> None:
    """Successive persona frames differ: the face is animated, not a still."""
    scene = scene_for(server)
    await scene.connect()
    try:
        frames: list[av.VideoFrame] = []
        async for frame in scene.video_frames():
            frames.append(frame)
            if len(frames) == 40:
                break
        first = frames[0].to_ndarray(format="gray").astype(int)
        changed = [np.abs(f.to_ndarray(format="gray").astype(int) - first).mean() for f in frames]
        assert max(changed) > 0.5
    finally:
        await scene.disconnect()


async def test_disconnect_resets_to_disconnected_and_frees_the_persona(
    server: DpkitServer,
) -> None:
    """disconnect() resets the state and fires no disconnect event (as the Web SDK); the server
    records reason normal and frees the person."""
    scene = scene_for(server)
    seen = record_states(scene)
    reasons: list[tuple[str, str]] = []
    scene.on_disconnected_event.add_listener(lambda _s, sid, reason: reasons.append((sid, reason)))
    session_id = await scene.connect()
    await scene.disconnect()
    assert seen[-1] == ConnectionStateData.of(ConnectionStateName.DISCONNECTED)
    assert not scene.is_connected()
    assert reasons == []
    await until(lambda: server.state.pool.in_use == 0)
    assert [(info.session_id, info.ending) for info in server.state.ended] == [
        (session_id, "normal")
    ]


async def test_server_side_end_fires_the_disconnect_event_with_its_reason(
    server: DpkitServer,
) -> None:
    """The server ending a session reaches the client's disconnect listeners with the reason."""
    scene = scene_for(server)
    seen = record_states(scene)
    ended: asyncio.Queue[tuple[Scene, str, str]] = asyncio.Queue()
    scene.on_disconnected_event.add_listener(lambda *args: ended.put_nowait(args))
    session_id = await scene.connect()
    await server.state.sessions[session_id].end("conversationEnded")
    who, sid, reason = await asyncio.wait_for(ended.get(), 5 * UNIT)
    assert (who, sid, reason) == (scene, session_id, "conversationEnded")
    assert seen[-1].name is ConnectionStateName.DISCONNECTED
    assert not scene.is_connected()
    await scene.close()


async def test_full_pool_gives_no_scene_after_the_configured_attempts(
    start_server: ServerFactory,
) -> None:
    """With every Digital Person busy, connect() tries max_retries times, then raises noScene."""
    server = await start_server(capacity=1, queue_max_length=0)
    first = scene_for(server)
    await first.connect()
    second = scene_for(server)
    seen = record_states(second)
    try:
        with pytest.raises(NoScene) as caught:
            await second.connect(retry_options=RetryOptions(max_retries=3, delay_ms=20))
        assert caught.value.name == "noScene"
        assert caught.value.message == "websocket closed: noScene"
        assert [info.ending for info in server.state.ended] == ["noScene"] * 3
        # A failed connect leaves the state where it was; retries do not re-fire it.
        assert [d.name for d in seen] == [ConnectionStateName.SEARCHING_FOR_DIGITAL_PERSON]
    finally:
        await first.disconnect()


async def test_no_scene_is_retried_until_a_person_frees_up(start_server: ServerFactory) -> None:
    """A busy server's noScene is retried, and connect() succeeds once the person is free."""
    server = await start_server(capacity=1, queue_max_length=0)
    first = scene_for(server)
    await first.connect()
    second = scene_for(server)

    async def free_later() -> None:
        await until(lambda: any(i.ending == "noScene" for i in server.state.ended))
        await first.disconnect()

    freeing = asyncio.create_task(free_later())
    session_id = await second.connect(retry_options=RetryOptions(max_retries=100, delay_ms=20))
    await freeing
    assert second.is_connected()
    assert list(server.state.sessions) == [session_id]
    await second.disconnect()


async def test_no_server_gives_server_connection_failed(server: DpkitServer) -> None:
    """Nothing listening at the API key's token endpoint: serverConnectionFailed."""
    key = server.api_key()
    await server.stop()
    scene = Scene(key, requested_media_devices=NO_DEVICES, required_media_devices=NO_DEVICES)
    with pytest.raises(ServerConnectionFailed, match="cannot reach the token endpoint"):
        await scene.connect()


async def test_no_socket_server_gives_server_connection_failed(server: DpkitServer) -> None:
    """A socket URL where nothing listens: serverConnectionFailed naming the URL."""
    url = server.url.replace("http://", "ws://") + "/session"
    await server.stop()
    scene = Scene(requested_media_devices=NO_DEVICES, required_media_devices=NO_DEVICES)
    with pytest.raises(ServerConnectionFailed, match="cannot open the session socket"):
        await scene.connect(url, "token")


@pytest.mark.parametrize(
    ("api_key", "message"),
    [
        ("not base64 at all!", "Invalid API key: the API key is not base64-encoded JSON"),
        ("eyJmb28iOiAxfQ==", "Invalid API key: the API key has no http(s) 'authServer'"),
    ],
)
async def test_malformed_api_key_gives_server_connection_failed(api_key: str, message: str) -> None:
    """An API key that is not base64 JSON with authServer fails before any request."""
    scene = Scene(api_key, requested_media_devices=NO_DEVICES, required_media_devices=NO_DEVICES)
    with pytest.raises(ServerConnectionFailed) as caught:
        await scene.connect()
    assert caught.value.name == "serverConnectionFailed"
    assert caught.value.message.startswith(message)


async def test_unknown_api_key_is_refused_by_the_token_endpoint(server: DpkitServer) -> None:
    """A well-formed key this server never issued: serverConnectionFailed saying so."""
    from dpkit.apikey import ApiKey, decode_api_key

    real = decode_api_key(server.api_key())
    forged = ApiKey(real.auth_server, real.key_id, "wrong-secret").encode()
    scene = Scene(forged, requested_media_devices=NO_DEVICES, required_media_devices=NO_DEVICES)
    with pytest.raises(ServerConnectionFailed, match="this server does not know it"):
        await scene.connect()
    assert server.state.live == set()


async def test_bad_token_is_refused_on_the_socket(server: DpkitServer) -> None:
    """A forged access token: serverConnectionFailed, and no session socket is opened."""
    url = server.url.replace("http://", "ws://") + "/session"
    scene = Scene(requested_media_devices=NO_DEVICES, required_media_devices=NO_DEVICES)
    with pytest.raises(ServerConnectionFailed, match="refused the access token"):
        await scene.connect(url, "eyJ.forged.token")
    assert list(server.state.ended) == []


async def test_connect_twice_is_an_invalid_state(server: DpkitServer) -> None:
    """A second connect() on a connected scene says the scene is connected."""
    from dpkit.errors import InvalidStateError

    scene = scene_for(server)
    await scene.connect()
    try:
        with pytest.raises(InvalidStateError, match="scene is connected"):
            await scene.connect()
    finally:
        await scene.disconnect()


async def test_two_consumers_each_get_every_persona_frame(server: DpkitServer) -> None:
    """video_frames() twice at once: both see the same frames (the tracks are relayed)."""
    scene = scene_for(server)
    await scene.connect()

    async def take(count: int) -> list[int | None]:
        seen: list[int | None] = []
        async for frame in scene.video_frames():
            seen.append(frame.pts)
            if len(seen) == count:
                return seen
        return seen

    try:
        first, second = await asyncio.gather(take(8), take(8))
        assert len(first) == len(second) == 8
        assert set(first) & set(second)
    finally:
        await scene.disconnect()
