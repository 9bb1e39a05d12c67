"""The receiving side of the session density benchmark: many sessions, counted cheaply.

``session_density.py`` starts a few receiver processes (``multiprocessing`` "spawn"), each of
which holds a share of the sessions as :class:`dpkit.Scene` clients and answers commands on a
pipe: connect more sessions, start or stop their persona speaking, take a mark (counts and CPU),
stop. Every command carries an id and is carried out in a task of its own, so a slow one (a
speech waiting to start) never delays a mark.

A receiver counts frames from RTP headers (:class:`RtpCounter`) instead of decoding them. aiortc
decodes every received frame in a thread of the receiving process, which on a small machine costs
more than the server's encoding; :class:`RtpTap` is the one place that changes aiortc for this:
it replaces ``RTCRtpReceiver._handle_rtp_packet`` in the receiver process (see
:meth:`RtpTap.install`) so that each persona packet is counted, and a light session's packet then
dropped before the jitter buffer and the decoder. A receiver process started with ``decode``
set instead hands every packet on to aiortc as well, decodes it and checks each picture
(:func:`check_picture`), so the RTP counts can be compared with real decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import signal
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiortc
import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, pack_remb_fci

from dpkit import Persona, Scene
from dpkit.client.persistence import MemorySessionStore
from dpkit.errors import DpkitError
from dpkit.tasks import TaskOwner

LOOPBACK = ("127.0.0.1",)
AUDIO_CLOCK = 48000
AUDIO_FRAME_S = 0.02  # 20 ms Opus frames
VIDEO_CLOCK = 90000
CONNECT_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0  # a speech is answered once synthesised, slow on a loaded machine
SPEECH_START_TIMEOUT_S = 10.0
DISCONNECT_TIMEOUT_S = 20.0
LAG_TICK_S = 0.01

#: A few sentences (about 15 s of speech): long enough to outlast a rotation period.
SPEECH = (
    "Session {index} here. Thank you for waiting. I am going to talk for a little while so "
    "that this benchmark can measure what a speaking persona costs the server. My mouth moves "
    "with every word, and the audio carries my voice instead of quiet room tone. When I am "
    "asked to stop, I will stop at once, and another session will start speaking instead."
)


def cpu_seconds() -> float:
    """User + system CPU of this whole process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LagMonitor:
    """How late an event loop wakes from a short sleep: a busy or blocked loop wakes late."""

    def __init__(self) -> None:
        self._lags: list[float] = []

    async def run(self) -> None:
        while True:
            due = time.perf_counter() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            self._lags.append(max(0.0, time.perf_counter() - due))

    def take(self) -> tuple[float, float]:
        """The 99th percentile and the largest lag (ms) since the last call."""
        lags, self._lags = sorted(self._lags), []
        if not lags:
            return 0.0, 0.0
        return lags[int(0.99 * (len(lags) - 1))] * 1000, lags[-1] * 1000


# --- counting RTP -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamCounts:
    """One stream's RTP so far (see :class:`RtpCounter`)."""

    packets: int = 0
    frames: int = 0
    lost: int = 0
    skipped: int = 0
    late: int = 0
    foreign: int = 0

    def minus(self, earlier: StreamCounts) -> StreamCounts:
        return StreamCounts(
            self.packets - earlier.packets,
            self.frames - earlier.frames,
            self.lost - earlier.lost,
            self.skipped - earlier.skipped,
            self.late - earlier.late,
            self.foreign - earlier.foreign,
        )


