"""The machine's real microphone and camera, as aiortc tracks.

Each device is read by a worker thread, as aiortc's ``contrib.media`` does, because the reads
block: PortAudio's ``Stream.read`` for the microphone, PyAV's demuxer for the camera. The thread
hands frames to the event loop through a small bounded queue; when the consumer falls behind the
oldest frames are dropped, so live capture never builds up latency. Stopping a track stops its
thread, waits for it (a read returns within one frame period) and closes the device.

Opening failures become :class:`~dpkit.client.devices.DeviceError` with one of the seed's three
``noUserMedia`` failures, chosen by :func:`classify` and keeping the original exception as the
cause::

    not available    no backend installed, no such device, no default input device
    not permitted    EACCES / EPERM, "permission denied", an OS privacy policy
    not usable       busy (EBUSY), unsupported format or sample rate, anything else

The microphone goes through PortAudio (the ``sounddevice`` package; on Linux it loads the
system's ``libportaudio2``). The camera goes through PyAV's input devices: ``v4l2`` on Linux,
``avfoundation`` on macOS, ``dshow`` on Windows.
"""

from __future__ import annotations

import asyncio
import errno
import fractions
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import av
import av.container
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dpkit.client.devices import DeviceError, DeviceFailure, UserMedia
from dpkit.client.options import MediaDevices
from dpkit.errors import DpkitError, NotSupported

logger = logging.getLogger("dpkit.media.capture")

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960
"""Microphone frames are 20 ms of 48 kHz mono s16, as Opus and the synthetic tone use."""

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)

MICROPHONE_QUEUE = 10
CAMERA_QUEUE = 3
"""Frames a track buffers for a slow consumer before dropping the oldest: 200 ms of audio, and
a few video frames (a stale picture is worse than a skipped one)."""

JOIN_TIMEOUT_S = 2.0
"""How long ``stop()`` waits for a worker thread. A read returns within one frame period, so
only a device that has hung takes longer; its thread is then left behind (it is a daemon)."""

AUDIO_EXTRA = "pip install 'dpkit[audio]'"
"""What installs the microphone and speaker backend (the ``sounddevice`` package)."""
PORTAUDIO_ADVICE = "no PortAudio: install libportaudio2 (apt-get install libportaudio2)"

# PortAudio's PaErrorCode values (portaudio.h) that say something about the device.
PA_UNANTICIPATED_HOST_ERROR = -9999
PA_INVALID_DEVICE = -9996
PA_DEVICE_UNAVAILABLE = -9985

_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ENOTTY})
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})

# Phrases that libraries put in messages when they have no errno to give. Denial is checked
# first: "permission denied opening device" is about permission, not absence.
_DENIED_PHRASES = ("permission denied", "not permitted", "not authorized", "access denied")
_ABSENT_PHRASES = (
    "no default input device",
    "no default output device",
    "error querying device",  # sounddevice's words for an index PortAudio does not have
    "no input device matching",
    "no output device matching",
    "no such device",
    "no such file",
    "device not found",
    "library not found",
)


class BackendMissing(DpkitError):
    """A capture backend (PortAudio, a PyAV input format) is not installed on this machine.

    Opening a device turns it into a :class:`~dpkit.client.devices.DeviceError` (not
    available) that keeps this error's advice: the ``pip install`` or package to install.
    """

    name = "backendMissing"
    advice = f"Install the backend: {AUDIO_EXTRA} for the microphone and speakers."


