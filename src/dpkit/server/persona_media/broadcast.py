"""Encode once, fan out: one persona look's idle picture and room tone, shared by its sessions.

Most of the time most personas show the same thing: the idle animation (a slow sway, blinks)
and quiet room tone. A :class:`PersonaBroadcast` runs that animation on one timeline for every
session of one look (one renderer, one frame rate), draws and encodes each idle frame once, and
hands the packets to every session that shows it. A session whose persona speaks has its own
mouth, so it switches to an encoder of its own for as long as it needs one, and back:

* **to its own encoder** the moment its persona starts speaking (or it joins while no shared
  keyframe is due): that encoder's first frame is a keyframe, so the picture never breaks;
* **back to the shared encoder** once the persona has stopped speaking, on the shared stream's
  next keyframe, which the session asks for. Until it comes the session's own encoder keeps
  drawing the idle face, so nothing is missing in between;
* **keyframes on request** (a receiver's PLI or FIR): a session on its own encoder gets one at
  its next frame; one on the shared encoder gets the shared stream's next keyframe, which comes
  at most every :data:`MIN_SHARED_KEYFRAME_GAP_S` however many sessions ask, and at least every
  :data:`~dpkit.server.persona_media.encoders.KEYFRAME_INTERVAL_S`.

Audio works the same way without keyframes (Opus packets stand alone): the room tone is a loop,
encoded once, whose packets go to every session that is quiet; a speaking session's voice (its
last frame topped up with the tone, as :class:`~dpkit.server.persona_media.audio.PersonaAudioTrack`
does) goes through its own Opus encoder, packet by packet.

All sessions of a look share its timeline, so a packet's ``pts`` is the same whichever encoder
made it, and the RTP timestamps aiortc derives from it run on without a jump at a switch.

Each frame slot is planned here, on the event loop (every decision: who is on which encoder,
which frame is a keyframe), and handed as one batch of small requests (poses, samples) to an
:class:`~dpkit.server.persona_media.encoding.EncodingBackend`, which draws and encodes: the
server's runs in a worker process, so encoders never take the GIL from the event loop. The next
slot is planned while one is encoded; a slot's packets are handed out only after the slot
before's. The timelines run only while a session subscribes.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError

from dpkit.media.clock import MediaClock
from dpkit.server.persona_media.audio import room_tone
from dpkit.server.persona_media.encoders import (
    AUDIO_FRAME_SAMPLES,
    AUDIO_SAMPLE_RATE,
    AUDIO_TIME_BASE,
    KEYFRAME_INTERVAL_S,
    VIDEO_CLOCK_RATE,
    VIDEO_CODECS,
    VIDEO_TIME_BASE,
    AudioEncoder,
)
from dpkit.server.persona_media.encoding import (
    AudioRequest,
    Encoded,
    EncodingBackend,
    EncodingFailed,
    ThreadedEncoding,
    VideoRequest,
)
from dpkit.server.persona_media.face import FaceRenderer
from dpkit.tasks import TaskOwner

if TYPE_CHECKING:
    from dpkit.server.persona_media.encoders import Packet

logger = logging.getLogger("dpkit.server.broadcast")

MIN_SHARED_KEYFRAME_GAP_S = 0.5
"""The shared stream's keyframes on request come at most this often: a keyframe costs every
session on it several times a normal frame in bytes and packets."""

MAX_QUEUED_FRAMES = 8
"""Frames a session's sender may fall behind by. Past it the backlog is dropped and the session
gets a keyframe, so a stalled sender costs memory for half a second at most."""

MAX_SPARE_ENCODERS = 4
"""Own encoders kept for reuse once their session is back on the shared stream (a 640x480 VP8
encoder holds about 10 MiB)."""

SHARED = "shared"
OWN = "own"

#: Returns a clock counting ``rate`` Hz in steps of ``period`` seconds (tests pace it by hand).
ClockFactory = Callable[[int, float], MediaClock]
#: Returns the next ``n`` samples of the persona's speech, or fewer (none: it is quiet).
SampleSource = Callable[[int], npt.NDArray[np.int16]]

P = TypeVar("P")


class _Outbox(Generic[P]):
    """One session's packets waiting for its sender, and the sender's wait for them."""

    def __init__(self) -> None:
        self.packets: deque[P] = deque()
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, packets: Sequence[P]) -> None:
        self.packets.extend(packets)
        self._ready.set()

    async def get(self) -> P:
        while not self.packets:
            if self.closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self.packets.popleft()

    def close(self) -> None:
        self.closed = True
        self._ready.set()


@dataclass(eq=False)
class VideoSubscription:
    """One session's share of the persona's video: where its frames come from, and counts.

    ``frames`` counts the frames handed to the session by source (:data:`SHARED` or
    :data:`OWN`); ``switches`` lists each change of source with whether the first frame from
    the new source was a keyframe.
    """

    codec: str
    mouth: Callable[[], float] | None
    speaking: Callable[[], bool] | None
    outbox: _Outbox[Packet] = field(default_factory=_Outbox)
    #: The number of the session's own encoder while it has one (speaking, joining, or on
    #: its way back to the shared stream).
    own: int | None = None
    on_shared: bool = False
    keyframe_wanted: bool = False
    frames: Counter[str] = field(default_factory=Counter)
    keyframes: int = 0
    switches: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def source(self) -> str | None:
        """Where its frames come from now; None before its first frame."""
        if not self.switches:
            return None
        return self.switches[-1][0]

    def is_speaking(self) -> bool:
        return self.speaking is not None and self.speaking()

    def request_keyframe(self) -> None:
        """A receiver asked for a keyframe (PLI or FIR)."""
        self.keyframe_wanted = True

    def _deliver(self, source: str, packets: list[Packet], keyframe: bool) -> None:
        if source != self.source:
            self.switches.append((source, keyframe))
            logger.debug("video subscription %x: now on the %s encoder", id(self), source)
        self.frames[source] += 1
        self.keyframes += keyframe
        if len(self.outbox.packets) >= MAX_QUEUED_FRAMES:
            # The sender is stuck: what is queued is stale, and the next frame must be a
            # keyframe for the receiver to pick up from it.
            self.outbox.packets.clear()
            self.keyframe_wanted = True
        self.outbox.put(packets)


@dataclass(eq=False)
class AudioSubscription:
    """One session's share of the persona's audio; ``frames`` counts packets by source."""

    source: SampleSource | None
    outbox: _Outbox[Packet] = field(default_factory=_Outbox)
    #: The number of its own Opus encoder, once it has spoken.
    own: int | None = None
    frames: Counter[str] = field(default_factory=Counter)

    def _deliver(self, source: str, packets: list[Packet]) -> None:
        self.frames[source] += 1
        if len(self.outbox.packets) >= MAX_QUEUED_FRAMES:
            self.outbox.packets.clear()
        self.outbox.put(packets)


@dataclass(eq=False)
class _SharedVideo:
    """The shared encoder (its number) of one codec, and when its last keyframe was."""

    encoder: int
    requested: bool = False
    last_keyframe_t: float | None = None

    def keyframe_due(self, t: float) -> bool:
        if self.last_keyframe_t is None:
            return True
        since = t - self.last_keyframe_t
        if since < 0:  # the timeline restarted
            return True
        return since >= KEYFRAME_INTERVAL_S or (
            self.requested and since >= MIN_SHARED_KEYFRAME_GAP_S
        )


@dataclass(frozen=True)
class BroadcastStats:
    """What a broadcast has done so far: encoders, frames encoded, sessions on each source."""

    shared_video_frames: int
    shared_video_keyframes: int
    own_video_frames: int
    shared_audio_frames: int
    own_audio_frames: int
    video_on_shared: int
    video_on_own: int
    worker_starts: int


class PersonaBroadcast:
    """The shared timeline of one persona look: ``renderer``'s face at ``fps``, and room tone.

    ``encoding`` draws and encodes (default: worker threads drawing with ``renderer``);
    ``clock`` replaces real-time pacing, for tests.
    """

    def __init__(
        self,
        renderer: FaceRenderer,
        fps: float,
        encoding: EncodingBackend | None = None,
        *,
        clock: ClockFactory | None = None,
    ) -> None:
        self._renderer = renderer
        self._fps = fps
        self._encoding: EncodingBackend = encoding or ThreadedEncoding(
            renderer, fps, renderer.render_yuv
        )
        self._clock: ClockFactory = clock or (lambda rate, period: MediaClock(rate, period))
        self._tasks = TaskOwner("persona-broadcast")
        self._video: list[VideoSubscription] = []
        self._audio: list[AudioSubscription] = []
        self._shared_video: dict[str, _SharedVideo] = {}
        self._spare_encoders: dict[str, list[int]] = {}
        self._numbers = itertools.count(1)
        #: The room tone loop's Opus payloads, frame by frame, once encoded.
        self._tone_packets: list[bytes] | None = None
        self._video_task: asyncio.Task[None] | None = None
        self._audio_task: asyncio.Task[None] | None = None
        self._tone = room_tone()
        self._counts: Counter[str] = Counter()
        self._closed = False

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def renderer(self) -> FaceRenderer:
        return self._renderer

    def stats(self) -> BroadcastStats:
        return BroadcastStats(
            shared_video_frames=self._counts["shared_video"],
            shared_video_keyframes=self._counts["shared_video_key"],
            own_video_frames=self._counts["own_video"],
            shared_audio_frames=self._counts["shared_audio"],
            own_audio_frames=self._counts["own_audio"],
            video_on_shared=sum(sub.on_shared for sub in self._video),
            video_on_own=sum(not sub.on_shared for sub in self._video),
            worker_starts=self._encoding.starts,
        )

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe_video(
        self,
        codec: str,
        mouth: Callable[[], float] | None = None,
        speaking: Callable[[], bool] | None = None,
    ) -> VideoSubscription:
        """A session's video, in ``codec``, from its next frame slot on."""
        if codec not in VIDEO_CODECS:
            raise ValueError(f"cannot encode video as {codec!r}; known: {', '.join(VIDEO_CODECS)}")
        self._check_open()
        subscription = VideoSubscription(codec, mouth, speaking)
        self._video.append(subscription)
        if self._video_task is None:
            self._video_task = self._tasks.spawn(self._run_video(), "video")
        return subscription

    def subscribe_audio(self, source: SampleSource | None = None) -> AudioSubscription:
        """A session's audio: ``source``'s speech when there is some, shared room tone else."""
        self._check_open()
        subscription = AudioSubscription(source)
        self._audio.append(subscription)
        if self._audio_task is None:
            self._audio_task = self._tasks.spawn(self._run_audio(), "audio")
        return subscription

    def unsubscribe(self, subscription: VideoSubscription | AudioSubscription) -> None:
        """The session has gone: no more packets; its sender's wait ends. Idempotent."""
        if isinstance(subscription, VideoSubscription):
            if subscription in self._video:
                self._video.remove(subscription)
            self._release_own(subscription)
        else:
            if subscription in self._audio:
                self._audio.remove(subscription)
            if subscription.own is not None:
                self._encoding.release(subscription.own)
            subscription.own = None
        subscription.outbox.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the persona broadcast is closed")

    async def warm(self) -> None:
        """Start the encoding ahead of the first session, so its first frames are not late."""
        await self._encoding.start()

    async def close(self) -> None:
        """End every subscription, stop the timelines and the encoding. Idempotent."""
        self._closed = True
        for video in list(self._video):
            self.unsubscribe(video)
        for audio in list(self._audio):
            self.unsubscribe(audio)
        await self._tasks.close()
        await self._encoding.close()

    def _forget_encoders(self) -> None:
        """The encoders are gone (the worker restarted, or a slot failed): start them afresh,
        each on a keyframe."""
        self._encoding.reset()
        self._shared_video.clear()
        self._spare_encoders.clear()
        for sub in self._video:
            sub.own = None
            sub.keyframe_wanted = True
            sub.on_shared = False
        for audio in self._audio:
            audio.own = None

    # -- video -------------------------------------------------------------------------------

    async def _run_video(self) -> None:
        clock = self._clock(VIDEO_CLOCK_RATE, 1.0 / self._fps)
        pending: deque[asyncio.Task[None]] = deque()
        try:
            while self._video:
                pts, _time_base = await clock.next_timestamp()
                if not self._video:
                    break
                slot = self._plan_video(pts)
                if slot is not None:
                    previous = pending[-1] if pending else None
                    pending.append(
                        self._tasks.spawn(self._finish_video(slot, previous), "video-slot")
                    )
                await _bound(pending)
        finally:
            self._video_task = None
            for task in pending:
                task.cancel()
            self._drop_shared_video()

    def _drop_shared_video(self) -> None:
        for shared in self._shared_video.values():
            self._encoding.release(shared.encoder)
        self._shared_video.clear()
        # A new timeline starts its pts again from 0: spares would see time run backwards.
        for spares in self._spare_encoders.values():
            for number in spares:
                self._encoding.release(number)
        self._spare_encoders.clear()

    def _plan_video(self, pts: int) -> _VideoSlot | None:
        """Decide, for the frame at ``pts``, which encoder draws what for whom.

        Every decision is taken here, before anything is encoded, so that the next slot can be
        planned while this one is still being encoded: forced keyframes always come, so the
        shared stream's keyframe and the sessions joining it are known now.
        """
        t = pts / VIDEO_CLOCK_RATE
        subscriptions = list(self._video)
        speaking = {sub: sub.is_speaking() for sub in subscriptions}
        shared_requests: dict[str, VideoRequest] = {}
        for codec in sorted({sub.codec for sub in subscriptions}):
            group = [sub for sub in subscriptions if sub.codec == codec]
            if all(speaking[sub] for sub in group):
                dropped = self._shared_video.pop(codec, None)  # nobody needs it
                if dropped is not None:
                    self._encoding.release(dropped.encoder)
                continue
            shared = self._shared(codec)
            for sub in group:
                if sub.on_shared and sub.keyframe_wanted:
                    sub.keyframe_wanted = False
                    shared.requested = True
                elif not sub.on_shared and not speaking[sub]:
                    shared.requested = True  # to join, or to come back after speaking
            keyframe = shared.keyframe_due(t)
            if keyframe:
                shared.last_keyframe_t, shared.requested = t, False
                self._counts["shared_video_key"] += 1
            self._counts["shared_video"] += 1
            idle = self._renderer.pose(t, 0.0)
            shared_requests[codec] = VideoRequest(shared.encoder, codec, idle, keyframe)
        slot = _VideoSlot(pts, list(shared_requests.values()))
        for sub in subscriptions:
            shared_request = shared_requests.get(sub.codec)
            stays_or_joins = shared_request is not None and (
                sub.on_shared or shared_request.keyframe
            )
            if not speaking[sub] and shared_request is not None and stays_or_joins:
                self._release_own(sub)
                sub.on_shared = True
                slot.sources.append((sub, shared_request.encoder, SHARED))
                continue
            if sub.own is None:
                sub.own = self._own_encoder(sub.codec)
                sub.keyframe_wanted = True
            pose = self._renderer.pose(t, _mouth(sub))
            slot.requests.append(VideoRequest(sub.own, sub.codec, pose, sub.keyframe_wanted))
            sub.keyframe_wanted = False
            sub.on_shared = False
            self._counts["own_video"] += 1
            slot.sources.append((sub, sub.own, OWN))
        return slot if slot.requests else None

    async def _finish_video(self, slot: _VideoSlot, previous: asyncio.Task[None] | None) -> None:
        """Encode ``slot``, then hand its frames out once the slot before has handed out its."""
        try:
            encoded = await self._encoding.video(slot.pts, slot.requests)
        except EncodingFailed as exc:
            logger.error("persona video slot failed: %s; encoders start afresh", exc)
            self._forget_encoders()
            return
        finally:
            if previous is not None:
                await asyncio.wait([previous])
        by_encoder = {done.encoder: done for done in encoded}
        packets: dict[int, list[Packet]] = {}
        for sub, number, source in slot.sources:
            done = by_encoder.get(number)
            if done is None or sub.outbox.closed:
                continue
            if number not in packets:
                packets[number] = _packets(done, slot.pts, VIDEO_TIME_BASE)
            sub._deliver(source, packets[number], done.keyframe)

    def _own_encoder(self, codec: str) -> int:
        """An encoder for one session: a spare one if there is one (it starts on a keyframe,
        which forgets whatever it encoded before), else a new one."""
        spares = self._spare_encoders.get(codec)
        if spares:
            return spares.pop()
        return next(self._numbers)

    def _release_own(self, sub: VideoSubscription) -> None:
        """``sub`` no longer needs its own encoder: kept for the next speaker, within bounds.

        Encoders come and go with every utterance; keeping a few spares saves making one (and
        the memory churn of its buffers, a few MiB each) every time someone speaks.
        """
        number, sub.own = sub.own, None
        if number is None:
            return
        spares = self._spare_encoders.setdefault(sub.codec, [])
        if len(spares) < MAX_SPARE_ENCODERS:
            spares.append(number)
        else:
            self._encoding.release(number)

    def _shared(self, codec: str) -> _SharedVideo:
        shared = self._shared_video.get(codec)
        if shared is None:
            shared = self._shared_video[codec] = _SharedVideo(next(self._numbers))
        return shared

    # -- audio -------------------------------------------------------------------------------

    async def _run_audio(self) -> None:
        clock = self._clock(AUDIO_SAMPLE_RATE, AUDIO_FRAME_SAMPLES / AUDIO_SAMPLE_RATE)
        pending: deque[asyncio.Task[None]] = deque()
        try:
            if self._tone_packets is None:
                # The tone is a loop of whole 20 ms frames: its Opus packets are encoded once
                # (200 frames, a few tens of milliseconds) and then only stamped, so quiet
                # sessions cost no encoding at all.
                self._tone_packets = await asyncio.to_thread(_encode_loop, self._tone)
                self._counts["shared_audio"] += len(self._tone_packets)
            while self._audio:
                pts, _time_base = await clock.next_timestamp()
                if not self._audio:
                    break
                slot = self._plan_audio(pts)
                if slot.requests or pending:
                    previous = pending[-1] if pending else None
                    pending.append(
                        self._tasks.spawn(self._finish_audio(slot, previous), "audio-slot")
                    )
                else:
                    self._deliver_audio(slot, [])
                await _bound(pending)
        finally:
            self._audio_task = None
            for task in pending:
                task.cancel()

    def _tone_packet(self, pts: int) -> Packet:
        """The shared room tone's packet at ``pts``."""
        assert self._tone_packets is not None
        payload = self._tone_packets[(pts % self._tone.size) // AUDIO_FRAME_SAMPLES]
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = AUDIO_TIME_BASE
        return packet

    def _plan_audio(self, pts: int) -> _AudioSlot:
        """Take 20 ms of speech from every speaking session; the quiet ones get room tone."""
        start = pts % self._tone.size
        tone = self._tone[start : start + AUDIO_FRAME_SAMPLES]
        slot = _AudioSlot(pts)
        for sub in list(self._audio):
            try:
                speech = _speech(sub.source)
            except ValueError:
                # One session's broken source must not silence the others.
                logger.exception("audio subscription %x: its source failed; ending it", id(sub))
                self.unsubscribe(sub)
                continue
            if speech is None:
                slot.quiet.append(sub)
                continue
            if sub.own is None:
                sub.own = next(self._numbers)
            if speech.size < AUDIO_FRAME_SAMPLES:
                speech = np.concatenate((speech, tone[speech.size :]))
            slot.requests.append(AudioRequest(sub.own, speech.tobytes()))
            slot.speakers.append((sub, sub.own))
            self._counts["own_audio"] += 1
        return slot

    async def _finish_audio(self, slot: _AudioSlot, previous: asyncio.Task[None] | None) -> None:
        try:
            encoded = await self._encoding.audio(slot.pts, slot.requests)
        except EncodingFailed as exc:
            logger.error("persona audio slot failed: %s; encoders start afresh", exc)
            self._forget_encoders()
            encoded = []
        finally:
            if previous is not None:
                await asyncio.wait([previous])
        self._deliver_audio(slot, encoded)

    def _deliver_audio(self, slot: _AudioSlot, encoded: Sequence[Encoded]) -> None:
        if slot.quiet:
            shared = [self._tone_packet(slot.pts)]
            for sub in slot.quiet:
                if not sub.outbox.closed:
                    sub._deliver(SHARED, shared)
        by_encoder = {done.encoder: done for done in encoded}
        for sub, number in slot.speakers:
            done = by_encoder.get(number)
            if done is not None and not sub.outbox.closed:
                sub._deliver(OWN, _packets(done, slot.pts, AUDIO_TIME_BASE))


MAX_PENDING_SLOTS = 3
"""Slots being encoded at once, per timeline: the next is planned while one is encoded, but a
backend that falls behind holds the timeline up (and its clock then skips) rather than queueing
without end."""


async def _bound(pending: deque[asyncio.Task[None]]) -> None:
    """Forget finished slots; wait for the oldest while too many are in flight; and yield, so
    the senders run between slots even when the clock is behind and does not sleep."""
    while pending and pending[0].done():
        pending.popleft()
    while len(pending) > MAX_PENDING_SLOTS:
        await asyncio.wait([pending.popleft()])
    await asyncio.sleep(0)


@dataclass(eq=False)
class _VideoSlot:
    pts: int
    requests: list[VideoRequest]
    #: Who gets which encoder's frame, and from which source.
    sources: list[tuple[VideoSubscription, int, str]] = field(default_factory=list)


@dataclass(eq=False)
class _AudioSlot:
    pts: int
    requests: list[AudioRequest] = field(default_factory=list)
    speakers: list[tuple[AudioSubscription, int]] = field(default_factory=list)
    quiet: list[AudioSubscription] = field(default_factory=list)


def _packets(done: Encoded, pts: int, time_base: fractions.Fraction) -> list[Packet]:
    """The packets of an encoded frame, stamped for aiortc's sender to packetise."""
    packets = []
    for payload in done.payloads:
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = time_base
        packet.is_keyframe = done.keyframe
        packets.append(packet)
    return packets


def _encode_loop(tone: npt.NDArray[np.int16]) -> list[bytes]:
    """A loop of samples (whole 20 ms frames) as one Opus payload per frame."""
    encoder = AudioEncoder()
    payloads = []
    for start in range(0, tone.size, AUDIO_FRAME_SAMPLES):
        packets = encoder.encode(tone[start : start + AUDIO_FRAME_SAMPLES], start)
        payloads.append(b"".join(bytes(packet) for packet in packets))
    return payloads


def _mouth(sub: VideoSubscription) -> float:
    """How open ``sub``'s mouth is; a failing lip-sync source leaves it closed (and says so)."""
    if sub.mouth is None:
        return 0.0
    try:
        return float(sub.mouth())
    except Exception:
        logger.exception("video subscription %x: its mouth source failed", id(sub))
        sub.mouth = None
        return 0.0


def _speech(source: SampleSource | None) -> npt.NDArray[np.int16] | None:
    """The next 20 ms of ``source``'s speech, or None when it is quiet."""
    if source is None:
        return None
    speech = np.asarray(source(AUDIO_FRAME_SAMPLES))
    if speech.dtype != np.int16 or speech.ndim != 1 or speech.size > AUDIO_FRAME_SAMPLES:
        raise ValueError(
            f"audio source must return at most {AUDIO_FRAME_SAMPLES} int16 samples in a 1-D "
            f"array, got {speech.dtype} with shape {speech.shape}"
        )
    return speech if speech.size else None
