"""What the persona's encoders cost per frame, and what the picture looks like after: the
measurements behind the settings in ``dpkit.server.persona_media.encoders``.

Run with ``python benchmarks/encoder_cost.py [--frames 300]``; it takes about half a minute and
prints, for each candidate, CPU milliseconds per frame (one thread), bytes per frame and the
PSNR of the decoded picture against the drawn one, then the chosen settings against aiortc's as
a ratio. The video is the persona's own 640x480 face at 15 fps, speaking (the mouth moves every
frame), which is what a session's own encoder draws. It asserts nothing.
"""

from __future__ import annotations

import argparse
import fractions
import time
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from dpkit.server.persona_media.encoders import H264, VP8, AudioEncoder, VideoEncoder
from dpkit.server.persona_media.face import FaceRenderer

WIDTH, HEIGHT, FPS = 640, 480, 15.0


@dataclass(frozen=True)
class Result:
    name: str
    ms_per_frame: float
    bytes_per_frame: float
    psnr_mean: float
    psnr_min: float


def _speaking_face(frames: int) -> list[npt.NDArray[np.uint8]]:
    renderer = FaceRenderer(WIDTH, HEIGHT)
    mouth = np.abs(np.sin(np.arange(frames) / 3.0))
    return [renderer.render_yuv(renderer.pose(i / FPS, float(mouth[i]))) for i in range(frames)]


def _psnr(decoded: list[av.VideoFrame], pictures: list[npt.NDArray[np.uint8]]) -> list[float]:
    values = []
    for frame, picture in zip(decoded, pictures, strict=False):
        luma = frame.to_ndarray(format="yuv420p")[:HEIGHT].astype(np.float64)
        error = float(np.mean((luma - picture[:HEIGHT].astype(np.float64)) ** 2))
        values.append(10 * np.log10(255**2 / max(error, 1e-9)))
    return values


def _pyav(
    name: str, codec: str, options: dict[str, str], pictures: list[npt.NDArray[np.uint8]]
) -> Result:
    context = av.CodecContext.create(codec, "w")
    assert isinstance(context, av.VideoCodecContext)
    context.width, context.height, context.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    context.time_base = fractions.Fraction(1, 90000)
    context.framerate = fractions.Fraction(15, 1)
    context.bit_rate, context.thread_count, context.gop_size = 600_000, 1, 300
    context.options = options
    packets = []
    started = time.thread_time()
    for index, picture in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = index * 6000
        packets += context.encode(frame)
    elapsed = time.thread_time() - started
    return _result(name, codec, elapsed, packets, pictures)


def _chosen(name: str, codec: str, pictures: list[npt.NDArray[np.uint8]]) -> Result:
    encoder = VideoEncoder(codec, WIDTH, HEIGHT, FPS)
    packets = []
    started = time.thread_time()
    for index, picture in enumerate(pictures):
        packets += encoder.encode(picture, index * 6000)
    elapsed = time.thread_time() - started
    return _result(name, codec, elapsed, packets, pictures)


def _result(
    name: str,
    codec: str,
    elapsed: float,
    packets: list[av.Packet],  # type: ignore[type-arg]
    pictures: list[npt.NDArray[np.uint8]],
) -> Result:
    decoder = av.CodecContext.create("vp8" if codec in ("libvpx", VP8) else "h264", "r")
    decoded = [frame for packet in packets for frame in decoder.decode(packet)]
    psnr = _psnr(decoded, pictures)
    return Result(
        name,
        elapsed / len(pictures) * 1000,
        sum(packet.size for packet in packets) / len(pictures),
        float(np.mean(psnr)),
        float(min(psnr)),
    )


def _opus_ms(options: dict[str, str] | None, frames: int) -> float:
    samples = (np.random.default_rng(0).standard_normal(960 * frames) * 1000).astype(np.int16)
    if options is None:
        encoder = AudioEncoder()
        started = time.thread_time()
        for index in range(frames):
            encoder.encode(samples[index * 960 : (index + 1) * 960], index * 960)
        return (time.thread_time() - started) / frames * 1000
    context = av.CodecContext.create("libopus", "w")
    assert isinstance(context, av.AudioCodecContext)
    context.sample_rate, context.layout, context.format = 48000, "mono", "s16"
    context.bit_rate, context.time_base = 32000, fractions.Fraction(1, 48000)
    context.options = options
    started = time.thread_time()
    for index in range(frames):
        frame = av.AudioFrame.from_ndarray(
            samples[index * 960 : (index + 1) * 960].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, index * 960
        context.encode(frame)
    return (time.thread_time() - started) / frames * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="video frames per candidate (300)")
    args = parser.parse_args()
    if not 30 <= args.frames <= 3000:
        parser.error("--frames must be 30..3000")
    pictures = _speaking_face(args.frames)
    realtime = {"deadline": "realtime", "lag-in-frames": "0"}
    results = [
        _pyav(
            "VP8, aiortc's settings (cpu-used -6)",
            "libvpx",
            {**realtime, "cpu-used": "-6"},
            pictures,
        ),
        _pyav("VP8 cpu-used 16", "libvpx", {**realtime, "cpu-used": "16"}, pictures),
        _pyav(
            "VP8 cpu-used 16, static-thresh 100",
            "libvpx",
            {**realtime, "cpu-used": "16", "static-thresh": "100"},
            pictures,
        ),
        _chosen("VP8, dpkit's settings", VP8, pictures),
        _pyav(
            "H.264 ultrafast zerolatency",
            "libx264",
            {"preset": "ultrafast", "tune": "zerolatency"},
            pictures,
        ),
        _chosen("H.264, dpkit's settings", H264, pictures),
    ]
    print(f"{args.frames} frames of the speaking face, {WIDTH}x{HEIGHT}, one thread each")
    for result in results:
        print(
            f"  {result.name:<40} {result.ms_per_frame:5.2f} ms/frame  "
            f"{result.bytes_per_frame:6.0f} B/frame  PSNR mean {result.psnr_mean:4.1f} dB "
            f"(min {result.psnr_min:4.1f})"
        )
    aiortc, ours = results[0], results[3]
    print(
        f"dpkit's VP8 against aiortc's settings: {ours.ms_per_frame / aiortc.ms_per_frame:.2f}x "
        f"the CPU; {15 * ours.ms_per_frame / 1000:.3f} cores per speaking session at 15 fps"
    )
    frames = 500
    default = _opus_ms({}, frames)
    chosen = _opus_ms(None, frames)
    print("Opus, 20 ms mono frames at 32 kbit/s:")
    print(f"  {'libopus defaults (complexity 10)':<40} {default:5.3f} ms/frame")
    print(f"  {'application voip':<40} {_opus_ms({'application': 'voip'}, frames):5.3f} ms/frame")
    print(f"  {'dpkit (complexity 5)':<40} {chosen:5.3f} ms/frame  ({chosen / default:.2f}x)")


if __name__ == "__main__":
    main()
