"""The persona's frames for the application: bounded per reader, current, and counted when dropped.

The slow-reader test runs a real ``dpkit serve`` in its own process, so the resident memory it
measures is the client's alone.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import av
import pytest

from dpkit import ConfigurationError, FrameStream, InvalidStateError, NoDevices, Scene
from dpkit.client.frames import FrameCounts
from dpkit.server import DpkitServer
from tests.served import served
from tests.support import UNIT, until

SLOW_READ_S = 1.0 * UNIT
"""How long the slow reader spends on each frame it reads."""
RUN_S = 20.0 * UNIT
SETTLED_S = 5.0 * UNIT
"""The memory sample the last one is compared with: taken once the session has settled."""
RSS_GROWTH_LIMIT_KIB = 30 * 1024
"""How much resident memory may grow from SETTLED_S to RUN_S. Keeping every frame of a 640x480
15 fps persona for a reader that reads one a second grows it by about 7 MB a second (over 100
MB in this window); allocator noise is a few MB."""
CURRENT_WITHIN_S = 0.5
"""How far behind the newest delivered frame the slow reader's frame may be."""


def rss_kib() -> int:
    """This process's resident memory now (KiB), from /proc."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def quiet_scene(api_key: str) -> Scene:
    return Scene(
        api_key,
        requested_media_devices={},
        required_media_devices={},
        devices=NoDevices(),
        play_audio=False,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.timeout(int(40 + 40 * UNIT))
async def test_a_slow_reader_keeps_memory_flat_and_reads_current_frames(tmp_path: Path) -> None:
    """Reading video and audio once a second for 20 s: RSS stays flat, each frame read is within
    0.5 s of the newest delivered, dropped frames are counted, and a stream never read holds no
    more than its buffer."""
    persona = {"video_width": 640, "video_height": 480, "video_fps": 15}
    async with served(tmp_path / "served", persona=persona) as server:
        async with quiet_scene(server.api_key()) as scene:
            await scene.connect()
            newest: dict[str, float] = {}

            async def follow(
                stream: FrameStream[av.VideoFrame] | FrameStream[av.AudioFrame],
            ) -> None:
                async for frame in stream:
                    newest[frame.__class__.__name__] = float(frame.time or 0.0)

            # A reader that keeps up: what "the newest delivered" frame is at any moment.
            followers = [
                asyncio.create_task(follow(scene.video_frames())),
                asyncio.create_task(follow(scene.audio_frames())),
            ]
            # Both followers have a frame before the slow reader compares with them.
            await until(lambda: len(newest) == 2)
            forgotten = scene.video_frames()  # opened, never read
            video, audio = scene.video_frames(), scene.audio_frames()
            loop = asyncio.get_running_loop()
            started = loop.time()
            samples: list[tuple[float, int, int]] = []
            lags: list[tuple[float, float, float]] = []
            try:
                while loop.time() - started < RUN_S:
                    frame = await anext(video)
                    sound = await anext(audio)
                    lags.append(
                        (
                            loop.time() - started,
                            newest["VideoFrame"] - float(frame.time or 0.0),
                            newest["AudioFrame"] - float(sound.time or 0.0),
                        )
                    )
                    samples.append((loop.time() - started, rss_kib(), video.dropped))
                    await asyncio.sleep(SLOW_READ_S)  # the slow reader's own work
            finally:
                for follower in followers:
                    follower.cancel()
                await asyncio.gather(*followers, return_exceptions=True)

            settled = next(sample for sample in samples if sample[0] >= SETTLED_S)
            last = samples[-1]
            assert last[1] - settled[1] < RSS_GROWTH_LIMIT_KIB, samples
            # Compared once settled, as memory is: a stall of the whole pipeline in the first
            # second (a loaded machine) delivers a burst that no buffer policy can make current.
            settled_lags = [lag for at, *pair in lags if at >= SETTLED_S for lag in pair]
            assert settled_lags
            assert all(lag < CURRENT_WITHIN_S for lag in settled_lags), lags
            assert last[2] > settled[2] > 0  # the slow video reader keeps dropping, counted
            assert audio.dropped > 0
            assert forgotten.dropped > 0
            assert len(forgotten._frames) <= forgotten.capacity
            assert scene.dropped_video_frames >= video.dropped + forgotten.dropped
            assert scene.dropped_audio_frames >= audio.dropped
            assert scene.video_counts.received > last[0] * 10  # about 15 a second arrived
        # Leaving the block disconnected the scene: every stream has ended.
        assert forgotten.ended
        assert video.ended
        assert [frame async for frame in forgotten] == []


async def test_streams_end_when_the_scene_disconnects(server: DpkitServer) -> None:
    """A reader waiting for a frame is released by disconnect(): its async for just ends."""
    scene = quiet_scene(server.api_key())
    await scene.connect()
    stream = scene.video_frames()
    first = await anext(stream)
    assert isinstance(first, av.VideoFrame)

    async def read_all() -> int:
        return len([frame async for frame in stream])

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0)
    await scene.disconnect()
    async with asyncio.timeout(5 * UNIT):
        await reader
    assert stream.ended
    with pytest.raises(InvalidStateError, match="scene is not connected"):
        scene.video_frames()


async def test_frames_need_a_connected_scene() -> None:
    """Before connect there is no persona media: the Web SDK user's mistake is named."""
    scene = quiet_scene("unused")
    with pytest.raises(InvalidStateError, match="no persona video: scene is not connected"):
        scene.video_frames()
    with pytest.raises(InvalidStateError, match="no persona audio: scene is not connected"):
        scene.audio_frames()


async def test_a_stream_keeps_only_the_newest_frames_and_counts_the_rest() -> None:
    """Pushing more than the buffer holds keeps the newest, in order, and counts the dropped."""
    counts = FrameCounts()
    stream: FrameStream[av.AudioFrame] = FrameStream(3, counts)
    frames = [av.AudioFrame(format="s16", layout="mono", samples=960) for _ in range(10)]
    for index, frame in enumerate(frames):
        frame.pts = index
        stream._push(frame)
    assert [(await anext(stream)).pts for _ in range(3)] == [7, 8, 9]
    assert (stream.dropped, counts.dropped, stream.delivered) == (7, 7, 3)
    stream._push(frames[0])
    stream.close()
    assert [frame async for frame in stream] == []  # closing let go of the buffered frame


@pytest.mark.parametrize("buffer", [0, -1, 501])
async def test_a_buffer_out_of_bounds_is_refused(server: DpkitServer, buffer: int) -> None:
    """A stream of no frames, or of more than MAX_BUFFER, is a named configuration error."""
    scene = quiet_scene(server.api_key())
    await scene.connect()
    try:
        with pytest.raises(ConfigurationError, match="MAX_BUFFER"):
            scene.video_frames(buffer=buffer)
    finally:
        await scene.disconnect()