def classify(exc: BaseException) -> DeviceFailure:
    """Which of the seed's three device failures ``exc`` means; anything unrecognised is unusable.

    Understands ``OSError`` errno values (PyAV raises these), sounddevice's ``PortAudioError``
    codes and host error codes, and, for libraries that give neither, the words of the message.
    """
    if isinstance(exc, BackendMissing | ImportError):
        return DeviceFailure.NOT_AVAILABLE
    if isinstance(exc, PermissionError):
        return DeviceFailure.NOT_PERMITTED
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in _DENIED_ERRNOS:
            return DeviceFailure.NOT_PERMITTED
        if exc.errno in _ABSENT_ERRNOS:
            return DeviceFailure.NOT_AVAILABLE
        return DeviceFailure.NOT_USABLE
    failure = _classify_portaudio(exc)
    if failure is not None:
        return failure
    text = _message(exc)
    if any(phrase in text for phrase in _DENIED_PHRASES):
        return DeviceFailure.NOT_PERMITTED
    if any(phrase in text for phrase in _ABSENT_PHRASES):
        return DeviceFailure.NOT_AVAILABLE
    return DeviceFailure.NOT_USABLE


def _classify_portaudio(exc: BaseException) -> DeviceFailure | None:
    # A PortAudioError can only exist once sounddevice has been imported, so there is no need
    # to import it (and start PortAudio) just to ask.
    sounddevice = sys.modules.get("sounddevice")
    if sounddevice is None or not isinstance(exc, sounddevice.PortAudioError):
        return None
    code = exc.args[1] if len(exc.args) > 1 else None
    if code == PA_INVALID_DEVICE:
        return DeviceFailure.NOT_AVAILABLE
    if code == PA_DEVICE_UNAVAILABLE:  # what PortAudio makes of EBUSY: another program has it
        return DeviceFailure.NOT_USABLE
    host = exc.args[2] if len(exc.args) > 2 else None
    if code == PA_UNANTICIPATED_HOST_ERROR and isinstance(host, tuple) and len(host) > 1:
        # ALSA reports host errors as negative errno values.
        host_code = abs(host[1]) if isinstance(host[1], int) else None
        if host_code in _DENIED_ERRNOS:
            return DeviceFailure.NOT_PERMITTED
        if host_code in _ABSENT_ERRNOS:
            return DeviceFailure.NOT_AVAILABLE
    return None  # let the message decide


def _message(exc: BaseException) -> str:
    # repr(args) rather than str(exc): PortAudioError.__str__ queries PortAudio, which may be
    # the thing that failed.
    return f"{type(exc).__name__} {exc.args!r}".lower()


def device_error(what: str, exc: BaseException) -> DeviceError:
    """A :class:`DeviceError` for ``exc``, classified, naming the device and keeping the text.

    A missing backend's advice (what to install) becomes the error's advice.
    """
    text = exc.message if isinstance(exc, DpkitError) else str(exc) or type(exc).__name__
    advice = exc.advice if isinstance(exc, BackendMissing) else None
    return DeviceError(classify(exc), f"{what}: {text}", advice=advice)


# -- the worker thread ---------------------------------------------------------------------------

_FrameT = TypeVar("_FrameT", av.AudioFrame, av.VideoFrame)
_FrameT_co = TypeVar("_FrameT_co", av.AudioFrame, av.VideoFrame, covariant=True)


class _Device(Protocol[_FrameT_co]):
    """An opened device, driven from the worker thread only."""

    def start(self) -> None: ...

    def read(self) -> _FrameT_co | None:
        """Block for the next frame, at most about one frame period; None when the source ends."""

    def close(self) -> None: ...


