"""The receiving side of the session density benchmark: many sessions, counted cheaply.

``session_density.py`` starts a few receiver processes (``multiprocessing`` "spawn"), each of
which holds a share of the sessions as :class:`dpkit.Scene` clients and answers commands on a
pipe: connect more sessions, start or stop their persona speaking, take a mark (counts and CPU),
stop. Every command carries an id and is carried out in a task of its own, so a slow one (a
speech waiting to start) never delays a mark.

Both kinds of receiver count the persona's frames from RTP headers (:class:`RtpCounter`: frames
from timestamps and marker bits, loss from sequence gaps, per stream); they differ in where.

* A light receiver (most sessions) counts at the socket. aiortc's Python receive path costs
  about as much per session as the server's own work: for each of a session's ~65 packets a
  second (50 audio, 15 video) aioice parses the datagram as STUN and queues it, the DTLS
  transport's loop takes it, SRTP decrypts it, ``RtpPacket.parse`` parses it and the receiver
  does its REMB and statistics bookkeeping (0.009-0.013 CPU-s per session-second measured, with
  the packets dropped before the jitter buffer). SRTP leaves the RTP header in clear, so
  :class:`DatagramTap` reads the 12 header bytes of each datagram where aioice receives it
  (:func:`rtp_header`), counts it for its stream (the payload types of the server's answer,
  :func:`payload_kinds`) and drops it there; STUN (consent freshness), DTLS and RTCP go the
  normal way, so ICE and DTLS stay up. aiortc never sees a light session's RTP, so it sends no
  REMB, receiver reports, NACKs or PLIs for it: the server's shared encoder does not depend on
  a session's REMB, and a loss is counted, not repaired. The header check itself costs about
  1.5 us a packet; what a light session still costs (0.004-0.005 CPU-s per session-second
  measured at 40 and 100 sessions, against the server's 0.006-0.008) is asyncio reading each
  datagram, aiortc's RTCP and the consent checks, and the polling of its two idle senders
  (aiortc wakes a sender that has no track every 20 ms, about 0.0007 CPU-s per
  session-second; the client's transceivers are ``sendrecv``).
* The decoding receiver (``decode`` set; the ``--decode-sample`` sessions) stays fully aiortc:
  :class:`RtpTap` counts each packet as aiortc's receiver gets it and hands it on, so the
  persona's frames are decoded and each picture checked (:func:`check_picture`), and the RTP
  counts can be compared with real decoding.

Each tap is one patch of a third-party method, installed once per process (only the one its
receivers need), and checks at install that the names it relies on exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import signal
import struct
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import aioice
import aiortc
import av
import numpy as np
import numpy.typing as npt
from aioice.ice import Connection as IceConnection
from aioice.ice import StunProtocol
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcicetransport import RTCIceGatherer
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

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


PacketHandler = Callable[[RTCRtpReceiver, RtpPacket, int], Awaitable[None]]


class RtpTap:
    """Counts the persona's RTP of the decoding receiver's sessions, and hands it on to aiortc.

    Installed in the decoding receiver process only (light ones count at the socket instead,
    :class:`DatagramTap`). Tracks are routed with :meth:`route` once their scene has connected;
    every packet, routed or not, then goes on to aiortc's jitter buffer and decoder as usual.
    """

    def __init__(self) -> None:
        self._routes: weakref.WeakKeyDictionary[MediaStreamTrack, RtpCounter] = (
            weakref.WeakKeyDictionary()
        )
        self._original: PacketHandler | None = None

    def route(self, track: MediaStreamTrack, counter: RtpCounter) -> None:
        self._routes[track] = counter

    def install(self) -> None:
        """Wrap ``RTCRtpReceiver._handle_rtp_packet`` in this process (the whole patch).

        aiortc's DTLS transport hands every decrypted RTP packet to its receiver's
        ``_handle_rtp_packet``; the wrapper counts the packet for its track, then calls the
        original, so decoding, REMB, NACKs and receiver reports are aiortc's own.
        """
        if self._original is not None:
            return
        original: PacketHandler | None = getattr(RTCRtpReceiver, "_handle_rtp_packet", None)
        if original is None:
            raise RuntimeError(
                f"aiortc {aiortc.__version__}: RTCRtpReceiver has no _handle_rtp_packet; "
                "update benchmarks/density_receivers.py's RtpTap"
            )
        self._original = original
        routes = self._routes

        async def handle(receiver: RTCRtpReceiver, packet: RtpPacket, arrival_time_ms: int) -> None:
            counter = routes.get(receiver.track)
            if counter is not None:
                counter.add(
                    packet.ssrc, packet.sequence_number, packet.timestamp, bool(packet.marker)
                )
            await original(receiver, packet, arrival_time_ms)

        setattr(RTCRtpReceiver, "_handle_rtp_packet", handle)  # noqa: B010 (mypy: a method)


# --- counting RTP at the socket (the light receivers) -----------------------------------------

#: The fixed RTP header (RFC 3550 5.1): V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
RTP_HEADER = struct.Struct("!BBHII")


class RtpHeader(NamedTuple):
    """What :class:`RtpCounter` needs of one RTP packet, read from its clear-text header.

    A named tuple, not a frozen dataclass: one is built per packet, and a tuple is cheaper.
    """

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int


def rtp_header(datagram: bytes) -> RtpHeader | None:
    """The RTP header of a datagram off a WebRTC socket; None if it is not RTP.

    One socket carries STUN, DTLS, RTP and RTCP; RFC 7983 tells them apart by the first byte:
    0..3 STUN, 20..63 DTLS, 128..191 RTP or RTCP (version 2). RTCP's second byte is its packet
    type, 192..223, where RTP has the marker bit and a payload type that RFC 5761 keeps out of
    64..95. SRTP encrypts the payload only, so an SRTP packet's header reads as plain RTP.
    """
    if len(datagram) < RTP_HEADER.size:
        return None
    first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(datagram)
    if first >> 6 != 2 or 192 <= second <= 223:
        return None
    return RtpHeader(second & 0x7F, second > 0x7F, sequence, timestamp, ssrc)


def payload_kinds(sdp: str) -> dict[int, str]:
    """Payload type -> ``"audio"`` or ``"video"``, from a session description's ``a=rtpmap``.

    Raises ``ValueError`` if one payload type is negotiated for both kinds (then the payload
    type alone could not tell a packet's stream).
    """
    kinds: dict[int, str] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.kind not in ("audio", "video"):
            continue
        for codec in media.rtp.codecs:
            pt = codec.payloadType
            if pt is not None and kinds.setdefault(pt, media.kind) != media.kind:
                raise ValueError(f"payload type {pt} is both audio and video")
    return kinds


DatagramHandler = Callable[[StunProtocol, bytes, tuple[Any, ...]], None]


class DatagramTap:
    """Counts RTP where aioice receives it, and drops it there: a light receiver's whole path.

    One per light receiver process, where every session is a light one. aioice gives each
    local UDP socket a ``StunProtocol`` whose ``datagram_received`` parses every datagram as
    STUN and queues the rest for aiortc's DTLS transport, which decrypts SRTP, parses the RTP
    and hands it to a receiver. :meth:`install` puts a header check in front of it: an RTP
    datagram (:func:`rtp_header`) is counted for its session's stream, found by the socket's
    ICE connection and the payload type the answer gave it (:meth:`route`), and dropped;
    STUN (connectivity and consent checks), DTLS and RTCP go on as before, so the session's
    ICE and DTLS stay up. RTP of a connection not routed yet (while it connects) is dropped
    uncounted.

    Since aiortc never sees a light session's RTP, it sends no REMB and no receiver reports
    for it, and no NACKs or PLIs: a loss is counted, not repaired.
    """

    def __init__(self) -> None:
        self._routes: weakref.WeakKeyDictionary[IceConnection, dict[int, RtpCounter]] = (
            weakref.WeakKeyDictionary()
        )
        self._original: DatagramHandler | None = None

    def route(self, connection: IceConnection, counters: dict[int, RtpCounter]) -> None:
        """Count ``connection``'s RTP by payload type into ``counters``."""
        self._routes[connection] = counters

    def route_scene(self, scene: Scene, audio: RtpCounter, video: RtpCounter) -> None:
        """Route a connected scene's ICE connection, with the payload types of its answer."""
        pc = peer_connection(scene)
        answer = pc.remoteDescription
        if answer is None:
            raise RuntimeError("a connected scene has no remote description")
        counters = {"audio": audio, "video": video}
        by_type = {pt: counters[kind] for pt, kind in payload_kinds(answer.sdp).items()}
        for connection in ice_connections(pc):
            self.route(connection, by_type)

    def install(self) -> None:
        """Wrap ``aioice.ice.StunProtocol.datagram_received`` in this process (the whole patch)."""
        if self._original is not None:
            return
        original: DatagramHandler | None = getattr(StunProtocol, "datagram_received", None)
        if original is None or "receiver" not in StunProtocol.__init__.__code__.co_names:
            raise RuntimeError(
                f"aioice {aioice.__version__}: StunProtocol no longer has datagram_received "
                "or receiver; update benchmarks/density_receivers.py's DatagramTap"
            )
        if "_connection" not in RTCIceGatherer.__init__.__code__.co_names:
            raise RuntimeError(
                f"aiortc {aiortc.__version__}: RTCIceGatherer no longer has _connection; "
                "update benchmarks/density_receivers.py's ice_connections"
            )
        self._original = original
        take = self.take

        def datagram_received(protocol: StunProtocol, data: bytes, addr: tuple[Any, ...]) -> None:
            if not take(protocol.receiver, data):
                original(protocol, data, addr)

        setattr(StunProtocol, "datagram_received", datagram_received)  # noqa: B010

    def take(self, connection: IceConnection, datagram: bytes) -> bool:
        """Count an RTP datagram for its stream and say True (drop it); False for the rest."""
        header = rtp_header(datagram)
        if header is None:
            return False
        counters = self._routes.get(connection)
        counter = counters.get(header.payload_type) if counters is not None else None
        if counter is not None:
            counter.add(header.ssrc, header.sequence, header.timestamp, header.marker)
        return True


def peer_connection(scene: Scene) -> aiortc.RTCPeerConnection:
    """A connected scene's aiortc peer connection (dpkit keeps it private)."""
    connection = getattr(scene, "_connection", None)
    peer = getattr(connection, "peer", None)
    pc = getattr(peer, "_pc", None)
    if not isinstance(pc, aiortc.RTCPeerConnection):
        raise RuntimeError(
            "dpkit.Scene no longer keeps its peer connection at _connection.peer._pc; "
            "update benchmarks/density_receivers.py's peer_connection"
        )
    return pc


def ice_connections(pc: aiortc.RTCPeerConnection) -> set[IceConnection]:
    """The aioice connections under a peer connection's transceivers (one when bundled)."""
    connections: set[IceConnection] = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None:
            connection = getattr(dtls.transport.iceGatherer, "_connection", None)
            if isinstance(connection, IceConnection):
                connections.add(connection)
    if not connections:
        raise RuntimeError("a connected scene has no ICE connection")
    return connections


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
        self._datagrams = DatagramTap()
        self._lag = LagMonitor()
        self._pending = list(spec.sessions)
        self._sessions: dict[int, _Session] = {}
        self._speech_changes: list[tuple[float, int]] = []
        self._tasks = TaskOwner(f"receiver-{spec.name}")
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.spec.decode:
            self._tap.install()
        else:
            self._datagrams.install()
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
            if self.spec.decode:
                self._tap.route(track, counter)
        if not self.spec.decode:
            self._datagrams.route_scene(scene, session.audio, session.video)
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
