"""Audio level measurement and the frame-to-samples step it needs.

aiortc's Opus decoder hands received audio over as packed (interleaved) s16 stereo at 48 kHz,
even when the sender sent mono: ``to_ndarray()`` gives one row of L, R, L, R... samples.
:func:`audio_frame_to_mono` turns that, or any other PyAV sample layout, into plain int16 mono.
"""

from __future__ import annotations

import math
from typing import Any

import av
import numpy as np
import numpy.typing as npt

SILENCE_DBFS = -120.0
"""What :func:`rms_dbfs` reports for silence (and anything quieter), instead of ``-inf``.

A finite floor keeps the value usable in arithmetic, JSON and comparisons; -120 dBFS is below
the quietest non-zero 16-bit signal (about -96 dBFS) so it cannot be confused with one.
"""


def rms_dbfs(samples: npt.NDArray[Any]) -> float:
    """The RMS level of ``samples`` in dB relative to digital full scale, floored at -120.

    Integer samples are scaled by their type's full scale (32768 for int16); float samples are
    taken as already scaled to -1..1. By this convention a full-scale sine measures -3 dBFS.
    """
    values = np.asarray(samples)
    if values.size == 0:
        return SILENCE_DBFS
    if np.issubdtype(values.dtype, np.integer):
        full_scale = float(np.iinfo(values.dtype).max) + 1.0
    elif np.issubdtype(values.dtype, np.floating):
        full_scale = 1.0
    else:
        raise TypeError(f"audio samples must be integers or floats, got {values.dtype}")
    scaled = values.astype(np.float64) / full_scale
    rms = math.sqrt(float(np.mean(scaled * scaled)))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(20.0 * math.log10(rms), SILENCE_DBFS)


def audio_frame_to_mono(frame: av.AudioFrame) -> npt.NDArray[np.int16]:
    """The samples of ``frame`` as 1-D int16 mono, averaging the channels of a multichannel frame.

    Handles packed and planar PyAV formats alike: u8, s16, s32 and float (which is clipped).
    """
    channels = len(frame.layout.channels)
    data: npt.NDArray[Any] = frame.to_ndarray()
    if frame.format.is_planar:
        per_channel = data.reshape(channels, -1)
    else:
        per_channel = data.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name == "s16":
        wide = per_channel.astype(np.int32)
    elif name == "s32":
        wide = per_channel.astype(np.int32) >> 16
    elif name == "u8":
        wide = (per_channel.astype(np.int32) - 128) << 8
    elif name in ("flt", "dbl"):
        wide = np.round(np.clip(per_channel, -1.0, 1.0) * 32767.0).astype(np.int32)
    else:
        raise ValueError(f"cannot read {frame.format.name} audio samples")
    if channels == 1:
        return np.asarray(wide[0], dtype=np.int16)
    # Average rather than sum, so a loud stereo signal cannot clip; identical channels (a mono
    # source that the decoder upmixed) come back unchanged.
    mixed = np.floor_divide(wide.sum(axis=0) + channels // 2, channels)
    return np.asarray(mixed, dtype=np.int16)