class _CaptureThread(Generic[_FrameT]):
    """Runs ``device`` in a worker thread, started on the first ``get()``, feeding a queue."""

    def __init__(self, name: str, device: _Device[_FrameT], queue_size: int) -> None:
        self._name = name
        self._device: _Device[_FrameT] = device
        self._queue_size = queue_size
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_FrameT | None] | None = None
        self._stopped = False
        self.error: DeviceError | None = None
        self.dropped = 0

    async def get(self) -> _FrameT | None:
        """The next frame, or None once the device has ended, failed or been stopped."""
        if self._stopped:
            return None
        if self._queue is None:
            self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue(self._queue_size)
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        return await self._queue.get()

    def stop(self) -> None:
        """Stop the thread and wait for it to close the device; close it here if never started."""
        if self._stopped:
            return
        self._stopped = True
        self._quit.set()
        if self._thread is None:
            self._close_device()
            return
        if self._thread is threading.current_thread():
            return
        self._thread.join(JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            logger.warning("%s did not stop within %g s; leaving it", self._name, JOIN_TIMEOUT_S)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._device.start()
            while not self._quit.is_set():
                frame = self._device.read()
                if frame is None:
                    logger.info("%s: the device ended", self._name)
                    break
                if not self._hand_over(frame):
                    break
        except Exception as exc:
            self.error = device_error(self._name.removeprefix("dpkit-"), exc)
            self.error.__cause__ = exc
            logger.warning("%s failed: %s", self._name, self.error.message)
        finally:
            self._close_device()
            self._hand_over(None)

    def _hand_over(self, frame: _FrameT | None) -> bool:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._put, frame)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            return False
        return True

    def _put(self, frame: _FrameT | None) -> None:
        assert self._queue is not None
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(frame)

    def _close_device(self) -> None:
        try:
            self._device.close()
        except Exception:
            logger.warning("%s: closing the device failed", self._name, exc_info=True)


# -- microphone ----------------------------------------------------------------------------------


def load_portaudio() -> Any:
    """The ``sounddevice`` module, or :class:`BackendMissing` when PortAudio cannot be loaded.

    Importing it starts PortAudio, which scans the devices once: see :func:`rescan_audio`.
    """
    try:
        import sounddevice  # type: ignore[import-untyped]
    except ImportError as exc:
        if exc.name != "sounddevice":
            raise BackendMissing(
                f"sounddevice cannot be imported ({exc})",
                advice=f"Reinstall the microphone and speaker backend: {AUDIO_EXTRA}.",
            ) from exc
        raise BackendMissing(
            f"the sounddevice package is not installed ({AUDIO_EXTRA})",
            advice=f"Install dpkit's audio extra for the microphone and speakers: {AUDIO_EXTRA}.",
        ) from exc
    except OSError as exc:
        raise BackendMissing(
            f"{PORTAUDIO_ADVICE} ({exc})",
            advice="Install the PortAudio library: apt-get install libportaudio2 (Debian, "
            "Ubuntu), brew install portaudio (macOS).",
        ) from exc
    except Exception as exc:  # PortAudio loaded but failed to start
        raise BackendMissing(f"PortAudio failed to start: {exc}") from exc
    return sounddevice


class _Scans:
    """How many times this process restarted PortAudio (PortAudio itself is process-wide)."""

    count: ClassVar[int] = 0


def audio_scan() -> int:
    """Which device list PortAudio has: it changes only at :func:`rescan_audio`, so an answer
    read from one list (is there an output device?) holds until this number changes."""
    return _Scans.count


def rescan_audio() -> None:
    """Restart PortAudio so it sees devices (or a sound server) that appeared since it started.

    PortAudio lists devices only when it starts. Restarting closes every open PortAudio stream,
    so call this only while no :class:`MicrophoneTrack` is open.
    """
    sounddevice = sys.modules.get("sounddevice")
    if sounddevice is None:
        return  # not started yet: it will scan when first loaded
    _Scans.count += 1
    if getattr(sounddevice, "_initialized", 1) > 0:  # a failed restart leaves it stopped
        sounddevice._terminate()
    sounddevice._initialize()


