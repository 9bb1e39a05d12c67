"""What one persona costs per frame: face rendering and conversion cold and warm, and audio.

Run with ``python benchmarks/render_cost.py``; it takes a few seconds and prints milliseconds
per frame and ratios, asserting nothing. Tracks run on a clock that never sleeps, so the numbers
are pure CPU time, and "share of a core" is that time times the frame rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import av
import numpy as np

from dpkit.media.clock import MediaClock
from dpkit.server.persona_media.audio import PersonaAudioTrack
from dpkit.server.persona_media.face import EYE_LEVELS, MOUTH_LEVELS, FacePose, FaceRenderer
from dpkit.server.persona_media.video import PersonaVideoTrack, Yuv420pConverter

WIDTH, HEIGHT, FPS = 640, 480, 15.0
SECONDS = 60  # of simulated stream time per video scenario


class _Instant:
    """A clock that moves only by the time it is asked to sleep: no waiting."""

    def __init__(self) -> None:
        self.current = 0.0

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.current += seconds

    def clock(self, rate: int, period: float) -> MediaClock:
        return MediaClock(rate, period, now=self.now, sleep=self.sleep)


def _per_call_ms(action: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - started) * 1000 / count


async def _per_recv_ms(recv: Callable[[], Awaitable[object]], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await recv()
    return (time.perf_counter() - started) * 1000 / count


def _frame_costs() -> tuple[float, float, float]:
    """Milliseconds to set up a renderer, and per frame on a cache miss and on a hit."""
    started = time.perf_counter()
    renderer = FaceRenderer(WIDTH, HEIGHT)
    setup = (time.perf_counter() - started) * 1000
    convert = Yuv420pConverter()
    poses = [
        FacePose(dx, dy, eyes, mouth)
        for dx in (-4, 0, 4)
        for dy in (-2, 0, 2)
        for eyes in range(EYE_LEVELS)
        for mouth in range(MOUTH_LEVELS)
    ]
    for pose in poses:  # draw the 32 eye/mouth variants once; they are never evicted
        renderer.draw(pose)

    def cold() -> None:
        renderer.frame_cache.clear()
        pixels = renderer.render_pose(poses[cold_index[0] % len(poses)], convert)
        av.VideoFrame.from_ndarray(pixels, format="yuv420p")
        cold_index[0] += 1

    cold_index = [0]
    cold_ms = _per_call_ms(cold, 300)
    pose = poses[0]
    renderer.render_pose(pose, convert)
    warm_ms = _per_call_ms(
        lambda: av.VideoFrame.from_ndarray(renderer.render_pose(pose, convert), format="yuv420p"),
        2000,
    )
    return setup, cold_ms, warm_ms


async def _track_cost(mouth: Callable[[], float] | None) -> tuple[float, float, int]:
    """Milliseconds per recv() over a minute of stream, the cache hit rate and distinct frames."""
    renderer = FaceRenderer(WIDTH, HEIGHT)
    track = PersonaVideoTrack(
        WIDTH, HEIGHT, FPS, renderer, mouth, clock=_Instant().clock(90000, 1 / FPS)
    )
    ms = await _per_recv_ms(track.recv, int(SECONDS * FPS))
    cache = renderer.frame_cache
    return ms, cache.hits / (cache.hits + cache.misses), len(cache)


async def _audio_cost() -> float:
    track = PersonaAudioTrack(clock=_Instant().clock(48000, 0.02))
    await track.recv()  # the room tone is synthesised on first use of a seed
    return await _per_recv_ms(track.recv, 3000)


async def main() -> None:
    setup, cold, warm = _frame_costs()
    print(f"face {WIDTH}x{HEIGHT}: renderer setup {setup:.1f} ms (once per renderer)")
    print(f"  cold frame (draw + RGB->YUV + VideoFrame): {cold:.3f} ms")
    print(f"  warm frame (cache hit + VideoFrame):       {warm:.3f} ms")
    print(f"  cold / warm: {cold / warm:.1f}x")

    rng = np.random.default_rng(0)
    for label, mouth in (("idle", None), ("talking", lambda: float(rng.random()))):
        ms, hit_rate, frames = await _track_cost(mouth)
        share = ms * FPS / 1000
        print(
            f"  track, {label:7} {SECONDS} s at {FPS:g} fps: {ms:.3f} ms/frame, "
            f"hit rate {hit_rate:.0%}, {frames} cached frames, {share:.2%} of a core"
        )

    audio = await _audio_cost()
    print(f"audio 20 ms frame: {audio:.3f} ms, {audio * 50 / 1000:.2%} of a core")
    print(f"video warm frame / audio frame: {warm / audio:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
