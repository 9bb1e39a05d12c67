"""The Digital Person's video: the animated face as an aiortc video track.

Frames go out as YUV 4:2:0, the layout the VP8 and H.264 encoders want; handing them RGB would
make the encoder convert every frame. The renderer composes its frames straight in yuv420p
(:meth:`FaceRenderer.render_yuv`) and caches them by pose, so a new pose costs a composition and
a repeated one a copy into a fresh ``av.VideoFrame``; no frame is converted from RGB.

A fresh frame per ``recv()`` matters: aiortc encodes in a worker thread, sets ``pict_type`` on
the frame to force keyframes, and PyAV's encoder rewrites the frame's ``pts`` and ``time_base``
into the codec's own time base, so one frame object must never be handed out twice.
``VideoFrame.from_ndarray`` copies the pixels, which leaves the cached array untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.reformatter import VideoReformatter

from dpkit.media.clock import MediaClock
from dpkit.server.persona_media.face import FaceRenderer

VIDEO_CLOCK_RATE = 90000
MAX_FPS = 60.0


@dataclass(frozen=True)
class Yuv420pConverter:
    """Converts RGB frames to PyAV's packed YUV 4:2:0 array (``height * 3 / 2`` rows).

    The track does not use it (the renderer composes yuv420p itself); it is the swscale
    reference those frames are tested and benchmarked against, and serves anyone holding RGB.
    It keeps its own swscale context: ``VideoFrame.reformat`` builds a new one for every new
    frame, which doubles the cost. All instances compare equal, so users sharing a renderer
    share its cache of converted frames while each converts with its own context.
    """

    _reformatter: VideoReformatter = field(
        default_factory=VideoReformatter, compare=False, repr=False
    )

    def __call__(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        yuv = self._reformatter.reformat(frame, format="yuv420p")
        return np.asarray(yuv.to_ndarray(), dtype=np.uint8)


class PersonaVideoTrack(MediaStreamTrack):
    """A live video track of the persona's face, ``width x height`` at ``fps`` frames a second.

    ``mouth`` is polled once a frame for how open the mouth is (0..1), so lip sync is whatever
    the voice says it should be at that moment. Pass one ``renderer`` to several tracks of the
    same size to share its frame cache. ``clock`` replaces the real-time pacing, for tests.
    """

    kind = "video"

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        renderer: FaceRenderer | None = None,
        mouth: Callable[[], float] | None = None,
        *,
        clock: MediaClock | None = None,
    ) -> None:
        if not 0 < fps <= MAX_FPS:
            raise ValueError(f"fps must be in (0, {MAX_FPS:g}], got {fps}")
        if renderer is None:
            renderer = FaceRenderer(width, height)
        elif (renderer.width, renderer.height) != (width, height):
            raise ValueError(
                f"renderer draws {renderer.width}x{renderer.height} frames, "
                f"but the track is {width}x{height}"
            )
        if clock is None:
            clock = MediaClock(VIDEO_CLOCK_RATE, 1.0 / fps)
        elif clock.rate != VIDEO_CLOCK_RATE or not math.isclose(clock.period, 1.0 / fps):
            raise ValueError(
                f"video clock must count {VIDEO_CLOCK_RATE} Hz in steps of 1/{fps:g} s, "
                f"got {clock.rate} Hz in steps of {clock.period:g} s"
            )
        super().__init__()
        self._width = width
        self._height = height
        self._fps = fps
        self._renderer = renderer
        self._mouth = mouth
        self._clock = clock

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._height

    @property
    def fps(self) -> float:
        """Frames per second."""
        return self._fps

    @property
    def renderer(self) -> FaceRenderer:
        """The renderer drawing the face."""
        return self._renderer

    async def recv(self) -> av.VideoFrame:
        """Wait for the next frame time and return the face as it looks then."""
        if self.readyState != "live":
            raise MediaStreamError
        pts, time_base = await self._clock.next_timestamp()
        mouth_open = self._mouth() if self._mouth is not None else 0.0
        pose = self._renderer.pose(pts / VIDEO_CLOCK_RATE, mouth_open)
        pixels = self._renderer.render_yuv(pose)
        frame = av.VideoFrame.from_ndarray(pixels, format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        return frame