class _PortAudioInput:
    """A PortAudio input stream read in 20 ms blocks of 48 kHz mono s16."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._samples = 0
        self._time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.overflows = 0

    def start(self) -> None:
        self._stream.start()

    def read(self) -> av.AudioFrame:
        data, overflowed = self._stream.read(FRAME_SAMPLES)
        if overflowed:
            # PortAudio lost input; pts keep counting samples read, as there is no telling how
            # many were lost.
            self.overflows += 1
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._samples
        frame.time_base = self._time_base
        self._samples += FRAME_SAMPLES
        return frame

    def close(self) -> None:
        try:
            if self._stream.active:
                self._stream.stop()
        finally:
            self._stream.close()


class _CapturedTrack(MediaStreamTrack, Generic[_FrameT]):
    """What both device tracks share: frames from a capture thread, and its state."""

    _capture: _CaptureThread[_FrameT]

    async def _next(self) -> _FrameT:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._capture.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        """End the track, stop capture and close the device; safe to call more than once."""
        super().stop()
        self._capture.stop()

    @property
    def error(self) -> DeviceError | None:
        """Why capture ended, if the device failed."""
        return self._capture.error

    @property
    def running(self) -> bool:
        """Whether the worker thread reading the device is alive."""
        return self._capture.running

    @property
    def dropped(self) -> int:
        """Frames dropped because the consumer fell behind."""
        return self._capture.dropped


class MicrophoneTrack(_CapturedTrack[av.AudioFrame]):
    """A real microphone: 20 ms frames of 48 kHz mono s16 whose pts count samples.

    Made by :func:`open_microphone`. Capture starts on the first ``recv()``; ``stop()`` stops
    the worker thread and closes the device. If the device fails while capturing, ``recv()``
    raises ``MediaStreamError`` and :attr:`error` says why.
    """

    kind = "audio"

    def __init__(self, stream: Any, name: str = "microphone") -> None:
        super().__init__()
        self._input = _PortAudioInput(stream)
        self._capture = _CaptureThread[av.AudioFrame](
            f"dpkit-{name}", self._input, MICROPHONE_QUEUE
        )

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of sound from the device."""
        return await self._next()


def open_microphone(device: str | int | None = None) -> MicrophoneTrack:
    """Open a microphone through PortAudio: ``None`` for the default input, an index, or a name.

    A name may be any unique part of a device name as ``dpkit devices`` lists it. Raises
    :class:`DeviceError` when the device cannot be opened for 48 kHz mono capture.
    """
    what = "microphone" if device is None else f"microphone {device!r}"
    try:
        sounddevice = load_portaudio()
        stream = sounddevice.InputStream(
            device=device,
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="int16",
            blocksize=FRAME_SAMPLES,
        )
    except Exception as exc:
        raise device_error(what, exc) from exc
    logger.debug("opened %s: %s", what, stream.device)
    return MicrophoneTrack(stream)


# -- camera --------------------------------------------------------------------------------------


class _VideoInput:
    """A PyAV input device whose frames are re-timed on a 90 kHz clock starting at zero."""

    def __init__(self, container: av.container.InputContainer) -> None:
        self._container = container
        self._frames: Iterator[av.VideoFrame] | None = None
        self._origin: float | None = None
        self._device_clock = True
        self._last_pts = -1

    def start(self) -> None:
        self._frames = self._container.decode(video=0)

    def read(self) -> av.VideoFrame | None:
        assert self._frames is not None
        frame = next(self._frames, None)
        if frame is None:
            return None
        frame.pts = self._retime(frame.time)
        frame.time_base = VIDEO_TIME_BASE
        if frame.format.name != "yuv420p":
            # What aiortc's encoders want; converting here keeps the work off the event loop.
            pts = frame.pts
            frame = frame.reformat(format="yuv420p")
            frame.pts = pts
            frame.time_base = VIDEO_TIME_BASE
        return frame

    def _retime(self, device_time: float | None) -> int:
        # Prefer the device's capture time, which is free of our thread's scheduling jitter; a
        # source without timestamps is timed by arrival, decided once so the two never mix.
        if self._origin is None:
            self._device_clock = device_time is not None
        now = device_time if self._device_clock and device_time is not None else time.monotonic()
        if self._origin is None:
            self._origin = now
        pts = max(round((now - self._origin) * VIDEO_CLOCK_RATE), self._last_pts + 1)
        self._last_pts = pts
        return pts

    def close(self) -> None:
        self._container.close()


