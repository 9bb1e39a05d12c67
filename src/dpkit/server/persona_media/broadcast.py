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

Encoding runs in a small pool of worker threads (PyAV releases the GIL while it encodes), one
batch per frame slot: the shared frame and every private one. Drawing stays on the event loop,
where the renderer's frame cache lives. The timelines run only while a session subscribes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    AudioEncoder,
    VideoEncoder,
)
from dpkit.server.persona_media.face import FacePose, FaceRenderer
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

SHARED = "shared"
OWN = "own"

#: Returns a clock counting ``rate`` Hz in steps of ``period`` seconds (tests pace it by hand).
ClockFactory = Callable[[int, float], MediaClock]
#: Returns the next ``n`` samples of the persona's speech, or fewer (none: it is quiet).
SampleSource = Callable[[int], npt.NDArray[np.int16]]
#: Draws the YUV 4:2:0 picture of a pose (the renderer's cache stands behind it).
Picture = Callable[[FacePose], npt.NDArray[np.uint8]]

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
    #: The session's own encoder while it has one (speaking, joining, or on its way back).
    own: VideoEncoder | None = None
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

    def _deliver(self, source: str, packets: list[Packet]) -> None:
        keyframe = any(packet.is_keyframe for packet in packets)
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
    own: AudioEncoder | None = None
    frames: Counter[str] = field(default_factory=Counter)

    def _deliver(self, source: str, packets: list[Packet]) -> None:
        self.frames[source] += 1
        if len(self.outbox.packets) >= MAX_QUEUED_FRAMES:
            self.outbox.packets.clear()
        self.outbox.put(packets)


@dataclass(eq=False)
class _SharedVideo:
    """The shared encoder of one codec, and when its last keyframe was."""

    encoder: VideoEncoder
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
    audio_subscriptions: int


