"""The server's side of one WebRTC session: the persona's media out, the user's media in.

Wraps an aiortc peer connection. The persona's audio and video go on the first audio and the first
video media section of the client's offer, on one media stream (the Web SDK needs one ``msid``
stream id), and the remaining sections are answered without a track.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import deque
from collections.abc import Callable

import av
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dpkit.errors import ProtocolError
from dpkit.media.levels import audio_frame_to_mono, rms_dbfs
from dpkit.protocol.actions import AddRemoteCandidate
from dpkit.rtc import ice_addresses
from dpkit.server.persona_media.audio import PersonaAudioTrack
from dpkit.server.persona_media.encoders import OPUS, VIDEO_CODECS
from dpkit.server.persona_media.shared_tracks import SharedAudioTrack, SharedVideoTrack
from dpkit.server.pool import DigitalPerson
from dpkit.server.speech import PersonaSpeaker
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server.rtc")


class PersonaPeer:
    """One session's peer connection on the server."""

    def __init__(
        self,
        person: DigitalPerson,
        addresses: tuple[str, ...] | None,
        ice_servers: tuple[str, ...] = (),
        speaker: PersonaSpeaker | None = None,
    ) -> None:
        self._addresses = addresses
        self._loopback_only = bool(addresses) and all(
            ipaddress.ip_address(address).is_loopback for address in addresses or ()
        )
        servers = [RTCIceServer(urls=url) for url in ice_servers]
        # An empty list, never None: given None, aiortc asks Google's STUN server, which nobody
        # configured, and an answer cut short leaves that lookup's failure unretrieved.
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._person = person
        self._speaker = speaker
        #: The persona's tracks, made once the offer says which codecs they are sent in.
        self.video: SharedVideoTrack | None = None
        self.audio: SharedAudioTrack | PersonaAudioTrack | None = None
        #: The user's microphone level, dBFS, over the last half second (None: no audio yet).
        self.user_audio_dbfs: float | None = None
        self._levels: deque[float] = deque(maxlen=25)
        self._state = asyncio.Event()
        self._tasks = TaskOwner("persona-peer")
        self._answering: asyncio.Task[str] | None = None
        self.received_frames = {"audio": 0, "video": 0}
        #: Given each decoded frame of the user's microphone (the session's speech recognition).
        self.on_user_audio: Callable[[av.AudioFrame], None] | None = None
        self._pc.on("connectionstatechange", self._state.set)
        self._pc.on("track", self._on_track)

    @property
    def connection_state(self) -> str:
        state: str = self._pc.connectionState
        return state

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return the answer SDP (with its candidates).

        The offer has passed :func:`dpkit.protocol.sdp.check_offer`; whatever aiortc still
        refuses is turned into a :class:`ProtocolError` here, at the third-party boundary.
        """
        # In a task of its own, which close() stops first: aioice closed in the middle of
        # gathering registers the socket it was binding only after the close, and it leaks.
        self._answering = asyncio.get_running_loop().create_task(self._answer(offer_sdp))
        return await self._answering

    async def _answer(self, offer_sdp: str) -> str:
        try:
            with ice_addresses(self._addresses):
                await self._pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
                self._add_persona_tracks()
                await self._pc.setLocalDescription(await self._pc.createAnswer())
        except Exception as exc:
            raise ProtocolError(
                f"offer: the SDP is not usable: {type(exc).__name__}: {exc}"
            ) from exc
        description = self._pc.localDescription
        assert description is not None
        return str(description.sdp)

    def _add_persona_tracks(self) -> None:
        """The persona's audio and video, on the codecs the offer negotiated.

        Video always comes from the look's shared broadcast (aiortc negotiates only VP8 and
        H.264, both of which it encodes). Audio does too when it is Opus; for a client that
        offers only G.711 a per-session track is encoded by aiortc, as before.
        """
        broadcast = self._person.broadcast
        speaker = self._speaker
        codecs = _negotiated_codecs(self._pc)
        audio_codec = codecs.get("audio")
        if audio_codec is None or audio_codec.lower() == OPUS.lower():
            self.audio = SharedAudioTrack(
                broadcast, speaker.audio_source if speaker is not None else None
            )
        else:
            self.audio = PersonaAudioTrack(speaker.audio_source if speaker is not None else None)
        self.video = SharedVideoTrack(
            broadcast,
            mouth=speaker.mouth if speaker is not None else None,
            speaking=(lambda: speaker.speaking) if speaker is not None else None,
        )
        video_codec = codecs.get("video")
        if video_codec in VIDEO_CODECS:
            self.video.codec = video_codec
        self._pc.addTrack(self.audio)
        video_sender = self._pc.addTrack(self.video)
        # aiortc's sender asks its own encoder for a keyframe on a PLI or FIR, but packets
        # from a track are not encoded by it: the request goes to the track instead.
        video_sender._send_keyframe = self.video.request_keyframe  # type: ignore[method-assign]

    async def add_candidate(self, action: AddRemoteCandidate) -> None:
        """Add a trickled, checked candidate; the end of candidates needs nothing from aiortc."""
        checked = action.checked
        if checked is None:
            return
        if checked.is_mdns and self._loopback_only:
            # An mDNS name is never a loopback address, and resolving it would multicast
            # beyond this machine: a server kept on loopback has no use for it.
            logger.debug("ignored mDNS candidate %s on a loopback-only server", checked.address)
            return
        candidate = RTCIceCandidate(
            component=checked.component,
            foundation=checked.foundation,
            ip=checked.address,
            port=checked.port,
            priority=checked.priority,
            protocol=checked.transport,
            type=checked.type,
            sdpMid=action.ice.sdp_mid,
            sdpMLineIndex=action.ice.sdp_mline_index,
        )
        try:
            with ice_addresses(self._addresses):
                await self._pc.addIceCandidate(candidate)
        except Exception as exc:
            raise ProtocolError(
                f"ice: the candidate is not usable: {type(exc).__name__}: {exc}"
            ) from exc

    async def wait_transport(self) -> bool:
        """Wait until ICE and DTLS are connected (True) or have failed (False)."""
        while True:
            state = self._pc.connectionState
            if state == "connected":
                return True
            if state in ("failed", "closed"):
                return False
            self._state.clear()
            await self._state.wait()

    async def wait_closed_or_failed(self) -> None:
        """Return once the transport has failed or closed after being connected."""
        while self._pc.connectionState not in ("failed", "closed"):
            self._state.clear()
            await self._state.wait()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.spawn(self._drain(track), f"user-{track.kind}")

    async def _drain(self, track: MediaStreamTrack) -> None:
        """Read the user's media so it is decoded and counted (and never piles up)."""
        try:
            while True:
                frame = await track.recv()
                self.received_frames[track.kind] += 1
                if isinstance(frame, av.AudioFrame):
                    self._levels.append(rms_dbfs(audio_frame_to_mono(frame)))
                    self.user_audio_dbfs = max(self._levels)
                    if self.on_user_audio is not None:
                        self.on_user_audio(frame)
        except MediaStreamError:
            return

    async def close(self) -> None:
        if self._answering is not None and not self._answering.done():
            self._answering.cancel()
            await asyncio.wait([self._answering])
        await self._tasks.close()
        await self._pc.close()
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()


def _negotiated_codecs(pc: RTCPeerConnection) -> dict[str, str]:
    """The first codec (MIME type) negotiated for each kind, from the remote offer just set.

    aiortc keeps the result of its negotiation on the transceiver (``_codecs``, in the order
    the answer lists them; the first is the one sent); this reads it at that boundary.
    """
    found: dict[str, str] = {}
    for transceiver in pc.getTransceivers():
        codecs = getattr(transceiver, "_codecs", None) or []
        for codec in codecs:
            mime = str(codec.mimeType)
            if not mime.lower().endswith("/rtx"):
                found.setdefault(transceiver.kind, mime)
                break
    return found
