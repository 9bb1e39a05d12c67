"""The Digital Person's face, drawn procedurally with numpy.

The face is a cartoon: a soft gradient backdrop with shoulders, and a head that sways a few pixels,
blinks every few seconds and opens its mouth as far as it is told to. No image assets, no aiortc,
no PyAV: the output is an RGB ``ndarray``, or the same picture composed straight into YUV 4:2:0
in PyAV's packed ``yuv420p`` layout, which is what the video track sends.

A server renders a frame for every session fifteen or more times a second on a couple of cores,
so rendering is built to be mostly lookups:

* the backdrop, the head (skin, hair, ears, brows, nose) and the coordinate grids are drawn once
  in ``__init__``;
* eyes and mouth are drawn into small patches on a copy of the head, once per (eye level, mouth
  level) pair: 4 x 8 variants;
* a frame is the backdrop with one head variant pasted at an integer offset, and finished frames
  are kept in an LRU cache keyed by the quantised :class:`FacePose`. The head sway is periodic and
  the blink and mouth are quantised, so after warm-up most frames are cache hits.

A YUV frame is composed the same way, plane by plane, so a cache miss never pays for an RGB to YUV
conversion: the backdrop is converted once, and each head variant is kept as premultiplied Y, U
and V sprites. Chroma is subsampled the way swscale does it for ``rgb24`` to ``yuv420p`` (pairs of
columns averaged, rows filtered 1-3-3-1, BT.601 limited range), so the frames match what
``VideoFrame.reformat(format="yuv420p")`` makes of the RGB frame to within a level or two. An odd
head offset moves the sprite by half a chroma sample, so there is one chroma sprite per offset
parity.

One renderer can serve many tracks of the same size, which shares its caches. It is not
thread-safe: use it from the event loop.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from functools import cached_property
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from dpkit.server.persona_media.lru import LruCache

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]
Indices = npt.NDArray[np.intp]
Color = tuple[float, float, float]

#: A function from an RGB frame to another pixel layout (for example planar YUV), cached with it.
PixelConverter = Callable[[U8], U8]

YUV420P: Literal["yuv420p"] = "yuv420p"
"""The frame-cache key of frames :meth:`FaceRenderer.render_yuv` composes (no converter)."""

EYE_LEVELS = 4
"""Eye openness steps: 0 is closed, ``EYE_LEVELS - 1`` wide open."""

MOUTH_LEVELS = 8
"""Mouth opening steps: 0 is the closed smile, ``MOUTH_LEVELS - 1`` wide open."""

MIN_SIZE = 16

# Blinks: one every 3 to 5 seconds. The lids close in 30 ms, stay shut 70 ms and reopen in 50 ms;
# the shut phase is longer than a frame at 15 fps so every blink shows at least one closed frame.
BLINK_MIN_INTERVAL = 3.0
BLINK_MAX_INTERVAL = 5.0
BLINK_CLOSING = 0.030
BLINK_CLOSED = 0.070
BLINK_OPENING = 0.050
BLINK_DURATION = BLINK_CLOSING + BLINK_CLOSED + BLINK_OPENING
# The schedule repeats after this many blinks (about a minute), which nobody notices.
BLINK_SCHEDULE_LENGTH = 16

# Head sway: a slow figure of eight, SWAY_X x SWAY_Y steps of ``scale / 320`` pixels (6 x 3 px
# at 640x480). One period and few positions keep the number of distinct frames small.
SWAY_X = 4
SWAY_Y = 2
SWAY_MIN_PERIOD = 6.0
SWAY_MAX_PERIOD = 9.0

BACKDROP_TOP: Color = (84.0, 128.0, 176.0)
BACKDROP_BOTTOM: Color = (178.0, 208.0, 228.0)
SKIN: Color = (241.0, 196.0, 162.0)
SKIN_SHADE: Color = (222.0, 164.0, 132.0)
EAR_INNER: Color = (205.0, 140.0, 115.0)
BLUSH: Color = (242.0, 138.0, 138.0)
HAIR: Color = (74.0, 48.0, 34.0)
HAIR_SHINE: Color = (128.0, 90.0, 64.0)
SHIRT: Color = (224.0, 112.0, 92.0)
SHIRT_SHADE: Color = (196.0, 92.0, 76.0)
EYE_WHITE: Color = (250.0, 250.0, 247.0)
IRIS: Color = (92.0, 64.0, 42.0)
PUPIL: Color = (22.0, 16.0, 14.0)
LASH: Color = (52.0, 34.0, 28.0)
LIPS: Color = (196.0, 96.0, 98.0)
MOUTH_INSIDE: Color = (104.0, 28.0, 38.0)
TONGUE: Color = (214.0, 102.0, 112.0)
TEETH: Color = (248.0, 246.0, 238.0)

# BT.601 limited ("tv") range, the matrix swscale uses for rgb24 -> yuv420p unless told otherwise.
_RGB_TO_YUV = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
    dtype=np.float32,
) / np.float32(255.0)
_YUV_OFFSETS = np.array([16.0, 128.0, 128.0], dtype=np.float32)[:, None, None]


class FacePose(NamedTuple):
    """Everything that changes between frames, quantised so that poses repeat.

    ``dx``/``dy`` move the head in pixels; ``eyes`` runs from 0 (shut) to ``EYE_LEVELS - 1``;
    ``mouth`` from 0 (closed smile) to ``MOUTH_LEVELS - 1``.
    """

    dx: int
    dy: int
    eyes: int
    mouth: int


#: What the frame cache is keyed by: how the pixels were made, and the pose.
FrameKey = tuple[PixelConverter | Literal["yuv420p"] | None, FacePose]


def _soft(distance: F32, width: float = 1.0) -> F32:
    """Coverage of a shape from its signed distance in pixels (negative inside), antialiased."""
    coverage: F32 = np.clip(np.float32(0.5) - distance / np.float32(width), 0.0, 1.0)
    return coverage


def _to_pixels(values: F32) -> U8:
    """Round colour values to uint8 pixels."""
    pixels: U8 = np.clip(values + np.float32(0.5), 0, 255).astype(np.uint8)
    return pixels


def _premultiplied_yuv(rgb: F32, alpha: F32) -> F32:
    """Y, U and V planes (``3 x h x w``) of premultiplied RGB pixels with coverage ``alpha``."""
    planes = np.moveaxis(rgb @ _RGB_TO_YUV.T, 2, 0)
    yuv: F32 = (planes + _YUV_OFFSETS * alpha).astype(np.float32)
    return yuv


def _subsample(planes: F32) -> F32:
    """4:2:0 chroma as swscale computes it from RGB: column pairs averaged, rows filtered 1-3-3-1.

    ``planes`` is ``... x (2n + 2) x 2m``, padded by one row above and below: output row ``k``
    is centred between padded rows ``2k + 1`` and ``2k + 2``. The result is ``... x n x m``.
    """
    pairs = planes[..., 0::2] + planes[..., 1::2]
    rows = pairs[..., 0:-2:2, :] + pairs[..., 3::2, :]
    rows += np.float32(3.0) * (pairs[..., 1:-1:2, :] + pairs[..., 2::2, :])
    chroma: F32 = rows * np.float32(1.0 / 16.0)
    return chroma


def _ellipse_distance(x: F32, y: F32, cx: float, cy: float, a: float, b: float) -> F32:
    """Approximate signed distance in pixels to an axis-aligned ellipse (exact on its edge)."""
    dx = (x - np.float32(cx)) / np.float32(a)
    dy = (y - np.float32(cy)) / np.float32(b)
    level = dx * dx + dy * dy - np.float32(1.0)
    gradient = np.float32(2.0) * np.sqrt((dx / np.float32(a)) ** 2 + (dy / np.float32(b)) ** 2)
    return (level / np.maximum(gradient, np.float32(1e-6))).astype(np.float32, copy=False)


def _over(
    premultiplied: F32, alpha: F32, coverage: F32, color: Color | F32, opacity: float = 1.0
) -> None:
    """Composite ``color`` with ``coverage`` over a premultiplied RGBA canvas, in place."""
    if opacity != 1.0:
        coverage = coverage * np.float32(opacity)
    keep = np.float32(1.0) - coverage
    paint = np.asarray(color, dtype=np.float32) * coverage[..., None]
    premultiplied *= keep[..., None]
    premultiplied += paint
    alpha *= keep
    alpha += coverage


class _Patch(NamedTuple):
    """A rectangle of a canvas with the head-relative pixel-centre coordinates of its grid."""

    rows: slice
    cols: slice
    x: F32
    y: F32


class _ChromaLayout(NamedTuple):
    """Where the head's chroma sprite goes for one (dy parity, dx parity), and how it blends.

    The sprite is the head padded by ``pad`` (rows above, below, columns left, right) so that
    it starts on an even frame row and column, subsampled, and cut to ``window``: the samples
    the head covers at all. Its top-left chroma sample is at ``(top - dy parity) / 2 +
    row_offset``, ``(left - dx parity) / 2 + col_offset`` for a head at luma ``(top, left)``.
    """

    pad: tuple[tuple[int, int], tuple[int, int]]
    window: tuple[slice, slice]
    row_offset: int
    col_offset: int
    opaque: Mask
    rim_rows: Indices
    rim_cols: Indices
    rim_keep: F32

    def sprite(self, planes: F32) -> F32:
        """The premultiplied chroma sprite of full-resolution ``2 x H x W`` head planes."""
        padded = np.pad(planes, ((0, 0), *self.pad))
        return _subsample(padded)[(slice(None), *self.window)]


class _YuvLayers(NamedTuple):
    """What every YUV frame shares: the backdrop and the head's coverage, drawn once."""

    backdrop: U8
    luma_opaque: Mask
    luma_keep: F32
    covered: Mask
    alpha: F32
    chroma: tuple[_ChromaLayout, ...]