class RtpCounter:
    """Frames, lost packets and skipped frames of one RTP stream, from its headers alone.

    * a video frame is the packets that share a timestamp, ended by the marker bit (a frame
      whose marker packet is lost is not counted: a decoder could not show it either); an audio
      frame is one packet;
    * ``lost``: packets missing from the sequence numbers (a forward jump of k is k - 1 lost);
      ``late``: packets that came after a later one (reordered, duplicated or retransmitted),
      not counted as frames;
    * ``skipped``: frames missing from the timestamps although no packet was lost: the sender
      never sent them (its track skipped ahead after a stall). A timestamp jump across lost
      packets counts as loss, not as skipping (for audio, the jump less the lost packets);
    * ``foreign``: packets of another SSRC than the stream's first (retransmissions on their
      own SSRC), ignored.

    Sequence numbers and timestamps wrap (16 and 32 bits); both start anywhere.
    """

    def __init__(self, frame_step: float, *, video: bool) -> None:
        if frame_step <= 0:
            raise ValueError(f"frame_step must be positive, got {frame_step}")
        self._step = frame_step
        self._video = video
        self._ssrc: int | None = None
        self._sequence = 0
        self._timestamp = 0
        self.packets = 0
        self.frames = 0
        self.lost = 0
        self.skipped = 0
        self.late = 0
        self.foreign = 0

    def add(self, ssrc: int, sequence: int, timestamp: int, marker: bool) -> None:
        if self._ssrc is None:
            self._ssrc, self._sequence, self._timestamp = ssrc, sequence, timestamp
            self.packets = 1
            self.frames = int(marker or not self._video)
            return
        if ssrc != self._ssrc:
            self.foreign += 1
            return
        ahead = (sequence - self._sequence) & 0xFFFF
        if ahead == 0 or ahead >= 0x8000:
            self.late += 1
            return
        self.packets += 1
        self.lost += ahead - 1
        self._sequence = sequence
        elapsed = (timestamp - self._timestamp) & 0xFFFFFFFF
        if 0 < elapsed < 0x80000000:
            gap = max(0, round(elapsed / self._step) - 1)
            if self._video:
                self.skipped += gap if ahead == 1 else 0
            else:
                self.skipped += max(0, gap - (ahead - 1))
            self._timestamp = timestamp
        if marker or not self._video:
            self.frames += 1

    def counts(self) -> StreamCounts:
        return StreamCounts(
            self.packets, self.frames, self.lost, self.skipped, self.late, self.foreign
        )


@dataclass
class Route:
    """Where one persona track's packets go: a counter, and on to aiortc's decoder or not."""

    counter: RtpCounter
    decode: bool


PacketHandler = Callable[[RTCRtpReceiver, RtpPacket, int], Awaitable[None]]

#: aiortc 1.16's private receiver state that :func:`_account_only` keeps up to date.
_PRIVATE = "_RTCRtpReceiver__"
_PRIVATE_NAMES = ("codecs", "remote_streams", "remote_bitrate_estimator", "rtcp_ssrc")


class RtpTap:
    """Counts the persona's RTP in this process, and keeps light sessions' packets from aiortc.

    One per receiver process. Tracks are routed with :meth:`route` once their scene has
    connected; packets of a track not routed yet (while it connects) are decoded if
    :attr:`decode_unrouted` is set, else dropped uncounted.
    """

    def __init__(self) -> None:
        self._routes: weakref.WeakKeyDictionary[MediaStreamTrack, Route] = (
            weakref.WeakKeyDictionary()
        )
        self.decode_unrouted = True
        self._original: PacketHandler | None = None

    def route(self, track: MediaStreamTrack, counter: RtpCounter, *, decode: bool) -> None:
        self._routes[track] = Route(counter, decode)

    def install(self) -> None:
        """Replace ``RTCRtpReceiver._handle_rtp_packet`` in this process (the whole patch).

        aiortc's DTLS transport hands every decrypted RTP packet to its receiver's
        ``_handle_rtp_packet``, which feeds the bitrate estimator (REMB), the RTCP statistics,
        NACKs, the jitter buffer and then the decoder thread. The replacement counts the packet
        for its track and, for a session that decodes, calls the original; for a light session
        it only does what the sender relies on, REMB and the statistics that receiver reports
        carry (aiortc's RTCP task still sends those), and drops the packet. Light sessions send
        no NACKs or PLIs: a loss is counted, not repaired.
        """
        if self._original is not None:
            return
        names = RTCRtpReceiver.__init__.__code__.co_names
        missing = [name for name in _PRIVATE_NAMES if _PRIVATE + name not in names]
        if missing:
            raise RuntimeError(
                f"aiortc {aiortc.__version__}: RTCRtpReceiver no longer has "
                f"{', '.join(missing)}; update benchmarks/density_receivers.py's RtpTap"
            )
        original: PacketHandler = RTCRtpReceiver._handle_rtp_packet
        self._original = original
        routes = self._routes

        async def handle(receiver: RTCRtpReceiver, packet: RtpPacket, arrival_time_ms: int) -> None:
            route = routes.get(receiver.track)
            if route is not None:
                route.counter.add(
                    packet.ssrc, packet.sequence_number, packet.timestamp, bool(packet.marker)
                )
            if route.decode if route is not None else self.decode_unrouted:
                await original(receiver, packet, arrival_time_ms)
            elif route is not None:
                await _account_only(receiver, packet, arrival_time_ms)

        setattr(RTCRtpReceiver, "_handle_rtp_packet", handle)  # noqa: B010 (mypy: a method)


