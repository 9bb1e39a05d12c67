"""What microphones, cameras and speakers this machine has, as the capture backends see them.

Microphones and speakers come from PortAudio, the backend :func:`~dpkit.media.capture.
open_microphone` uses, so a listed ``id`` can be passed straight to it. Cameras come from the
V4L2 device nodes (``/dev/video*``) on Linux, asked with the ``VIDIOC_QUERYCAP`` ioctl whether
they capture video: a webcam usually has a second node that only carries metadata. Cameras are
not listed on other platforms: PyAV's ``avfoundation`` and ``dshow`` inputs only print their
device lists to FFmpeg's log; ``open_camera()`` still opens the default camera there.

A backend that is missing or fails leaves its part of the list empty and says why in
:attr:`DeviceList.problems`, so one broken backend never hides the others.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dpkit.media.capture import BackendMissing, load_portaudio

DeviceKind = Literal["microphone", "camera", "speaker"]

V4L2_DEFAULT = "/dev/video0"
"""The camera :func:`~dpkit.media.capture.open_camera` opens when given none, on Linux."""

# struct v4l2_capability (linux/videodev2.h): driver[16], card[32], bus_info[32], then the
# version, capabilities and device_caps words and three reserved ones.
_V4L2_CAPABILITY = struct.Struct("=16s32s32sIII12x")
_VIDIOC_QUERYCAP = (2 << 30) | (_V4L2_CAPABILITY.size << 16) | (ord("V") << 8) | 0
_V4L2_CAP_VIDEO_CAPTURE = 0x00000001
_V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
_V4L2_CAP_DEVICE_CAPS = 0x80000000


@dataclass(frozen=True)
class DeviceInfo:
    """One device: ``id`` is what the matching ``open_*`` function accepts."""

    kind: DeviceKind
    name: str
    id: str
    backend: str
    default: bool


class DeviceList(list[DeviceInfo]):
    """The devices found, and in :attr:`problems` why a backend could list none."""

    def __init__(self, devices: list[DeviceInfo], problems: list[str]) -> None:
        super().__init__(devices)
        self.problems = problems

    def of_kind(self, kind: DeviceKind) -> list[DeviceInfo]:
        """The devices of one kind, in the order their backend lists them."""
        return [device for device in self if device.kind == kind]


def list_devices() -> DeviceList:
    """Every microphone, speaker and camera the backends can see, with any problems met."""
    audio, audio_problems = portaudio_devices()
    cameras, camera_problems = camera_devices()
    return DeviceList(audio + cameras, audio_problems + camera_problems)


def portaudio_devices() -> tuple[list[DeviceInfo], list[str]]:
    """PortAudio's input devices as microphones and output devices as speakers."""
    try:
        sounddevice = load_portaudio()
        hostapis = sounddevice.query_hostapis()
        entries = sounddevice.query_devices()
    except BackendMissing as exc:
        return [], [exc.message]
    except Exception as exc:
        return [], [f"PortAudio could not list devices: {exc}"]
    default_input = _default_index(sounddevice, "input")
    default_output = _default_index(sounddevice, "output")
    devices: list[DeviceInfo] = []
    for entry in entries:
        backend = f"portaudio/{hostapis[entry['hostapi']]['name']}"
        index = entry["index"]
        if entry["max_input_channels"] > 0:
            devices.append(
                DeviceInfo("microphone", entry["name"], str(index), backend, index == default_input)
            )
        if entry["max_output_channels"] > 0:
            devices.append(
                DeviceInfo("speaker", entry["name"], str(index), backend, index == default_output)
            )
    problems = []
    if not devices:
        problems.append("PortAudio sees no sound devices: no sound card, and no sound server")
    return devices, problems


def _default_index(sounddevice: Any, kind: str) -> int | None:
    try:
        index: int = sounddevice.query_devices(kind=kind)["index"]
    except Exception:  # PortAudio has no default device of this kind
        return None
    return index


def camera_devices() -> tuple[list[DeviceInfo], list[str]]:
    """The cameras among ``/dev/video*`` on Linux; elsewhere none, with the reason."""
    if not sys.platform.startswith("linux"):
        return [], [f"listing cameras is not implemented on {sys.platform}"]
    devices: list[DeviceInfo] = []
    problems: list[str] = []
    for path in sorted(Path("/dev").glob("video*"), key=_node_number):
        try:
            name = _query_v4l2(path)
        except PermissionError:
            # Keep it: the user may well want this camera, and the problem says what to fix.
            name = _sysfs_name(path)
            problems.append(f"cannot open {path}: permission denied (join the 'video' group)")
        except OSError as exc:
            if exc.errno != errno.ENOTTY:
                problems.append(f"cannot query {path}: {exc.strerror or exc}")
            continue
        if name is not None:
            label = name or _sysfs_name(path)
            devices.append(
                DeviceInfo("camera", label, str(path), "v4l2", str(path) == V4L2_DEFAULT)
            )
    return devices, problems


def v4l2_capture_name(capability: bytes) -> str | None:
    """The card name in a ``struct v4l2_capability``, or None if the node cannot capture video."""
    _driver, card, _bus, _version, capabilities, device_caps = _V4L2_CAPABILITY.unpack(capability)
    # device_caps describes this node; capabilities, the whole physical device.
    caps = device_caps if capabilities & _V4L2_CAP_DEVICE_CAPS else capabilities
    if not caps & (_V4L2_CAP_VIDEO_CAPTURE | _V4L2_CAP_VIDEO_CAPTURE_MPLANE):
        return None
    name: str = card.split(b"\0", 1)[0].decode("utf-8", "replace")
    return name


def _query_v4l2(path: Path) -> str | None:
    # Non-blocking: querying a camera another program is using must not wait for it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buffer = bytearray(_V4L2_CAPABILITY.size)
        fcntl.ioctl(fd, _VIDIOC_QUERYCAP, buffer)
    finally:
        os.close(fd)
    return v4l2_capture_name(bytes(buffer))


def _sysfs_name(path: Path) -> str:
    try:
        return Path("/sys/class/video4linux", path.name, "name").read_text().strip()
    except OSError:
        return path.name


def _node_number(path: Path) -> tuple[int, str]:
    match = re.fullmatch(r"video(\d+)", path.name)
    return (int(match.group(1)) if match else sys.maxsize, path.name)