class _YuvHead(NamedTuple):
    """One head variant as premultiplied YUV sprites; rims hold premultiplied value + 0.5."""

    luma: U8
    luma_rim: F32
    chroma: tuple[U8, ...]
    chroma_rim: tuple[F32, ...]


class FaceRenderer:
    """Draw a friendly animated face into ``height x width x 3`` uint8 RGB frames, or yuv420p.

    ``seed`` picks the blink schedule and sway phase, so two personas do not blink in unison.
    ``cache_size`` bounds the finished-frame cache; each entry costs one frame of memory
    (``width * height * 3`` bytes as RGB, half that as YUV 4:2:0).
    """

    def __init__(self, width: int, height: int, seed: int = 0, cache_size: int = 256) -> None:
        if width < MIN_SIZE or height < MIN_SIZE:
            raise ValueError(
                f"face size must be at least {MIN_SIZE}x{MIN_SIZE}, got {width}x{height}"
            )
        if width % 2 or height % 2:
            raise ValueError(
                f"face width and height must be even (for YUV 4:2:0), got {width}x{height}"
            )
        self._width = width
        self._height = height
        # Everything is laid out in units of the face scale: the height of the largest 4:3 box.
        scale = min(0.75 * width, float(height))
        self._scale = scale
        self._centre_x = width / 2
        self._centre_y = height / 2 - 0.04 * scale

        rng = np.random.default_rng(seed)
        intervals = rng.uniform(BLINK_MIN_INTERVAL, BLINK_MAX_INTERVAL, BLINK_SCHEDULE_LENGTH)
        ends = np.cumsum(intervals)
        self._blink_cycle = float(ends[-1])
        self._blink_starts = [float(end) - BLINK_DURATION for end in ends]
        self._sway_period = float(rng.uniform(SWAY_MIN_PERIOD, SWAY_MAX_PERIOD))
        self._sway_phase = float(rng.uniform(0.0, 2.0 * math.pi))
        self._sway_unit = scale / 320
        self._max_dx = math.ceil(SWAY_X * self._sway_unit)
        self._max_dy = math.ceil(SWAY_Y * self._sway_unit)

        self._backdrop = self._draw_backdrop()
        self._build_head()
        self._variants: LruCache[tuple[int, int], U8] = LruCache(EYE_LEVELS * MOUTH_LEVELS)
        self._yuv_variants: LruCache[tuple[int, int], _YuvHead] = LruCache(
            EYE_LEVELS * MOUTH_LEVELS
        )
        self._frames: LruCache[FrameKey, U8] = LruCache(cache_size)

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._height

    @property
    def frame_cache(self) -> LruCache[FrameKey, U8]:
        """The finished-frame cache, exposed for its hit and miss counters."""
        return self._frames

    # -- animation ---------------------------------------------------------------------------

    def blink_openness(self, t: float) -> float:
        """How open the eyes are at stream time ``t`` seconds: 1.0 open, 0.0 shut."""
        into_cycle = t % self._blink_cycle
        index = bisect.bisect_right(self._blink_starts, into_cycle) - 1
        if index < 0:
            return 1.0
        into_blink = into_cycle - self._blink_starts[index]
        if into_blink < BLINK_CLOSING:
            return 1.0 - into_blink / BLINK_CLOSING
        into_blink -= BLINK_CLOSING
        if into_blink < BLINK_CLOSED:
            return 0.0
        into_blink -= BLINK_CLOSED
        if into_blink < BLINK_OPENING:
            return into_blink / BLINK_OPENING
        return 1.0

    def head_offset(self, t: float) -> tuple[int, int]:
        """The head's displacement in pixels, ``(right, down)``, at stream time ``t``."""
        phase = 2.0 * math.pi * t / self._sway_period + self._sway_phase
        steps_x = round(SWAY_X * (0.85 * math.sin(phase) + 0.15 * math.sin(3.0 * phase)))
        steps_y = round(SWAY_Y * math.sin(2.0 * phase))
        return round(steps_x * self._sway_unit), round(steps_y * self._sway_unit)

    def pose(self, t: float, mouth_open: float = 0.0) -> FacePose:
        """The quantised pose at stream time ``t`` with the mouth ``mouth_open`` (0..1) open."""
        dx, dy = self.head_offset(t)
        eyes = round(self.blink_openness(t) * (EYE_LEVELS - 1))
        # ``not >=`` also catches NaN, which a lip-sync source could produce from silence.
        opening = 0.0 if not mouth_open >= 0.0 else min(mouth_open, 1.0)
        return FacePose(dx, dy, eyes, round(opening * (MOUTH_LEVELS - 1)))

    # -- frames ------------------------------------------------------------------------------

    def render(self, t: float, mouth_open: float = 0.0) -> U8:
        """The RGB frame at stream time ``t``; cached, so the array is read-only."""
        return self.render_pose(self.pose(t, mouth_open))

    def render_pose(self, pose: FacePose, convert: PixelConverter | None = None) -> U8:
        """The frame for ``pose``, passed through ``convert`` if given; cached and read-only.

        Converted frames are cached under the converter, so pass converters that compare equal
        each time (the same function, not a fresh lambda).
        """

        def build() -> U8:
            frame = self.draw(pose)
            if convert is not None:
                frame = convert(frame)
            frame.setflags(write=False)
            return frame

        return self._frames.get_or_build((convert, pose), build)

    def draw(self, pose: FacePose) -> U8:
        """Draw the RGB frame for ``pose`` into a new array, bypassing the frame cache."""
        self._check_pose(pose)
        head = self._variants.get_or_build(
            (pose.eyes, pose.mouth), lambda: self._draw_variant(pose.eyes, pose.mouth)
        )
        frame = self._backdrop.copy()
        top = self._head_top + pose.dy
        left = self._head_left + pose.dx
        region = frame[top : top + head.shape[0], left : left + head.shape[1]]
        # Inside the head the colour is simply the head's; only the antialiased rim is blended.
        np.copyto(region, head, where=self._head_opaque)
        rim_rows, rim_cols = self._rim_rows, self._rim_cols
        under = region[rim_rows, rim_cols].astype(np.float32)
        blended = under * self._rim_keep + head[rim_rows, rim_cols] + np.float32(0.5)
        region[rim_rows, rim_cols] = blended.astype(np.uint8)
        return frame

    def render_yuv(self, pose: FacePose) -> U8:
        """The yuv420p frame for ``pose`` in PyAV's packed layout; cached and read-only.

        The array has ``height * 3 // 2`` rows of ``width`` bytes, as
        ``VideoFrame.to_ndarray()`` returns it: the Y plane, then the U and V planes.
        """

        def build() -> U8:
            frame = self.draw_yuv(pose)
            frame.setflags(write=False)
            return frame

        return self._frames.get_or_build((YUV420P, pose), build)

    def draw_yuv(self, pose: FacePose) -> U8:
        """Compose the yuv420p frame for ``pose`` into a new array, bypassing the frame cache."""
        self._check_pose(pose)
        layers = self._yuv_layers
        head = self._yuv_variants.get_or_build(
            (pose.eyes, pose.mouth), lambda: self._draw_yuv_variant(pose.eyes, pose.mouth)
        )
        frame = layers.backdrop.copy()
        width, height = self._width, self._height
        pixels = frame.reshape(-1)
        luma = pixels[: width * height].reshape(height, width)
        # U and V follow each other, so both are one 2 x (h / 2) x (w / 2) view, blended at once.
        chroma = pixels[width * height :].reshape(2, height // 2, width // 2)

        top = self._head_top + pose.dy
        left = self._head_left + pose.dx
        rows, cols = head.luma.shape
        region = luma[top : top + rows, left : left + cols]
        np.copyto(region, head.luma, where=layers.luma_opaque)
        rim_rows, rim_cols = self._rim_rows, self._rim_cols
        # Blends of in-range values stay in range (16..240 and a rounding), so no clipping.
        under = region[rim_rows, rim_cols].astype(np.float32)
        region[rim_rows, rim_cols] = (under * layers.luma_keep + head.luma_rim).astype(np.uint8)

        parity = 2 * (top % 2) + left % 2
        layout = layers.chroma[parity]
        sprite = head.chroma[parity]
        row = (top - top % 2) // 2 + layout.row_offset
        col = (left - left % 2) // 2 + layout.col_offset
        region = chroma[:, row : row + sprite.shape[1], col : col + sprite.shape[2]]
        np.copyto(region, sprite, where=layout.opaque)
        rim_rows, rim_cols = layout.rim_rows, layout.rim_cols
        under = region[:, rim_rows, rim_cols].astype(np.float32)
        blended = under * layout.rim_keep + head.chroma_rim[parity]
        region[:, rim_rows, rim_cols] = blended.astype(np.uint8)
        return frame

    def _check_pose(self, pose: FacePose) -> None:
        if abs(pose.dx) > self._max_dx or abs(pose.dy) > self._max_dy:
            raise ValueError(
                f"head offset ({pose.dx}, {pose.dy}) is beyond the sway range "
                f"±({self._max_dx}, {self._max_dy})"
            )
        if not 0 <= pose.eyes < EYE_LEVELS:
            raise ValueError(f"eye level must be in 0..{EYE_LEVELS - 1}, got {pose.eyes}")
        if not 0 <= pose.mouth < MOUTH_LEVELS:
            raise ValueError(f"mouth level must be in 0..{MOUTH_LEVELS - 1}, got {pose.mouth}")

    # -- static layers -----------------------------------------------------------------------

    def _draw_backdrop(self) -> U8:
        """The gradient, a soft glow behind the head, and the shoulders and neck, which stay put."""
        s, cx, cy = self._scale, self._centre_x, self._centre_y
        y = (np.arange(self._height, dtype=np.float32) + np.float32(0.5))[:, None]
        x = (np.arange(self._width, dtype=np.float32) + np.float32(0.5))[None, :]
        fall = y / np.float32(self._height)
        top = np.asarray(BACKDROP_TOP, dtype=np.float32)
        bottom = np.asarray(BACKDROP_BOTTOM, dtype=np.float32)
        canvas = (top * (1 - fall[..., None]) + bottom * fall[..., None]).astype(np.float32)
        canvas = np.broadcast_to(canvas, (self._height, self._width, 3)).copy()
        glow = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / np.float32((0.55 * s) ** 2)))
        canvas += (np.float32(30.0) * glow)[..., None]
        alpha = np.ones((self._height, self._width), dtype=np.float32)

        shoulders = _soft(_ellipse_distance(x, y, cx, cy + 0.76 * s, 0.52 * s, 0.38 * s))
        shading = np.clip((y - np.float32(cy + 0.38 * s)) / np.float32(0.5 * s), 0.0, 1.0)
        shirt = (
            np.asarray(SHIRT, dtype=np.float32) * (1 - shading[..., None])
            + np.asarray(SHIRT_SHADE, dtype=np.float32) * shading[..., None]
        )
        _over(canvas, alpha, shoulders, shirt.astype(np.float32))

        half_neck = 0.085 * s
        neck_sides = np.abs(x - np.float32(cx)) - np.float32(half_neck)
        # The neck ends in a V-neck: its lower edge rises towards the sides.
        v_bottom = np.float32(cy + 0.46 * s) - np.float32(0.9) * np.abs(x - np.float32(cx))
        neck = _soft(neck_sides) * _soft(y - v_bottom) * _soft(np.float32(cy) - y)
        under_chin = np.clip((y - np.float32(cy + 0.26 * s)) / np.float32(0.12 * s), 0.0, 1.0)
        neck_colour = (
            np.asarray(SKIN_SHADE, dtype=np.float32) * (1 - under_chin[..., None])
            + np.asarray(SKIN, dtype=np.float32) * under_chin[..., None]
        )
        _over(canvas, alpha, neck.astype(np.float32), neck_colour.astype(np.float32))
        return _to_pixels(canvas)

    def _build_head(self) -> None:
        """Draw the moving head once, without eyes and mouth, as a premultiplied sprite."""
        s = self._scale
        margin = 2
        left = max(self._max_dx, math.floor(self._centre_x - 0.32 * s) - margin)
        right = min(self._width - self._max_dx, math.ceil(self._centre_x + 0.32 * s) + margin)
        top = max(self._max_dy, math.floor(self._centre_y - 0.42 * s) - margin)
        bottom = min(self._height - self._max_dy, math.ceil(self._centre_y + 0.34 * s) + margin)
        self._head_left, self._head_top = left, top
        self._head_x = (
            np.arange(left, right, dtype=np.float32) + np.float32(0.5 - self._centre_x)
        )[None, :]
        self._head_y = (
            np.arange(top, bottom, dtype=np.float32) + np.float32(0.5 - self._centre_y)
        )[:, None]
        x, y = self._head_x, self._head_y
        paint = np.zeros((bottom - top, right - left, 3), dtype=np.float32)
        alpha = np.zeros((bottom - top, right - left), dtype=np.float32)

        # Hair behind the head: a bob that ends behind the ears.
        hair_shape = _ellipse_distance(x, y, 0.0, -0.035 * s, 0.272 * s, 0.315 * s)
        hair_end = _soft(y - np.float32(0.055 * s), max(1.0, 0.012 * s))
        _over(paint, alpha, _soft(hair_shape) * hair_end, HAIR)

        for side in (-1.0, 1.0):
            ear_x = side * 0.232 * s
            _over(
                paint,
                alpha,
                _soft(_ellipse_distance(x, y, ear_x, 0.02 * s, 0.036 * s, 0.06 * s)),
                SKIN_SHADE,
            )
            inner = _soft(_ellipse_distance(x, y, ear_x, 0.02 * s, 0.016 * s, 0.034 * s), 2.0)
            _over(paint, alpha, inner, EAR_INNER, 0.6)

        # The face: an ellipse whose jaw narrows towards the chin, lit from the upper left.
        half_width, half_height = 0.232 * s, 0.30 * s
        below = np.clip(y / np.float32(half_height), 0.0, 1.0)
        jaw = np.float32(half_width) * (np.float32(1.0) - np.float32(0.16) * below * below)
        u = x / jaw
        v = y / np.float32(half_height)
        level = u * u + v * v - np.float32(1.0)
        gradient = np.float32(2.0) * np.sqrt((u / jaw) ** 2 + (v / np.float32(half_height)) ** 2)
        face = _soft(level / np.maximum(gradient, np.float32(1e-6)))
        rim = np.clip(u * u + v * v, 0.0, 1.0)
        light = np.clip(np.float32(0.5) - np.float32(0.25) * (u + v), 0.0, 1.0)
        shade = np.clip(np.float32(0.55) * rim * rim + np.float32(0.35) * (1 - light), 0.0, 1.0)
        skin = (
            np.asarray(SKIN, dtype=np.float32) * (1 - shade[..., None])
            + np.asarray(SKIN_SHADE, dtype=np.float32) * shade[..., None]
        )
        _over(paint, alpha, face, skin.astype(np.float32))

        blush_sigma = np.float32((0.036 * s) ** 2)
        for side in (-1.0, 1.0):
            distance = (x - np.float32(side * 0.13 * s)) ** 2 + (y - np.float32(0.09 * s)) ** 2
            _over(paint, alpha, np.exp(-distance / blush_sigma) * face, BLUSH, 0.30)

        # Nose: only a soft shadow under the tip, and a faint line down its shaded side.
        tip = _soft(_ellipse_distance(x, y, 0.006 * s, 0.072 * s, 0.03 * s, 0.017 * s), 0.01 * s)
        _over(paint, alpha, tip * _soft(np.float32(0.066 * s) - y, 2.0), SKIN_SHADE, 0.9)
        bridge = _soft(np.abs(x - np.float32(0.018 * s)) - np.float32(0.004 * s), 0.006 * s)
        bridge_span = _soft(np.abs(y - np.float32(0.04 * s)) - np.float32(0.025 * s), 0.01 * s)
        _over(paint, alpha, bridge * bridge_span, SKIN_SHADE, 0.35)

        # Fringe: hair over the forehead down to a wavy, side-swept hairline.
        across = x / np.float32(0.235 * s)
        hairline = np.float32(s) * (
            np.float32(-0.135)
            + np.float32(0.045) * across
            - np.float32(0.06) * across * across
            + np.float32(0.012) * np.sin(np.float32(11.0) * across)
        )
        fringe = _soft(_ellipse_distance(x, y, 0.0, -0.03 * s, 0.262 * s, 0.31 * s)) * _soft(
            y - hairline, 1.5
        )
        _over(paint, alpha, fringe, HAIR)
        shine_distance = (x + np.float32(0.08 * s)) ** 2 / np.float32((0.07 * s) ** 2) + (
            y + np.float32(0.245 * s)
        ) ** 2 / np.float32((0.02 * s) ** 2)
        _over(paint, alpha, np.exp(-shine_distance) * fringe, HAIR_SHINE, 0.6)

        for side in (-1.0, 1.0):
            brow_x = side * 0.09 * s
            along = (x - np.float32(brow_x)) / np.float32(0.055 * s)
            brow_y = np.float32(-0.092 * s) + np.float32(0.018 * s) * along * along
            thickness = np.float32(0.0075 * s) * (np.float32(1.0) - np.float32(0.5) * along * along)
            brow = _soft(np.abs(y - brow_y) - thickness) * _soft(
                np.abs(along) - np.float32(1.0), 0.02
            )
            _over(paint, alpha, brow, HAIR)

        self._head_paint = paint
        self._head_alpha = alpha
        opaque = alpha >= np.float32(1.0 - 1.0 / 512)
        # A full-size mask: np.copyto is ten times slower with a broadcast one.
        self._head_opaque = np.repeat(opaque[..., None], 3, axis=2)
        rim_rows, rim_cols = np.nonzero(~opaque & (alpha > np.float32(1.0 / 512)))
        self._rim_rows, self._rim_cols = rim_rows, rim_cols
        self._rim_keep = (np.float32(1.0) - alpha[rim_rows, rim_cols])[:, None]

    # -- YUV layers --------------------------------------------------------------------------

    @cached_property
    def _yuv_layers(self) -> _YuvLayers:
        """The backdrop in yuv420p and the head's coverage, built on the first YUV frame."""
        width, height = self._width, self._height
        planes = _premultiplied_yuv(self._backdrop.astype(np.float32), np.ones((1, 1), np.float32))
        # swscale repeats the edge rows where the chroma filter reaches past the frame.
        padded = np.concatenate([planes[1:, :1], planes[1:], planes[1:, -1:]], axis=1)
        backdrop = np.concatenate(
            [_to_pixels(planes[0]).reshape(-1), _to_pixels(_subsample(padded)).reshape(-1)]
        ).reshape(height * 3 // 2, width)

        # Coverage as draw() uses it: opaque inside, blended on the rim, nothing elsewhere.
        opaque = self._head_opaque[..., 0]
        covered = opaque.copy()
        covered[self._rim_rows, self._rim_cols] = True
        alpha = np.where(opaque, np.float32(1.0), np.float32(0.0)).astype(np.float32)
        alpha[self._rim_rows, self._rim_cols] = self._head_alpha[self._rim_rows, self._rim_cols]
        chroma = tuple(
            self._chroma_layout(alpha, row_parity, col_parity)
            for row_parity in (0, 1)
            for col_parity in (0, 1)
        )
        return _YuvLayers(
            backdrop=backdrop,
            luma_opaque=np.ascontiguousarray(opaque),
            luma_keep=np.ascontiguousarray(self._rim_keep[:, 0]),
            covered=covered,
            alpha=alpha,
            chroma=chroma,
        )

    def _chroma_layout(self, alpha: F32, row_parity: int, col_parity: int) -> _ChromaLayout:
        """Lay out the chroma sprite for heads whose top row and left column have these parities."""
        rows, cols = alpha.shape
        # Pad so the sprite starts on an even frame row and column and ends on an odd one, plus
        # the filter's reach: a chroma row reads its pair of luma rows and one either side, so
        # with three more zero rows above the first output row is the one that just touches it.
        even_rows = rows + row_parity + (rows + row_parity) % 2
        even_cols = cols + col_parity + (cols + col_parity) % 2
        pad = (
            (3 + row_parity, even_rows + 3 - rows - row_parity),
            (col_parity, even_cols - cols - col_parity),
        )
        coverage = _subsample(np.pad(alpha, pad))
        used_rows = np.flatnonzero(coverage.any(axis=1))
        used_cols = np.flatnonzero(coverage.any(axis=0))
        first_row, last_row = int(used_rows[0]), int(used_rows[-1]) + 1
        first_col, last_col = int(used_cols[0]), int(used_cols[-1]) + 1
        # A head touching the top or bottom edge of a tiny frame could reach one chroma row past
        # it; that row is cut, losing an eighth of the edge row's blend (never at real sizes).
        tops = [
            self._head_top + dy
            for dy in range(-self._max_dy, self._max_dy + 1)
            if (self._head_top + dy) % 2 == row_parity
        ]
        if tops:
            lowest = (min(tops) - row_parity) // 2 - 1
            highest = (max(tops) - row_parity) // 2 - 1
            first_row = max(first_row, -lowest)
            last_row = min(last_row, self._height // 2 - highest)
        window = (slice(first_row, last_row), slice(first_col, last_col))
        coverage = coverage[window]
        opaque = coverage >= np.float32(1.0 - 1.0 / 512)
        rim_rows, rim_cols = np.nonzero(~opaque & (coverage > 0.0))
        return _ChromaLayout(
            pad=pad,
            window=window,
            row_offset=first_row - 1,
            col_offset=first_col,
            opaque=np.stack([opaque, opaque]),
            rim_rows=rim_rows,
            rim_cols=rim_cols,
            rim_keep=(np.float32(1.0) - coverage[rim_rows, rim_cols]).astype(np.float32),
        )

    def _draw_yuv_variant(self, eyes: int, mouth: int) -> _YuvHead:
        """The head variant as premultiplied Y, U and V sprites, one chroma one per parity."""
        layers = self._yuv_layers
        # Drawn afresh rather than through ``_variants``: a YUV-only renderer keeps no RGB heads.
        rgb = self._draw_variant(eyes, mouth).astype(np.float32)
        rgb *= layers.covered[..., None]
        planes = _premultiplied_yuv(rgb, layers.alpha)
        luma_rim = planes[0][self._rim_rows, self._rim_cols] + np.float32(0.5)
        chroma: list[U8] = []
        chroma_rim: list[F32] = []
        for layout in layers.chroma:
            sprite = layout.sprite(planes[1:])
            chroma.append(_to_pixels(sprite))
            chroma_rim.append(sprite[:, layout.rim_rows, layout.rim_cols] + np.float32(0.5))
        return _YuvHead(_to_pixels(planes[0]), luma_rim, tuple(chroma), tuple(chroma_rim))

    # -- moving features ---------------------------------------------------------------------

    def _patch(self, centre_x: float, centre_y: float, half_x: float, half_y: float) -> _Patch:
        """The head-sprite rectangle around a feature, clipped to the sprite."""
        x, y = self._head_x[0], self._head_y[:, 0]
        c0 = int(np.searchsorted(x, centre_x - half_x))
        c1 = int(np.searchsorted(x, centre_x + half_x))
        r0 = int(np.searchsorted(y, centre_y - half_y))
        r1 = int(np.searchsorted(y, centre_y + half_y))
        return _Patch(slice(r0, r1), slice(c0, c1), x[None, c0:c1], y[r0:r1, None])

    def _draw_variant(self, eyes: int, mouth: int) -> U8:
        """The head sprite with eyes ``eyes`` open and mouth ``mouth`` open, premultiplied uint8."""
        head = _to_pixels(self._head_paint)
        s = self._scale
        openness = eyes / (EYE_LEVELS - 1)
        for side in (-1.0, 1.0):
            patch = self._patch(side * 0.09 * s, -0.005 * s, 0.065 * s, 0.06 * s)
            self._draw_eye(head, patch, side * 0.09 * s, -0.015 * s, openness)
        patch = self._patch(0.0, 0.20 * s, 0.095 * s, 0.07 * s)
        self._draw_mouth(head, patch, 0.155 * s, mouth / (MOUTH_LEVELS - 1))
        return head

    def _draw_eye(self, head: U8, patch: _Patch, ex: float, ey: float, openness: float) -> None:
        s = self._scale
        paint = self._head_paint[patch.rows, patch.cols].copy()
        alpha = self._head_alpha[patch.rows, patch.cols].copy()
        x, y = patch.x, patch.y
        half_w, half_h = 0.048 * s, 0.034 * s
        if openness > 0:
            # The upper lid comes down, so the visible eye shrinks towards its lower edge.
            white_y = ey + half_h * (1.0 - openness) * 0.35
            white_d = _ellipse_distance(x, y, ex, white_y, half_w, half_h * openness)
            white = _soft(white_d)
            _over(paint, alpha, white, EYE_WHITE)
            iris_y = ey + 0.1 * half_h
            iris = _soft(
                np.hypot(x - np.float32(ex), y - np.float32(iris_y)) - np.float32(0.024 * s)
            )
            _over(paint, alpha, iris * white, IRIS)
            pupil = _soft(
                np.hypot(x - np.float32(ex), y - np.float32(iris_y)) - np.float32(0.012 * s)
            )
            _over(paint, alpha, pupil * white, PUPIL)
            glint_d = np.hypot(x - np.float32(ex - 0.009 * s), y - np.float32(iris_y - 0.009 * s))
            _over(paint, alpha, _soft(glint_d - np.float32(0.0055 * s)) * white, EYE_WHITE)
            # An outline, heavier along the upper lid where the lashes are.
            line = _soft(np.abs(white_d) - np.float32(0.0035 * s))
            upper = np.where(y < np.float32(white_y), np.float32(1.0), np.float32(0.35))
            _over(paint, alpha, line * upper, LASH)
        else:
            along = (x - np.float32(ex)) / np.float32(half_w)
            lid_y = np.float32(ey + 0.2 * half_h) + np.float32(0.5 * half_h) * (1 - along * along)
            lid = _soft(np.abs(y - lid_y) - np.float32(0.004 * s)) * _soft(
                np.abs(along) - np.float32(1.0), 0.05
            )
            _over(paint, alpha, lid, LASH)
        head[patch.rows, patch.cols] = _to_pixels(paint)

    def _draw_mouth(self, head: U8, patch: _Patch, my: float, opening: float) -> None:
        s = self._scale
        paint = self._head_paint[patch.rows, patch.cols].copy()
        alpha = self._head_alpha[patch.rows, patch.cols].copy()
        x, y = patch.x, patch.y
        # The mouth narrows a little as it opens, like a real "o".
        half_w = 0.075 * s * (1.0 - 0.2 * opening)
        along = x / np.float32(half_w)
        across = np.float32(1.0) - along * along
        corner_lift = np.float32(0.012 * s)
        inside_ends = _soft(np.abs(along) - np.float32(1.0), 0.02)
        if opening == 0:
            # A closed smile: a line whose corners turn up.
            smile_y = np.float32(my) + corner_lift * (np.float32(2.0) * across - np.float32(1.0))
            thickness = np.float32(0.0045 * s) * (
                np.float32(0.4) + np.float32(0.6) * np.clip(across, 0, 1)
            )
            _over(paint, alpha, _soft(np.abs(y - smile_y) - thickness) * inside_ends, LIPS)
        else:
            upper = np.float32(my) - corner_lift * (np.float32(1.0) - across)
            # A power below 1 rounds the lower lip into a "D" rather than a "V".
            roundness = np.sqrt(np.clip(across, 0.0, 1.0))
            lower = upper + np.float32(0.012 * s + 0.085 * s * opening) * roundness
            inside_d = np.maximum(upper - y, y - lower)
            inside = _soft(inside_d) * inside_ends
            _over(paint, alpha, inside, MOUTH_INSIDE)
            teeth_edge = upper + np.minimum(
                np.float32(0.02 * s), np.float32(0.35) * (lower - upper)
            )
            _over(paint, alpha, _soft(y - teeth_edge) * inside, TEETH)
            depth = 0.012 * s + 0.085 * s * opening
            tongue_d = _ellipse_distance(x, y, 0.0, my + depth, 0.6 * half_w, 0.45 * depth)
            _over(paint, alpha, _soft(tongue_d) * inside, TONGUE)
            lips = _soft(np.abs(inside_d) - np.float32(0.004 * s)) * inside_ends
            _over(paint, alpha, lips, LIPS)
        head[patch.rows, patch.cols] = _to_pixels(paint)