async def _account_only(receiver: RTCRtpReceiver, packet: RtpPacket, arrival_time_ms: int) -> None:
    """What aiortc's receiver does with a packet before reassembling it, REMB and statistics."""
    if not getattr(receiver, "_enabled", True):
        return
    estimator = getattr(receiver, _PRIVATE + "remote_bitrate_estimator")
    rtcp_ssrc = getattr(receiver, _PRIVATE + "rtcp_ssrc")
    if estimator is not None and packet.extensions.abs_send_time is not None:
        remb = estimator.add(
            abs_send_time=packet.extensions.abs_send_time,
            arrival_time_ms=arrival_time_ms,
            payload_size=len(packet.payload) + packet.padding_size,
            ssrc=packet.ssrc,
        )
        if rtcp_ssrc is not None and remb is not None:
            feedback = RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb)
            )
            await receiver._send_rtcp(feedback)
    codec = getattr(receiver, _PRIVATE + "codecs").get(packet.payload_type)
    if codec is None:
        return
    streams: dict[int, StreamStatistics] = getattr(receiver, _PRIVATE + "remote_streams")
    if packet.ssrc not in streams:
        streams[packet.ssrc] = StreamStatistics(codec.clockRate)
    streams[packet.ssrc].add(packet)


# --- checking decoded pictures ----------------------------------------------------------------

SKIN = np.array([241.0, 196.0, 162.0], dtype=np.float32)  # dpkit.server.persona_media.face.SKIN
SKIN_TOLERANCE = 40.0  # per channel, for VP8's loss
MIN_CENTRE_SKIN = 0.3  # the share of the picture's central 20 % x 20 % that is skin (0.8 drawn)
LUMA_MEAN = (90.0, 230.0)  # the drawn persona: 164
LUMA_SPREAD = (12.0, 90.0)  # standard deviation; the drawn persona: 38
CHANGE_LUMA = 0.3  # mean absolute luma difference that counts as a new picture


def check_picture(rgb: npt.NDArray[Any], width: int, height: int) -> str:
    """Why a decoded RGB picture is not the persona's (empty: it is).

    Not black, not grey, not garbage: the configured size, a mean luma and a spread in the
    drawn persona's band, and the face's skin colour filling the centre.
    """
    if rgb.shape[:2] != (height, width):
        return f"size {rgb.shape[1]}x{rgb.shape[0]}, not {width}x{height}"
    small = rgb[::4, ::4].astype(np.float32)
    luma = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    mean, spread = float(luma.mean()), float(luma.std())
    if not LUMA_MEAN[0] <= mean <= LUMA_MEAN[1]:
        return f"mean luma {mean:.0f} outside {LUMA_MEAN[0]:.0f}..{LUMA_MEAN[1]:.0f}"
    if not LUMA_SPREAD[0] <= spread <= LUMA_SPREAD[1]:
        return f"luma spread {spread:.1f} outside {LUMA_SPREAD[0]:.0f}..{LUMA_SPREAD[1]:.0f}"
    rows, cols = small.shape[:2]
    centre = small[int(rows * 0.4) : int(rows * 0.6), int(cols * 0.4) : int(cols * 0.6)]
    skin = float((np.abs(centre - SKIN).max(axis=2) < SKIN_TOLERANCE).mean())
    if skin < MIN_CENTRE_SKIN:
        return f"skin covers {skin:.0%} of the centre, under {MIN_CENTRE_SKIN:.0%}"
    return ""


@dataclass
class PictureChecks:
    """The decoded pictures of one sampled session that were checked, and how they did."""

    checked: int = 0
    passed: int = 0
    changed: int = 0
    failure: str = ""
    _previous: npt.NDArray[np.float32] | None = field(default=None, repr=False)

    def add(self, frame: av.VideoFrame, width: int, height: int) -> None:
        rgb = frame.to_ndarray(format="rgb24")
        why = check_picture(rgb, width, height)
        self.checked += 1
        if why:
            self.failure = self.failure or why
        else:
            self.passed += 1
        luma = rgb[::4, ::4, 1].astype(np.float32)
        previous = self._previous
        if previous is not None and previous.shape == luma.shape:
            self.changed += float(np.abs(luma - previous).mean()) > CHANGE_LUMA
        self._previous = luma

    def counts(self) -> tuple[int, int, int, str]:
        return self.checked, self.passed, self.changed, self.failure


