"""Real device capture: a microphone recording a tone from a private PulseAudio server, the
camera path through a real libavdevice input, failures classified into the seed's three
``noUserMedia`` messages, and the device list."""

from __future__ import annotations

import asyncio
import errno
import fractions
import struct
import sys
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from dpkit.client.devices import DeviceError, DeviceFailure
from dpkit.client.options import MediaDevices
from dpkit.media.capture import (
    BackendMissing,
    CameraTrack,
    MicrophoneTrack,
    SystemDevices,
    camera_input,
    classify,
    load_portaudio,
    open_camera,
    open_microphone,
    open_video_input,
)
from dpkit.media.devices_list import DeviceInfo, list_devices, v4l2_capture_name
from dpkit.media.levels import audio_frame_to_mono, rms_dbfs
from tests import support_audio
from tests.support_audio import VirtualAudio

# Bound here rather than imported by name, so that pytest finds the fixture in this module and
# the linter does not take the test parameters for redefinitions of an unused import.
virtual_audio = support_audio.virtual_audio

BOUND_S = 10.0
"""Upper bound on any wait for frames, so a broken device fails the test instead of hanging it."""

SETTLE_FRAMES = 10
"""Frames skipped before measuring: the sound server may start a new stream with a short gap."""

MEASURED_FRAMES = 25
"""Half a second of sound: a 2 Hz FFT bin, plenty to place a 440 Hz tone."""

# A source that behaves like a camera: libavdevice's lavfi input, paced to real time.
TEST_SOURCE = "testsrc=size=320x240:rate=15,realtime"

_T = TypeVar("_T")


def _portaudio() -> Any:
    try:
        return load_portaudio()
    except BackendMissing as exc:
        pytest.skip(f"{exc}")


async def _bounded(awaitable: Awaitable[_T]) -> _T:
    async with asyncio.timeout(BOUND_S):
        return await awaitable


async def _frames(track: MicrophoneTrack | CameraTrack, count: int) -> list[Any]:
    async def take() -> list[Any]:
        return [await track.recv() for _ in range(count)]

    return await _bounded(take())


def _dominant_hz(samples: np.ndarray[Any, Any], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1.0 / rate)[int(np.argmax(spectrum))])


def _capture_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("dpkit-")]


# -- the microphone, recording a real sound server ------------------------------------------------


def test_no_default_microphone_is_not_available() -> None:
    """With no sound card and no sound server, open_microphone() fails as 'not available'."""
    sounddevice = _portaudio()
    if any(device["max_input_channels"] > 0 for device in sounddevice.query_devices()):
        pytest.skip("this machine (or the virtual sound server) has a microphone")
    with pytest.raises(DeviceError) as caught:
        open_microphone()
    assert caught.value.failure is DeviceFailure.NOT_AVAILABLE
    assert isinstance(caught.value.__cause__, sounddevice.PortAudioError)


async def test_microphone_records_the_tone_playing_into_the_sink(
    virtual_audio: VirtualAudio,
) -> None:
    """The default microphone (the null sink's monitor) hears the 440 Hz tone well above silence."""
    track = open_microphone()
    try:
        frames = await _frames(track, SETTLE_FRAMES + MEASURED_FRAMES)
    finally:
        track.stop()
    samples = np.concatenate([audio_frame_to_mono(frame) for frame in frames[SETTLE_FRAMES:]])
    assert rms_dbfs(samples) > -50.0
    assert abs(_dominant_hz(samples, 48000) - virtual_audio.tone_hz) <= 5.0


async def test_microphone_frames_are_20ms_of_48k_mono_with_sample_pts(
    virtual_audio: VirtualAudio,
) -> None:
    """Each frame is 960 s16 mono samples at 48 kHz, pts counting samples from zero."""
    track = open_microphone()
    try:
        frames = await _frames(track, 3)
    finally:
        track.stop()
    assert [(f.samples, f.sample_rate, f.format.name, f.layout.name) for f in frames] == [
        (960, 48000, "s16", "mono")
    ] * 3
    assert [f.pts for f in frames] == [0, 960, 1920]
    assert all(f.time_base == fractions.Fraction(1, 48000) for f in frames)


async def test_stopping_the_microphone_joins_its_thread_and_ends_the_track(
    virtual_audio: VirtualAudio,
) -> None:
    """stop() leaves no capture thread behind, and recv() afterwards raises MediaStreamError."""
    track = open_microphone()
    await _frames(track, 1)
    assert track.running
    track.stop()
    track.stop()
    assert not track.running
    assert _capture_threads() == []
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_a_microphone_stopped_before_capture_never_starts_a_thread(
    virtual_audio: VirtualAudio,
) -> None:
    """A track stopped unread closes its device without ever starting a worker thread."""
    track = open_microphone()
    track.stop()
    assert _capture_threads() == []
    with pytest.raises(MediaStreamError):
        await track.recv()