class CameraTrack(_CapturedTrack[av.VideoFrame]):
    """A real camera: yuv420p frames with pts on a 90 kHz clock starting at zero.

    Made by :func:`open_camera` (or :func:`open_video_input` for any PyAV input). Capture
    starts on the first ``recv()``; ``stop()`` stops the worker thread and closes the device.
    """

    kind = "video"

    def __init__(self, container: av.container.InputContainer, name: str = "camera") -> None:
        super().__init__()
        self._capture = _CaptureThread[av.VideoFrame](
            f"dpkit-{name}", _VideoInput(container), CAMERA_QUEUE
        )

    async def recv(self) -> av.VideoFrame:
        """The next picture from the device."""
        return await self._next()


def open_video_input(
    url: str, format: str, options: Mapping[str, str] | None = None, *, name: str = "camera"
) -> CameraTrack:
    """Open any PyAV video input (``format`` is a libavdevice or libavformat name) as a track."""
    what = f"{name} {url!r}"
    try:
        if not _has_input_format(format):
            raise BackendMissing(f"this PyAV build has no {format!r} input")
        container = av.open(url, format=format, options=dict(options or {}))
    except Exception as exc:
        raise device_error(what, exc) from exc
    if not container.streams.video:
        container.close()
        raise DeviceError(DeviceFailure.NOT_USABLE, f"{what}: it has no video stream")
    return CameraTrack(container, name)


def open_camera(
    device: str | None = None, width: int = 640, height: int = 480, fps: float = 15.0
) -> CameraTrack:
    """Open a camera with this platform's backend; ``None`` for the first (default) camera.

    ``device`` is a path on Linux (``/dev/video0``), an index or name on macOS, and a name on
    Windows, where DirectShow has no default camera. The size and rate are requests that the
    device may refuse, which raises :class:`DeviceError` (not usable).
    """
    if width <= 0 or height <= 0 or not fps > 0:
        raise ValueError(f"camera size and rate must be positive, got {width}x{height} @ {fps}")
    url, format, options = camera_input(device, width, height, fps)
    return open_video_input(url, format, options)


def camera_input(
    device: str | None,
    width: int,
    height: int,
    fps: float,
    platform: str = sys.platform,
) -> tuple[str, str, dict[str, str]]:
    """The PyAV ``(url, format, options)`` that opens ``device`` on ``platform``."""
    options = {"video_size": f"{width}x{height}", "framerate": f"{fps:g}"}
    if platform.startswith("linux"):
        return device or "/dev/video0", "v4l2", options
    if platform == "darwin":
        return device or "default", "avfoundation", options
    if platform == "win32":
        if not device:
            raise DeviceError(
                DeviceFailure.NOT_AVAILABLE,
                "camera: DirectShow has no default camera; name one, e.g. 'Integrated Camera'",
            )
        return device if device.startswith("video=") else f"video={device}", "dshow", options
    raise DeviceError(DeviceFailure.NOT_AVAILABLE, f"camera: no capture backend for {platform}")


# The PyAV input format that captures cameras on each platform (see camera_input).
_CAMERA_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}


def _has_input_format(name: str) -> bool:
    # PyAV lists some formats under all their aliases at once, e.g. "video4linux2,v4l2".
    return any(name in available.split(",") for available in av.formats_available)


# -- the provider --------------------------------------------------------------------------------

_TrackT = TypeVar("_TrackT", MicrophoneTrack, CameraTrack)