# --- the receiver process ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiverSpec:
    """What one receiver process holds: which sessions (global indices), decoded or not."""

    name: str
    api_key: str
    sessions: tuple[int, ...]
    decode: bool
    width: int
    height: int
    fps: float


@dataclass(frozen=True)
class SessionMark:
    """One session's counts at a mark (everything counted since it connected)."""

    index: int
    video: StreamCounts
    audio: StreamCounts
    decoded_video: int = 0
    decoded_audio: int = 0
    pictures: tuple[int, int, int, str] = (0, 0, 0, "")


@dataclass(frozen=True)
class ReceiverMark:
    """A receiver process at one moment."""

    cpu: float
    clock: float
    lag_p99_ms: float
    lag_max_ms: float
    sessions: tuple[SessionMark, ...]
    #: Every change of the number of its sessions speaking so far: (time.monotonic(), +1 or -1).
    speech_changes: tuple[tuple[float, int], ...]


class _Session:
    """One connected session of a receiver, with its counters."""

    def __init__(self, index: int, scene: Scene, fps: float, decode: bool) -> None:
        self.index = index
        self.scene = scene
        self.persona = Persona(scene)
        self.video = RtpCounter(VIDEO_CLOCK / fps, video=True)
        self.audio = RtpCounter(AUDIO_CLOCK * AUDIO_FRAME_S, video=False)
        self.pictures = PictureChecks() if decode else None
        #: Whether the benchmark wants this session speaking now (it says its text again when
        #: a speech ends).
        self.assigned = False
        self.speaking = asyncio.Event()

    def mark(self) -> SessionMark:
        if self.pictures is None:
            return SessionMark(self.index, self.video.counts(), self.audio.counts())
        return SessionMark(
            self.index,
            self.video.counts(),
            self.audio.counts(),
            self.scene.video_counts.received,
            self.scene.audio_counts.received,
            self.pictures.counts(),
        )