@pytest.mark.parametrize("device", ["no such microphone", 999])
async def test_a_microphone_portaudio_does_not_have_is_not_available(
    virtual_audio: VirtualAudio, device: str | int
) -> None:
    """Asking PortAudio for a name or index it does not have fails as 'not available'."""
    with pytest.raises(DeviceError) as caught:
        open_microphone(device)
    assert caught.value.failure is DeviceFailure.NOT_AVAILABLE
    assert caught.value.__cause__ is not None
    assert repr(device) in caught.value.message


async def test_system_devices_opens_the_default_microphone(virtual_audio: VirtualAudio) -> None:
    """SystemDevices opens only what is asked for, and the microphone it opens delivers sound."""
    media = await _bounded(SystemDevices().open(MediaDevices(microphone=True)))
    try:
        assert isinstance(media.microphone, MicrophoneTrack)
        assert media.camera is None
        frame = await _bounded(media.microphone.recv())
    finally:
        media.stop()
    assert isinstance(frame, av.AudioFrame)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/video9 is a Linux path")
async def test_system_devices_closes_the_microphone_when_the_camera_fails(
    virtual_audio: VirtualAudio,
) -> None:
    """When the camera fails, the open fails and the microphone opened first is closed again."""
    provider = SystemDevices(camera="/dev/video9")
    with pytest.raises(DeviceError) as caught:
        await _bounded(provider.open(MediaDevices(microphone=True, camera=True)))
    assert caught.value.failure is DeviceFailure.NOT_AVAILABLE
    assert support_audio.pactl(virtual_audio.server, "list", "short", "source-outputs") == ""
    assert _capture_threads() == []


def test_list_devices_shows_the_virtual_microphone(virtual_audio: VirtualAudio) -> None:
    """With the sound server up, PortAudio lists a default microphone and a speaker."""
    devices = list_devices()
    assert all(isinstance(device, DeviceInfo) for device in devices)
    microphones = devices.of_kind("microphone")
    assert microphones
    assert [device.default for device in microphones].count(True) == 1
    assert devices.of_kind("speaker")
    assert all(device.backend.startswith("portaudio/") for device in microphones)
    assert not [problem for problem in devices.problems if "PortAudio" in problem]


# -- the camera path ------------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/dev/video9 is a Linux path")
def test_a_missing_camera_is_not_available_with_the_cause_attached() -> None:
    """open_camera('/dev/video9') fails as 'not available', keeping PyAV's FileNotFoundError."""
    with pytest.raises(DeviceError) as caught:
        open_camera("/dev/video9")
    assert caught.value.failure is DeviceFailure.NOT_AVAILABLE
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert "/dev/video9" in caught.value.message
    assert caught.value.message.startswith(DeviceFailure.NOT_AVAILABLE.value)


def test_an_input_format_pyav_lacks_is_not_available() -> None:
    """A capture backend missing from the PyAV build fails as 'not available'."""
    with pytest.raises(DeviceError) as caught:
        open_video_input("0", "no-such-device-format")
    assert caught.value.failure is DeviceFailure.NOT_AVAILABLE
    assert isinstance(caught.value.__cause__, BackendMissing)


async def test_a_video_input_delivers_yuv_frames_on_a_90khz_clock_from_zero() -> None:
    """A camera's frames come out as yuv420p with pts counting 1/90000 s, starting at zero."""
    track = open_video_input(TEST_SOURCE, "lavfi", name="test-camera")
    try:
        frames = await _frames(track, 4)
    finally:
        track.stop()
    assert [(f.width, f.height, f.format.name) for f in frames] == [(320, 240, "yuv420p")] * 4
    assert all(f.time_base == fractions.Fraction(1, 90000) for f in frames)
    # The source stamps frame n at n/15 s: 6000 ticks apart on the 90 kHz clock.
    assert [f.pts for f in frames] == [0, 6000, 12000, 18000]


async def test_stopping_a_video_input_joins_its_thread() -> None:
    """stop() on a capturing camera leaves no capture thread, and ends the track."""
    track = open_video_input(TEST_SOURCE, "lavfi", name="test-camera")
    await _frames(track, 1)
    track.stop()
    assert not track.running
    assert _capture_threads() == []
    with pytest.raises(MediaStreamError):
        await track.recv()