class SystemDevices:
    """A :class:`~dpkit.client.devices.DeviceProvider` that opens this machine's real devices.

    A Scene's default. :meth:`probe` checks that the devices exist before the user is asked
    for consent, and raises ``NotSupported`` when this machine has no capture backend at all.
    """

    #: Real devices need the user's consent (a Scene asks through its consent gate).
    needs_consent = True

    def __init__(
        self,
        microphone: str | int | None = None,
        camera: str | None = None,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
    ) -> None:
        self._microphone = microphone
        self._camera = (camera, width, height, fps)

    async def probe(self, devices: MediaDevices) -> None:
        """Raise :class:`DeviceError` (not available) if a requested device does not exist, and
        ``NotSupported`` if this machine cannot capture media at all."""
        if devices.any:
            await asyncio.to_thread(self._probe, devices)

    def _probe(self, devices: MediaDevices) -> None:
        audio, video = self._check_backends()
        if devices.microphone:
            if audio is not None:
                raise device_error("microphone", audio)
            self._probe_microphone()
        if devices.camera:
            if video is not None:
                raise device_error("camera", video)
            self._probe_camera()

    @staticmethod
    def _check_backends() -> tuple[BackendMissing | None, BackendMissing | None]:
        """What stops the microphone and the camera backends; ``NotSupported`` if both are."""
        audio, video = audio_backend_problem(), video_backend_problem()
        if audio is not None and video is not None:
            raise NotSupported(
                f"this machine cannot capture media: {audio.message}; {video.message}",
                advice=f"Install a capture backend ({AUDIO_EXTRA} for the microphone), or "
                "connect with no devices requested (requested_media_devices={}, "
                "required_media_devices={}).",
            )
        return audio, video

    def _probe_microphone(self) -> None:
        what = "microphone" if self._microphone is None else f"microphone {self._microphone!r}"
        try:
            load_portaudio().query_devices(self._microphone, kind="input")
        except Exception as exc:
            failure = device_error(what, exc)
            if failure.failure is not DeviceFailure.NOT_AVAILABLE:
                raise failure from exc
            raise DeviceError(
                DeviceFailure.NOT_AVAILABLE,
                failure.detail,
                advice=f"No {what} was found: plug one in (`dpkit devices` lists what PortAudio "
                "sees), or request no microphone, or pass devices=SyntheticDevices().",
            ) from exc

    def _probe_camera(self) -> None:
        device, width, height, fps = self._camera
        url, _format, _options = camera_input(device, width, height, fps)
        if sys.platform.startswith("linux") and not os.path.exists(url):
            raise DeviceError(
                DeviceFailure.NOT_AVAILABLE,
                f"camera: there is no {url}",
                advice=f"No camera at {url}: plug one in (`dpkit devices` lists the cameras), "
                "or request no camera.",
            )

    async def open(self, devices: MediaDevices) -> UserMedia:
        """Open the requested devices, closing any already opened if a later one fails."""
        if devices.any:
            await asyncio.to_thread(self._check_backends)
        media = UserMedia()
        try:
            if devices.microphone:
                media.microphone = await _off_loop(lambda: open_microphone(self._microphone))
            if devices.camera:
                media.camera = await _off_loop(lambda: open_camera(*self._camera))
        except BaseException:
            media.stop()
            raise
        return media


def audio_backend_problem() -> BackendMissing | None:
    """Why this machine cannot open a microphone at all (no sounddevice, no PortAudio), or None."""
    try:
        load_portaudio()
    except BackendMissing as exc:
        return exc
    return None


def video_backend_problem(platform: str = sys.platform) -> BackendMissing | None:
    """Why this machine cannot open a camera at all (no input format in PyAV), or None."""
    format = _CAMERA_FORMATS.get("linux" if platform.startswith("linux") else platform)
    if format is None:
        return BackendMissing(
            f"no capture backend for {platform}",
            advice="Cameras are captured on Linux, macOS and Windows only: request no camera.",
        )
    if not _has_input_format(format):
        return BackendMissing(
            f"this PyAV build has no {format!r} input",
            advice="Install a PyAV built with libavdevice (the PyPI wheels are).",
        )
    return None


async def _off_loop(opener: Callable[[], _TrackT]) -> _TrackT:
    # Opening a device can block for a while (v4l2 negotiates formats; PortAudio may connect to
    # a sound server), so it runs in a thread. An open cannot be interrupted: if the caller is
    # cancelled meanwhile, whatever it opens is stopped as soon as it is done.
    future = asyncio.get_running_loop().run_in_executor(None, opener)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_stop_opened)
        raise


def _stop_opened(future: asyncio.Future[_TrackT]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().stop()
