"""What one persona costs per frame: face rendering cold and warm, and audio.

A cold frame (a pose not in the cache) is timed two ways: drawn in RGB and converted by swscale,
as the track once did, and composed straight in yuv420p by ``render_yuv``, as it does now.

Run with ``python benchmarks/render_cost.py``; it takes a few seconds and prints milliseconds
per frame and ratios, asserting nothing. Tracks run on a clock that never sleeps, so the numbers
are pure CPU time, and "share of a core" is that time times the frame rate.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

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


def _per_call_ms(action: Callable[[], object], count: int, rounds: int = 5) -> float:
    """Milliseconds per call, the best of ``rounds`` rounds: other work on the machine only adds."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count // rounds):
            action()
        best = min(best, (time.perf_counter() - started) * 1000 / (count // rounds))
    return best


async def _per_recv_ms(recv: Callable[[], Awaitable[object]], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await recv()
    return (time.perf_counter() - started) * 1000 / count


@dataclass(frozen=True)
class _FrameCosts:
    """Milliseconds: renderer set-up, head variants, and per frame cold and warm on each path."""

    setup: float
    rgb_variants: float  # the 32 RGB eye/mouth heads, drawn on first use
    yuv_variants: float  # the same as YUV sprites, with the YUV backdrop
    rgb_cold: float  # draw + RGB->YUV (swscale) + VideoFrame: the path before render_yuv
    yuv_cold: float  # draw_yuv + VideoFrame: a cache miss on the track's path
    rgb_draw: float  # draw + RGB->YUV alone
    yuv_draw: float  # draw_yuv alone
    rgb_warm: float
    yuv_warm: float


def _timed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _frame_costs() -> _FrameCosts:
    """Set up a renderer, warm its head variants, and time frames on a cache miss and on a hit."""
    started = time.perf_counter()
    face = FaceRenderer(WIDTH, HEIGHT)
    setup = (time.perf_counter() - started) * 1000
    convert = Yuv420pConverter()
    # Extreme, odd and even offsets at 640x480 (the sway range is 6 x 3 px): odd offsets use the
    # other chroma sprites.
    poses = [
        FacePose(dx, dy, eyes, mouth)
        for dx in (-6, -3, 0, 1, 6)
        for dy in (-3, 0, 2)
        for eyes in range(EYE_LEVELS)
        for mouth in range(MOUTH_LEVELS)
    ]
    levels = poses[: EYE_LEVELS * MOUTH_LEVELS]
    # Draw the 32 eye/mouth variants once on each path; they are never evicted.
    rgb_variants = _timed_ms(lambda: [face.draw(pose) for pose in levels])
    yuv_variants = _timed_ms(lambda: [face.draw_yuv(pose) for pose in levels])

    def cold(render: Callable[[FacePose], npt.NDArray[np.uint8]]) -> Callable[[], None]:
        index = 0

        def frame() -> None:
            nonlocal index
            face.frame_cache.clear()
            av.VideoFrame.from_ndarray(render(poses[index % len(poses)]), format="yuv420p")
            index += 1

        return frame

    rgb_cold = _per_call_ms(cold(lambda pose: face.render_pose(pose, convert)), 600)
    yuv_cold = _per_call_ms(cold(face.render_yuv), 600)
    cycle = iter(poses * 20)
    rgb_draw = _per_call_ms(lambda: convert(face.draw(next(cycle))), 600)
    yuv_draw = _per_call_ms(lambda: face.draw_yuv(next(cycle)), 600)
    pose = poses[0]
    face.render_pose(pose, convert)
    rgb_warm = _per_call_ms(
        lambda: av.VideoFrame.from_ndarray(face.render_pose(pose, convert), format="yuv420p"),
        2000,
    )
    face.render_yuv(pose)
    yuv_warm = _per_call_ms(
        lambda: av.VideoFrame.from_ndarray(face.render_yuv(pose), format="yuv420p"), 2000
    )
    return _FrameCosts(
        setup,
        rgb_variants,
        yuv_variants,
        rgb_cold,
        yuv_cold,
        rgb_draw,
        yuv_draw,
        rgb_warm,
        yuv_warm,
    )


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
    costs = _frame_costs()
    print(f"face {WIDTH}x{HEIGHT}: renderer setup {costs.setup:.1f} ms (once per renderer)")
    print(
        f"  32 head variants, first use: RGB {costs.rgb_variants:.0f} ms, "
        f"YUV sprites {costs.yuv_variants:.0f} ms (once per renderer)"
    )
    print(f"  cold frame, draw + RGB->YUV + VideoFrame: {costs.rgb_cold:.3f} ms")
    print(f"  cold frame, draw_yuv + VideoFrame:       {costs.yuv_cold:.3f} ms")
    print(f"  cold RGB path / cold YUV path: {costs.rgb_cold / costs.yuv_cold:.1f}x")
    print(
        f"  of which drawing: draw + RGB->YUV {costs.rgb_draw:.3f} ms, "
        f"draw_yuv {costs.yuv_draw:.3f} ms ({costs.rgb_draw / costs.yuv_draw:.1f}x)"
    )
    print(
        f"  warm frame, cache hit + VideoFrame: {costs.yuv_warm:.3f} ms (YUV), "
        f"{costs.rgb_warm:.3f} ms (converted RGB)"
    )
    print(f"  cold / warm (YUV): {costs.yuv_cold / costs.yuv_warm:.1f}x")

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
    print(f"video warm frame / audio frame: {costs.yuv_warm / audio:.1f}x")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    asyncio.run(main())