@pytest.mark.parametrize(
    ("platform", "device", "expected"),
    [
        ("linux", None, ("/dev/video0", "v4l2")),
        ("linux", "/dev/video2", ("/dev/video2", "v4l2")),
        ("darwin", None, ("default", "avfoundation")),
        ("win32", "Integrated Camera", ("video=Integrated Camera", "dshow")),
    ],
)
def test_each_platform_opens_cameras_with_its_own_backend(
    platform: str, device: str | None, expected: tuple[str, str]
) -> None:
    """Linux uses v4l2, macOS avfoundation and Windows dshow, with the size and rate asked for."""
    url, format, options = camera_input(device, 640, 480, 15.0, platform)
    assert (url, format) == expected
    assert options == {"video_size": "640x480", "framerate": "15"}


def test_directshow_without_a_camera_name_is_not_available() -> None:
    """DirectShow has no default camera, so opening none by name fails as 'not available'."""
    with pytest.raises(DeviceError) as caught:
        camera_input(None, 640, 480, 15.0, "win32")
    assert caught.value.failure is DeviceFailure.NOT_AVAILABLE


# -- classifying failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file", "/dev/video9"), "NOT_AVAILABLE"),
        (OSError(errno.ENODEV, "No such device"), "NOT_AVAILABLE"),
        (OSError(errno.ENOTTY, "Inappropriate ioctl for device"), "NOT_AVAILABLE"),
        (BackendMissing("no PortAudio"), "NOT_AVAILABLE"),
        (ImportError("No module named 'sounddevice'"), "NOT_AVAILABLE"),
        (ValueError("No input device matching 'USB'"), "NOT_AVAILABLE"),
        (PermissionError(errno.EACCES, "Permission denied", "/dev/video0"), "NOT_PERMITTED"),
        (OSError(errno.EPERM, "Operation not permitted"), "NOT_PERMITTED"),
        (RuntimeError("camera access not authorized by the system"), "NOT_PERMITTED"),
        (OSError(errno.EBUSY, "Device or resource busy"), "NOT_USABLE"),
        (OSError(errno.EINVAL, "Invalid argument"), "NOT_USABLE"),
        (RuntimeError("something else went wrong"), "NOT_USABLE"),
    ],
)
def test_classify_maps_errors_to_the_seeds_three_failures(
    error: BaseException, expected: str
) -> None:
    """OS errors, missing backends and library messages map to the right noUserMedia failure."""
    assert classify(error) is DeviceFailure[expected]


def test_classify_understands_portaudio_errors() -> None:
    """PortAudio's no-default-device, invalid-device, busy, rate and host errors are classified."""
    sounddevice = _portaudio()
    error = sounddevice.PortAudioError
    cases = [
        (error("Error querying device -1"), DeviceFailure.NOT_AVAILABLE),
        (error("Error querying device 7"), DeviceFailure.NOT_AVAILABLE),
        (error("Invalid device", -9996), DeviceFailure.NOT_AVAILABLE),
        (error("Device unavailable", -9985), DeviceFailure.NOT_USABLE),
        (error("Invalid sample rate", -9997), DeviceFailure.NOT_USABLE),
        (
            error("Unanticipated host error", -9999, (0, -errno.EACCES, "Permission denied")),
            DeviceFailure.NOT_PERMITTED,
        ),
        (
            error("Unanticipated host error", -9999, (0, -errno.EBUSY, "Device or resource busy")),
            DeviceFailure.NOT_USABLE,
        ),
    ]
    assert [classify(exc) for exc, _ in cases] == [failure for _, failure in cases]


# -- the V4L2 capability record -------------------------------------------------------------------


def _capability(card: bytes, capabilities: int, device_caps: int) -> bytes:
    return struct.pack(
        "=16s32s32sIII12x", b"uvcvideo", card, b"usb-1", 0, capabilities, device_caps
    )


def test_v4l2_nodes_that_capture_are_named_and_metadata_nodes_skipped() -> None:
    """A node is a camera when its own caps (device_caps) include video capture."""
    device_caps_valid = 0x80000000
    capture, metadata = 0x00000001, 0x00800000
    webcam = _capability(b"HD Webcam", device_caps_valid | capture | metadata, capture)
    meta_node = _capability(b"HD Webcam", device_caps_valid | capture | metadata, metadata)
    old_driver = _capability(b"Old Cam", capture, 0)
    assert v4l2_capture_name(webcam) == "HD Webcam"
    assert v4l2_capture_name(meta_node) is None
    assert v4l2_capture_name(old_driver) == "Old Cam"