class PersonaBroadcast:
    """The shared timeline of one persona look: ``renderer``'s face at ``fps``, and room tone.

    ``picture`` draws a pose as packed YUV 4:2:0; ``workers`` is the number of encoding
    threads (default: one per core); ``clock`` replaces real-time pacing, for tests.
    """

    def __init__(
        self,
        renderer: FaceRenderer,
        fps: float,
        picture: Picture,
        *,
        workers: int | None = None,
        clock: ClockFactory | None = None,
    ) -> None:
        self._renderer = renderer
        self._fps = fps
        self._picture = picture
        self._clock: ClockFactory = clock or (lambda rate, period: MediaClock(rate, period))
        self._executor = ThreadPoolExecutor(
            max_workers=workers or os.cpu_count() or 1, thread_name_prefix="dpkit-encode"
        )
        self._workers = workers or os.cpu_count() or 1
        self._tasks = TaskOwner("persona-broadcast")
        self._video: list[VideoSubscription] = []
        self._audio: list[AudioSubscription] = []
        self._shared_video: dict[str, _SharedVideo] = {}
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
            audio_subscriptions=len(self._audio),
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
        elif subscription in self._audio:
            self._audio.remove(subscription)
        subscription.own = None
        subscription.outbox.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the persona broadcast is closed")

    async def close(self) -> None:
        """End every subscription, stop the timelines and the encoding threads. Idempotent."""
        self._closed = True
        for video in list(self._video):
            self.unsubscribe(video)
        for audio in list(self._audio):
            self.unsubscribe(audio)
        await self._tasks.close()
        await asyncio.to_thread(self._executor.shutdown)

    # -- video -------------------------------------------------------------------------------

    async def _run_video(self) -> None:
        clock = self._clock(VIDEO_CLOCK_RATE, 1.0 / self._fps)
        try:
            while self._video:
                pts, _time_base = await clock.next_timestamp()
                if not self._video:
                    break
                await self._video_slot(pts)
        finally:
            self._video_task = None
            self._shared_video.clear()

    async def _video_slot(self, pts: int) -> None:
        """Draw, encode and hand out the frame of every video subscription at ``pts``."""
        t = pts / VIDEO_CLOCK_RATE
        subscriptions = list(self._video)
        # Read once: the persona may start or stop speaking while the slot is being encoded.
        speaking = {sub: sub.is_speaking() for sub in subscriptions}
        shared_jobs: dict[str, _VideoJob] = {}
        for codec in sorted({sub.codec for sub in subscriptions}):
            group = [sub for sub in subscriptions if sub.codec == codec]
            if all(speaking[sub] for sub in group):
                self._shared_video.pop(codec, None)  # nobody needs it: start afresh later
                continue
            shared = self._shared(codec)
            for sub in group:
                if sub.on_shared and sub.keyframe_wanted:
                    sub.keyframe_wanted = False
                    shared.requested = True
                elif not sub.on_shared and not speaking[sub]:
                    shared.requested = True  # to join, or to come back after speaking
            idle = self._picture(self._renderer.pose(t, 0.0))
            shared_jobs[codec] = _VideoJob(shared.encoder, idle, pts, shared.keyframe_due(t))
        jobs = list(shared_jobs.values())
        on_shared: list[VideoSubscription] = []
        for sub in subscriptions:
            shared_job = shared_jobs.get(sub.codec)
            stays_or_joins = shared_job is not None and (sub.on_shared or shared_job.keyframe)
            if not speaking[sub] and stays_or_joins:
                on_shared.append(sub)
                continue
            if sub.own is None:
                sub.own = VideoEncoder(
                    sub.codec, self._renderer.width, self._renderer.height, self._fps
                )
                sub.keyframe_wanted = True
            mouth = _mouth(sub)
            picture = self._picture(self._renderer.pose(t, mouth))
            jobs.append(_VideoJob(sub.own, picture, pts, sub.keyframe_wanted, sub))
            sub.keyframe_wanted = False
        await self._encode(jobs)
        for codec, job in shared_jobs.items():
            self._counts["shared_video"] += 1
            if any(packet.is_keyframe for packet in job.packets):
                self._counts["shared_video_key"] += 1
                self._shared_video[codec].last_keyframe_t = t
                self._shared_video[codec].requested = False
        for sub in on_shared:
            if not sub.outbox.closed:
                sub.on_shared, sub.own = True, None
                sub._deliver(SHARED, shared_jobs[sub.codec].packets)
        for job in jobs:
            if job.owner is not None and not job.owner.outbox.closed:
                self._counts["own_video"] += 1
                job.owner.on_shared = False
                job.owner._deliver(OWN, job.packets)

    def _shared(self, codec: str) -> _SharedVideo:
        shared = self._shared_video.get(codec)
        if shared is None:
            encoder = VideoEncoder(codec, self._renderer.width, self._renderer.height, self._fps)
            shared = self._shared_video[codec] = _SharedVideo(encoder)
        return shared

    async def _encode(self, jobs: Sequence[_Job]) -> None:
        """Run the slot's encodes, spread over the worker threads, and wait for all of them."""
        if not jobs:
            return
        loop = asyncio.get_running_loop()
        chunks = [jobs[index :: self._workers] for index in range(self._workers)]
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _run_jobs, chunk) for chunk in chunks if chunk)
        )

    # -- audio -------------------------------------------------------------------------------

    async def _run_audio(self) -> None:
        clock = self._clock(AUDIO_SAMPLE_RATE, AUDIO_FRAME_SAMPLES / AUDIO_SAMPLE_RATE)
        try:
            while self._audio:
                pts, _time_base = await clock.next_timestamp()
                if not self._audio:
                    break
                await self._audio_slot(pts)
                # A slot of cached packets awaits nothing: let the senders run before the next.
                await asyncio.sleep(0)
        finally:
            self._audio_task = None

    async def _room_tone_packet(self, pts: int) -> Packet:
        """The shared room tone's packet at ``pts``.

        The tone is a loop of whole 20 ms frames, so its Opus packets are encoded once (the
        first time anyone is quiet: 200 frames, a few tens of milliseconds in a worker thread)
        and then only stamped: quiet sessions cost no encoding at all.
        """
        if self._tone_packets is None:
            loop = asyncio.get_running_loop()
            self._tone_packets = await loop.run_in_executor(
                self._executor, _encode_loop, self._tone
            )
            self._counts["shared_audio"] += len(self._tone_packets)
        payload = self._tone_packets[(pts % self._tone.size) // AUDIO_FRAME_SAMPLES]
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = AUDIO_TIME_BASE
        return packet

    async def _audio_slot(self, pts: int) -> None:
        """Encode and hand out 20 ms of audio for every audio subscription at ``pts``."""
        start = pts % self._tone.size
        tone = self._tone[start : start + AUDIO_FRAME_SAMPLES]
        subscriptions = list(self._audio)
        jobs: list[_AudioJob] = []
        quiet = False
        for sub in subscriptions:
            try:
                speech = _speech(sub.source)
            except ValueError:
                # One session's broken source must not silence the others.
                logger.exception("audio subscription %x: its source failed; ending it", id(sub))
                self.unsubscribe(sub)
                continue
            if speech is None:
                quiet = True
                continue
            if sub.own is None:
                sub.own = AudioEncoder()
            if speech.size < AUDIO_FRAME_SAMPLES:
                speech = np.concatenate((speech, tone[speech.size :]))
            jobs.append(_AudioJob(sub.own, speech, pts, sub))
        shared: list[Packet] = []
        if quiet:
            shared = [await self._room_tone_packet(pts)]
        await self._encode(jobs)
        own: dict[int, list[Packet]] = {}
        for job in jobs:
            own[id(job.owner)] = job.packets
            self._counts["own_audio"] += 1
        for sub in subscriptions:
            if sub.outbox.closed:
                continue
            if id(sub) in own:
                sub._deliver(OWN, own[id(sub)])
            elif shared:
                sub._deliver(SHARED, shared)


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


@dataclass(eq=False)
class _VideoJob:
    encoder: VideoEncoder
    picture: npt.NDArray[np.uint8]
    pts: int
    keyframe: bool
    owner: VideoSubscription | None = None
    packets: list[Packet] = field(default_factory=list)

    def run(self) -> None:
        self.packets = self.encoder.encode(self.picture, self.pts, self.keyframe)


@dataclass(eq=False)
class _AudioJob:
    encoder: AudioEncoder
    samples: npt.NDArray[np.int16]
    pts: int
    owner: AudioSubscription | None = None
    packets: list[Packet] = field(default_factory=list)

    def run(self) -> None:
        self.packets = self.encoder.encode(self.samples, self.pts)


_Job = _VideoJob | _AudioJob


def _run_jobs(jobs: Sequence[_Job]) -> None:
    for job in jobs:
        job.run()
