"""The persona's encoders: its face to VP8 or H.264 packets, its voice to Opus packets.

The server encodes the persona's media itself (with PyAV) rather than handing frames to aiortc,
so that one encoding can go to many sessions: aiortc's sender packetises an ``av.Packet`` from a
track without encoding it again. The packets carry the shared timeline's ``pts`` and time base,
which aiortc turns into RTP timestamps.

The settings were picked by measurement (``benchmarks/encoder_cost.py``, on the persona's own
640x480 face speaking, one thread): libvpx VP8 in real-time mode at ``cpu-used`` 16 with a
static threshold of 1000 costs 0.7 ms a frame, against 1.4 ms at aiortc's ``cpu-used`` -6 and
1.1 ms for libx264 ``ultrafast``/``zerolatency``, at a mean PSNR of 51 dB. The picture is a
drawing on a still backdrop, which is what the static threshold is for: macroblocks that do not
change are skipped. H.264 is used only for a client that offers no VP8. Opus at complexity 5
costs 0.08 ms a 20 ms frame against 0.20 ms at libopus's default.

PyAV releases the GIL while it encodes, so encoders of different sessions run in parallel
threads. One encoder is not thread-safe: use each from one thread at a time.
"""

from __future__ import annotations

import fractions
import math
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import av
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    #: An encoded packet (PyAV's type is generic in the stream it came from; these have none).
    Packet: TypeAlias = av.Packet[Any]

VIDEO_CLOCK_RATE: Final = 90000
AUDIO_SAMPLE_RATE: Final = 48000
AUDIO_FRAME_SAMPLES: Final = 960
"""20 ms at 48 kHz: one Opus packet."""

VP8: Final = "video/VP8"
H264: Final = "video/H264"
OPUS: Final = "audio/opus"
VIDEO_CODECS: Final = (VP8, H264)
"""The video codecs the persona can be encoded in (aiortc negotiates no others)."""

VIDEO_BITRATE: Final = 600_000
"""Bits a second: plenty for the persona's face, which is mostly still."""
AUDIO_BITRATE: Final = 32_000
_AUDIO_OPTIONS: Final = {
    # libopus's default complexity (10) costs 0.20 ms a 20 ms frame here; 5 costs 0.075 ms,
    # and at 32 kbit/s of mono speech the difference is not audible (WebRTC's mobile default).
    # The "voip" application would double that again, for speech enhancements the persona's
    # synthetic voice does not need.
    "compression_level": "5",
}

KEYFRAME_INTERVAL_S: Final = 10.0
"""The longest run of frames without a keyframe, so a receiver that lost one recovers even
without asking; keyframes on request come in between."""

_VIDEO_OPTIONS: Final = {
    VP8: {
        "deadline": "realtime",
        "cpu-used": "16",
        "lag-in-frames": "0",
        # Macroblocks that changed less than this (sum of absolute differences) are skipped:
        # 1000 costs 0.73 ms a frame against 0.90 ms at 100, at a mean PSNR of 51 dB.
        "static-thresh": "1000",
        "noise-sensitivity": "0",
        # As libwebrtc sends VP8 without temporal layers; recovery from loss is a keyframe.
        "error-resilient": "0",
    },
    H264: {
        "preset": "ultrafast",
        "tune": "zerolatency",
        # Constrained baseline: what every WebRTC endpoint that offers H.264 decodes.
        "profile": "baseline",
        "x264-params": "scenecut=0:repeat-headers=1",
    },
}
_VIDEO_ENCODER_NAMES: Final = {VP8: "libvpx", H264: "libx264"}

VIDEO_TIME_BASE: Final = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_TIME_BASE: Final = fractions.Fraction(1, AUDIO_SAMPLE_RATE)


class VideoEncoder:
    """Encodes YUV 4:2:0 frames of one size into packets of ``codec`` (``VP8`` or ``H264``).

    Each call gives the packets of one frame (one, with no lag), stamped with the pts given.
    The first frame is a keyframe, and so is any frame asked to be one.
    """

    def __init__(self, codec: str, width: int, height: int, fps: float) -> None:
        if codec not in _VIDEO_ENCODER_NAMES:
            raise ValueError(f"cannot encode video as {codec!r}; known: {', '.join(VIDEO_CODECS)}")
        if not 0 < fps <= 60 or not math.isfinite(fps):
            raise ValueError(f"fps must be in (0, 60], got {fps}")
        context = av.CodecContext.create(_VIDEO_ENCODER_NAMES[codec], "w")
        assert isinstance(context, av.VideoCodecContext)
        context.width = width
        context.height = height
        context.pix_fmt = "yuv420p"
        context.time_base = VIDEO_TIME_BASE
        context.framerate = fractions.Fraction(round(fps * 1000), 1000)
        context.bit_rate = VIDEO_BITRATE
        # Keyframes are the broadcast's to force (at least every KEYFRAME_INTERVAL_S); the
        # encoder's own would come unannounced, so they are kept beyond that.
        context.gop_size = max(1, round(2 * KEYFRAME_INTERVAL_S * fps))
        context.thread_count = 1
        context.options = dict(_VIDEO_OPTIONS[codec])
        self._context = context
        self.codec = codec
        self.width = width
        self.height = height
        #: Frames encoded and, of those, keyframes.
        self.frames = 0
        self.keyframes = 0

    def encode(self, yuv: npt.NDArray[np.uint8], pts: int, keyframe: bool = False) -> list[Packet]:
        """The packets of one frame: ``yuv`` is PyAV's packed yuv420p array (``h * 3/2`` rows)."""
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        packets = self._context.encode(frame)
        for packet in packets:
            packet.pts = pts
            packet.time_base = VIDEO_TIME_BASE
            self.keyframes += packet.is_keyframe
        self.frames += 1
        return packets


class AudioEncoder:
    """Encodes 20 ms of 48 kHz mono int16 samples at a time into one Opus packet."""

    def __init__(self) -> None:
        context = av.CodecContext.create("libopus", "w")
        assert isinstance(context, av.AudioCodecContext)
        context.sample_rate = AUDIO_SAMPLE_RATE
        context.layout = "mono"
        context.format = "s16"
        context.bit_rate = AUDIO_BITRATE
        context.time_base = AUDIO_TIME_BASE
        context.options = dict(_AUDIO_OPTIONS)
        self._context = context
        self.frames = 0

    def encode(self, samples: npt.NDArray[np.int16], pts: int) -> list[Packet]:
        """The packet of ``samples`` (exactly one 20 ms frame), stamped with ``pts``."""
        if samples.shape != (AUDIO_FRAME_SAMPLES,):
            raise ValueError(
                f"an Opus frame is {AUDIO_FRAME_SAMPLES} samples, got shape {samples.shape}"
            )
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        packets = self._context.encode(frame)
        # libopus stamps its packets ahead by its look-ahead (312 samples); the receiver wants
        # the frame's own time.
        for packet in packets:
            packet.pts = pts
            packet.time_base = AUDIO_TIME_BASE
        self.frames += 1
        return packets
