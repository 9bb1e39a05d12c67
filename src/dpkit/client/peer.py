"""The client's peer connection, laid out as the browser lays it out.

Local tracks first (microphone, then camera), then always one more audio and one more video
transceiver, all ``sendrecv`` (docs/protocol.md, section 3). The persona's audio and video arrive
on one media stream; :attr:`UserPeer.media_ready` tells when both tracks are there.
"""

from __future__ import annotations

import asyncio

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

from dpkit.client.devices import UserMedia
from dpkit.client.local_media import SwitchableTrack
from dpkit.errors import ProtocolError
from dpkit.protocol.messages import Ice, IceServer
from dpkit.rtc import ice_addresses


class UserPeer:
    """One connect attempt's peer connection."""

    def __init__(
        self,
        media: UserMedia,
        ice_servers: tuple[IceServer, ...],
        addresses: tuple[str, ...] | None,
    ) -> None:
        servers = [
            RTCIceServer(list(s.urls), username=s.username, credential=s.credential)
            for s in ice_servers
        ]
        # As the browser does: a TURN server in the list means relay only.
        relay = any(url.startswith(("turn:", "turns:")) for s in ice_servers for url in s.urls)
        config = RTCConfiguration(
            # The server's list, even empty: given None, aiortc would ask Google's STUN server,
            # which neither side configured (the browser asks none either).
            iceServers=servers,
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL,
        )
        self._pc = RTCPeerConnection(config)
        self._addresses = addresses
        self._changed = asyncio.Event()
        self.audio: MediaStreamTrack | None = None
        self.video: MediaStreamTrack | None = None
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._changed.set)
        #: The user's microphone and camera, switchable for the whole session.
        self.microphone = SwitchableTrack("audio", media.microphone)
        self.camera = SwitchableTrack("video", media.camera)
        self._attached: set[str] = set()
        for slot, track in ((self.microphone, media.microphone), (self.camera, media.camera)):
            if track is not None:
                self._pc.addTransceiver(slot, "sendrecv")
                self._attached.add(slot.kind)
        self._pc.addTransceiver("audio", "sendrecv")
        self._pc.addTransceiver("video", "sendrecv")

    def switch(self, kind: str, track: MediaStreamTrack | None) -> None:
        """Turn the microphone (``audio``) or camera (``video``) on with ``track``, or off.

        As the browser does: the track goes on the first sender of its kind, the one the offer
        laid out for it (its own, or the spare one), so no new offer is needed.
        """
        slot = self.microphone if kind == "audio" else self.camera
        if kind not in self._attached:
            sender = next(t.sender for t in self._pc.getTransceivers() if t.kind == kind)
            sender.replaceTrack(slot)
            self._attached.add(kind)
        slot.switch(track)

    @property
    def media_ready(self) -> bool:
        return self.audio is not None and self.video is not None

    @property
    def connection_state(self) -> str:
        state: str = self._pc.connectionState
        return state

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.audio is None:
            self.audio = track
        elif track.kind == "video" and self.video is None:
            self.video = track

    async def make_offer(self) -> str:
        with ice_addresses(self._addresses):
            await self._pc.setLocalDescription(await self._pc.createOffer())
        description = self._pc.localDescription
        assert description is not None
        return str(description.sdp)

    async def apply_answer(self, sdp: str) -> None:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        except (ValueError, KeyError, IndexError) as exc:
            raise ProtocolError(f"answer: the SDP is not usable: {exc}") from exc

    async def add_candidate(self, ice: Ice) -> None:
        if ice.complete or not ice.candidate:
            return
        try:
            candidate = candidate_from_sdp(ice.candidate.removeprefix("candidate:"))
        except (ValueError, IndexError) as exc:
            raise ProtocolError(f"ice: candidate is not valid: {ice.candidate!r}") from exc
        candidate.sdpMid = ice.sdp_mid
        candidate.sdpMLineIndex = ice.sdp_mline_index
        await self._pc.addIceCandidate(candidate)

    async def wait_failed(self) -> None:
        """Return when the transport fails or closes."""
        while self._pc.connectionState not in ("failed", "closed"):
            self._changed.clear()
            await self._changed.wait()

    async def close(self) -> None:
        await self._pc.close()

    async def abandon(self, step_timeout_s: float = 0.5) -> None:
        """Close what the peer connection holds while the event loop is shutting down.

        ``asyncio.run`` cancels every task at once, aiortc's own included; ``close()`` then
        either dies on a task it awaits or waits for ever on a close aiortc began and could not
        finish. This stops each part through its own public ``stop()`` instead (each bounded,
        and each a no-op if already stopped): the receivers (their decoder threads) and
        senders, then the DTLS and ICE transports (their UDP sockets).
        """
        transceivers = self._pc.getTransceivers()
        steps = [t.receiver.stop for t in transceivers] + [t.sender.stop for t in transceivers]
        for transceiver in transceivers:
            dtls = transceiver.receiver.transport
            if dtls is not None:
                steps += [dtls.stop, dtls.transport.stop]
        sctp = self._pc.sctp
        if sctp is not None:
            steps += [sctp.stop, sctp.transport.stop, sctp.transport.transport.stop]
        for step in steps:
            try:
                async with asyncio.timeout(step_timeout_s):
                    await step()
            except (Exception, asyncio.CancelledError):
                # A part whose task the loop cancelled raises CancelledError when awaited; it
                # is that part failing, not this task being cancelled (that already happened).
                continue
