"""The persona's tracks follow the codecs the client's offer negotiates."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCRtpSender

from dpkit.server.persona_media.audio import PersonaAudioTrack
from dpkit.server.persona_media.encoders import H264, VP8
from dpkit.server.persona_media.shared_tracks import SharedAudioTrack
from dpkit.server.pool import DigitalPersonPool
from dpkit.server.rtc import PersonaPeer
from dpkit.server.settings import PersonaSettings


@pytest.fixture
async def pool() -> AsyncIterator[DigitalPersonPool]:
    made = DigitalPersonPool(1, PersonaSettings(video_width=64, video_height=48))
    try:
        yield made
    finally:
        await made.close()


async def _offer(audio: str | None = None, video: str | None = None) -> str:
    """An aiortc client's offer, with only ``audio`` / ``video`` (MIME types) if given."""
    client = RTCPeerConnection()
    try:
        for kind, only in (("audio", audio), ("video", video)):
            transceiver = client.addTransceiver(kind, "sendrecv")
            if only is not None:
                codecs = RTCRtpSender.getCapabilities(kind).codecs
                transceiver.setCodecPreferences([c for c in codecs if c.mimeType == only])
        await client.setLocalDescription(await client.createOffer())
        assert client.localDescription is not None
        return str(client.localDescription.sdp)
    finally:
        await client.close()


async def _answered(pool: DigitalPersonPool, offer: str) -> PersonaPeer:
    person = pool.try_acquire(object())
    assert person is not None
    peer = PersonaPeer(person, ("127.0.0.1",))
    await peer.answer(offer)
    return peer


async def test_an_ordinary_offer_gets_the_shared_opus_and_vp8(pool: DigitalPersonPool) -> None:
    peer = await _answered(pool, await _offer())
    try:
        assert isinstance(peer.audio, SharedAudioTrack)
        assert peer.video is not None
        assert peer.video.codec == VP8
    finally:
        await peer.close()


async def test_an_offer_of_h264_only_gets_the_shared_h264_stream(pool: DigitalPersonPool) -> None:
    peer = await _answered(pool, await _offer(video="video/H264"))
    try:
        assert peer.video is not None
        assert peer.video.codec == H264
    finally:
        await peer.close()


async def test_an_offer_without_opus_gets_a_per_session_g711_track(
    pool: DigitalPersonPool,
) -> None:
    peer = await _answered(pool, await _offer(audio="audio/PCMU"))
    try:
        assert isinstance(peer.audio, PersonaAudioTrack)
    finally:
        await peer.close()