class Receiver:
    """A receiver process's sessions and its side of the control pipe."""

    def __init__(self, spec: ReceiverSpec, control: Connection) -> None:
        self.spec = spec
        self._control = control
        self._tap = RtpTap()
        self._lag = LagMonitor()
        self._pending = list(spec.sessions)
        self._sessions: dict[int, _Session] = {}
        self._speech_changes: list[tuple[float, int]] = []
        self._tasks = TaskOwner(f"receiver-{spec.name}")
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._tap.install()
        self._tasks.spawn(self._lag.run(), "lag")
        loop.add_reader(self._control.fileno(), self._readable)
        try:
            await self._stopped.wait()
        finally:
            loop.remove_reader(self._control.fileno())
            await self._disconnect_all()
            await self._tasks.close()

    def _readable(self) -> None:
        try:
            ident, command, args = self._control.recv()
        except EOFError:  # the benchmark went away: stop
            asyncio.get_running_loop().remove_reader(self._control.fileno())
            self._stopped.set()
            return
        self._tasks.spawn(self._answer(ident, command, args), f"command-{command}")

    async def _answer(self, ident: int, command: str, args: tuple[Any, ...]) -> None:
        handlers: dict[str, Callable[..., Awaitable[Any]]] = {
            "connect": self._connect,
            "mark": self._mark,
            "start_speaking": self._start_speaking,
            "stop_speaking": self._stop_speaking,
            "stop": self._stop,
        }
        try:
            reply = (ident, True, await handlers[command](*args))
        except Exception as exc:  # reported to the benchmark, which stops
            reply = (ident, False, f"{command}: {type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):
            self._control.send(reply)

    async def _connect(self, count: int) -> int:
        """Connect the next ``count`` sessions at once; return how many are connected in all."""
        batch, self._pending = self._pending[:count], self._pending[count:]
        self._tap.decode_unrouted = self.spec.decode
        outcomes = await asyncio.gather(
            *(self._connect_one(i) for i in batch), return_exceptions=True
        )
        for index, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"session {index} did not connect: {outcome}") from outcome
        return len(self._sessions)

    async def _connect_one(self, index: int) -> None:
        scene = Scene(
            self.spec.api_key,
            requested_media_devices={},
            required_media_devices={},
            ice_addresses=LOOPBACK,
            session_store=MemorySessionStore(),
            play_audio=False,
        )
        try:
            await scene.connect(connect_timeout=CONNECT_TIMEOUT_S)
        except BaseException:
            await scene.disconnect()
            raise
        session = _Session(index, scene, self.spec.fps, self.spec.decode)
        self._sessions[index] = session
        for track, counter in (
            (scene.video_track, session.video),
            (scene.audio_track, session.audio),
        ):
            if track is None:
                raise RuntimeError(f"session {index} connected without a persona track")
            self._tap.route(track, counter, decode=self.spec.decode)
        session.persona.on_speech.add_listener(
            lambda _persona, state, _text: self._on_speech(session, state)
        )
        if session.pictures is not None:
            self._tasks.spawn(self._check_pictures(session), f"pictures-{index}")

    async def _check_pictures(self, session: _Session) -> None:
        assert session.pictures is not None
        with contextlib.suppress(DpkitError):
            async for frame in session.scene.video_frames():
                session.pictures.add(frame, self.spec.width, self.spec.height)

    def _on_speech(self, session: _Session, state: str) -> None:
        speaking = state == "speaking"
        if speaking == session.speaking.is_set():
            return
        self._speech_changes.append((time.monotonic(), 1 if speaking else -1))
        if speaking:
            session.speaking.set()
            return
        session.speaking.clear()
        if session.assigned:  # its text ended while it should still speak: say it again
            self._tasks.spawn(self._say(session), f"say-{session.index}")

    async def _say(self, session: _Session) -> None:
        with contextlib.suppress(DpkitError):
            await session.scene.send_request(
                "startSpeaking",
                {"personaId": 1, "text": SPEECH.format(index=session.index)},
                request_timeout=REQUEST_TIMEOUT_S,
            )

    async def _start_speaking(self, indices: list[int]) -> int:
        """Have these sessions speak; return how many were speaking within the timeout."""
        chosen = [self._sessions[i] for i in indices]
        for session in chosen:
            session.assigned = True

        async def one(session: _Session) -> bool:
            if not session.speaking.is_set():
                await self._say(session)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SPEECH_START_TIMEOUT_S):
                    await session.speaking.wait()
            return session.speaking.is_set()

        return sum(await asyncio.gather(*(one(s) for s in chosen)))

    async def _stop_speaking(self, indices: list[int]) -> None:
        chosen = [self._sessions[i] for i in indices]
        for session in chosen:
            session.assigned = False
        await asyncio.gather(
            *(
                s.scene.send_request(
                    "stopSpeaking", {"personaId": 1}, request_timeout=REQUEST_TIMEOUT_S
                )
                for s in chosen
            ),
            return_exceptions=True,
        )

    async def _mark(self) -> ReceiverMark:
        p99, worst = self._lag.take()
        return ReceiverMark(
            cpu_seconds(),
            time.monotonic(),
            p99,
            worst,
            tuple(s.mark() for s in self._sessions.values()),
            tuple(self._speech_changes),
        )

    async def _stop(self) -> None:
        await self._disconnect_all()
        self._stopped.set()

    async def _disconnect_all(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.assigned = False
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await asyncio.gather(
                    *(s.scene.disconnect() for s in sessions), return_exceptions=True
                )
        except TimeoutError:
            print(f"receiver {self.spec.name}: sessions did not disconnect in time")


def run_receiver(spec: ReceiverSpec, control: Connection) -> None:
    """A receiver process: hold ``spec``'s sessions and answer commands until told to stop."""
    # Ctrl-C reaches every process of the terminal: the benchmark process stops this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(Receiver(spec, control).run())


def speaking_stats(
    changes: list[tuple[float, int]], start: float, end: float
) -> tuple[int, float, int]:
    """The fewest, the time-weighted mean and the most sessions speaking in [start, end]."""
    changes = sorted(changes)
    count = sum(delta for at, delta in changes if at <= start)
    fewest = most = count
    weighted, at = 0.0, start
    for moment, delta in changes:
        if moment <= start:
            continue
        if moment >= end:
            break
        weighted += count * (moment - at)
        count, at = count + delta, moment
        fewest, most = min(fewest, count), max(most, count)
    weighted += count * (end - at)
    return fewest, weighted / (end - start) if end > start else math.nan, most
