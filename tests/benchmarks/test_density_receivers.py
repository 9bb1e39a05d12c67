"""The session density benchmark's own helpers: RTP header reading and frame counting, the
speaking tally and the picture check."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from aioice.ice import Connection as IceConnection
from benchmarks.density_receivers import (
    DatagramTap,
    RtpCounter,
    RtpHeader,
    StreamCounts,
    check_picture,
    payload_kinds,
    rtp_header,
    speaking_stats,
)

from dpkit.server.persona_media.face import FaceRenderer

VIDEO_STEP = 6000  # 90 kHz at 15 fps
AUDIO_STEP = 960  # 48 kHz, 20 ms


def _video(counter: RtpCounter, frames: list[tuple[int, int, int]]) -> None:
    """Feed ``(first sequence, timestamp, packets)`` frames, the marker on each last packet."""
    for first, timestamp, packets in frames:
        for n in range(packets):
            counter.add(1, (first + n) & 0xFFFF, timestamp & 0xFFFFFFFF, n == packets - 1)


def test_video_frames_are_packets_sharing_a_timestamp_ended_by_the_marker() -> None:
    """Three frames of 1, 3 and 2 packets count as three frames and six packets."""
    counter = RtpCounter(VIDEO_STEP, video=True)
    _video(counter, [(10, 0, 1), (11, VIDEO_STEP, 3), (14, 2 * VIDEO_STEP, 2)])
    assert counter.counts() == StreamCounts(packets=6, frames=3)


def test_sequence_and_timestamp_wrap_around() -> None:
    """Counting goes on across the 16-bit sequence and 32-bit timestamp wrap."""
    counter = RtpCounter(VIDEO_STEP, video=True)
    start = 2**32 - VIDEO_STEP
    _video(
        counter, [(65534, start, 1), (65535, start + VIDEO_STEP, 2), (1, start + 2 * VIDEO_STEP, 1)]
    )
    assert counter.counts() == StreamCounts(packets=4, frames=3)


def test_a_timestamp_gap_without_loss_is_frames_the_sender_skipped() -> None:
    """Two frames' worth of timestamp missing, sequence contiguous: two skipped, none lost."""
    counter = RtpCounter(VIDEO_STEP, video=True)
    _video(counter, [(0, 0, 1), (1, 3 * VIDEO_STEP, 1)])
    assert counter.counts() == StreamCounts(packets=2, frames=2, skipped=2)


def test_a_lost_marker_packet_loses_the_frame_and_counts_the_loss() -> None:
    """A frame whose last packet never came is not counted; the gap is one lost packet."""
    counter = RtpCounter(VIDEO_STEP, video=True)
    counter.add(1, 0, 0, False)
    counter.add(1, 2, VIDEO_STEP, True)  # sequence 1 (frame 0's marker) lost
    assert counter.counts() == StreamCounts(packets=2, frames=1, lost=1)


def test_audio_is_one_frame_a_packet_and_loss_is_not_skipping() -> None:
    """Audio: a lost packet is lost, a timestamp jump beyond it is skipped frames."""
    counter = RtpCounter(AUDIO_STEP, video=False)
    for sequence, frame in ((100, 0), (101, 1), (103, 3), (104, 7)):
        counter.add(7, sequence, frame * AUDIO_STEP, False)
    assert counter.counts() == StreamCounts(packets=4, frames=4, lost=1, skipped=3)


def test_late_duplicate_and_foreign_packets_are_not_frames() -> None:
    """A repeated or older sequence number is late; another SSRC is foreign; neither counts."""
    counter = RtpCounter(AUDIO_STEP, video=False)
    counter.add(7, 10, 0, False)
    counter.add(7, 11, AUDIO_STEP, False)
    counter.add(7, 11, AUDIO_STEP, False)
    counter.add(7, 9, 0, False)
    counter.add(8, 12, 2 * AUDIO_STEP, False)
    assert counter.counts() == StreamCounts(packets=2, frames=2, late=2, foreign=1)


def test_frame_step_must_be_positive() -> None:
    """A counter with no frame step is refused."""
    with pytest.raises(ValueError, match="frame_step"):
        RtpCounter(0, video=True)


def test_speaking_stats_over_a_window() -> None:
    """Two speak before the window, one more for its second half: min 2, mean 2.5, max 3."""
    changes = [(0.0, 1), (1.0, 1), (15.0, 1), (30.0, -1), (30.0, -1)]
    assert speaking_stats(changes, 10.0, 20.0) == (2, 2.5, 3)


def test_the_drawn_persona_passes_the_picture_check_and_black_does_not() -> None:
    """The renderer's own picture is a persona picture; black and noise are not."""
    persona = FaceRenderer(640, 480).render(1.0)
    assert check_picture(persona, 640, 480) == ""
    assert "luma" in check_picture(np.zeros((480, 640, 3), np.uint8), 640, 480)
    noise = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert check_picture(noise, 640, 480) != ""
    assert "size" in check_picture(persona, 320, 240)


def _rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    *,
    marker: bool = False,
    ssrc: int = 0x1234,
    payload: bytes = b"\x9c" * 40,
) -> bytes:
    """An RTP datagram as SRTP sends it: a clear header, then (here: made-up) payload bytes."""
    second = payload_type | (0x80 if marker else 0)
    return struct.pack("!BBHII", 0x80, second, sequence, timestamp, ssrc) + payload


def test_rtp_header_reads_type_marker_sequence_timestamp_and_ssrc() -> None:
    """An RTP datagram's fixed header is read whole, with and without the marker bit."""
    assert rtp_header(_rtp(97, 65535, 2**32 - 1, marker=True, ssrc=7)) == RtpHeader(
        97, True, 65535, 2**32 - 1, 7
    )
    assert rtp_header(_rtp(111, 0, 0)) == RtpHeader(111, False, 0, 0, 0x1234)


def test_rtp_header_is_none_for_rtcp_stun_dtls_and_short_datagrams() -> None:
    """RTCP (second byte 192..223), STUN, DTLS, another RTP version and a short datagram are
    not RTP; the RTP types just outside RTCP's range (marker + 63, marker + 96) are."""
    rtcp = [struct.pack("!BBH", 0x80, kind, 6) + bytes(24) for kind in (192, 200, 201, 206, 223)]
    stun = bytes.fromhex("000100002112a442") + bytes(12)  # binding request, magic cookie
    dtls = bytes([22, 0xFE, 0xFD]) + bytes(20)  # handshake record, DTLS 1.2
    version_1 = bytes([0x40]) + _rtp(97, 1, 1)[1:]
    for datagram in [*rtcp, stun, dtls, version_1, _rtp(97, 1, 1)[:11], b""]:
        assert rtp_header(datagram) is None, datagram[:2].hex()
    assert rtp_header(_rtp(63, 1, 1, marker=True)) == RtpHeader(63, True, 1, 1, 0x1234)
    assert rtp_header(_rtp(96, 1, 1, marker=True)) == RtpHeader(96, True, 1, 1, 0x1234)


ANSWER = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 127.0.0.1
a=mid:0
a=sendrecv
a=rtpmap:111 opus/48000/2
a=rtpmap:0 PCMU/8000
m=video 9 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 127.0.0.1
a=mid:1
a=sendrecv
a=rtpmap:97 VP8/90000
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
"""


def test_payload_kinds_come_from_the_answers_rtpmap_lines() -> None:
    """Each m-section's payload types map to its kind; one type in both kinds is refused."""
    assert payload_kinds(ANSWER) == {111: "audio", 0: "audio", 97: "video", 98: "video"}
    clash = ANSWER.replace("UDP/TLS/RTP/SAVPF 97 98", "UDP/TLS/RTP/SAVPF 111 98").replace(
        "a=rtpmap:97 VP8/90000", "a=rtpmap:111 VP8/90000"
    )
    with pytest.raises(ValueError, match="payload type 111"):
        payload_kinds(clash)


def test_the_datagram_tap_counts_rtp_by_payload_type_and_passes_the_rest_on() -> None:
    """RTP is taken and counted in its stream's counter, across the sequence and timestamp
    wrap; RTCP, STUN and DTLS are left to aiortc; an unrouted connection's RTP is dropped."""
    tap = DatagramTap()
    routed, unrouted = IceConnection(ice_controlling=False), IceConnection(ice_controlling=False)
    video = RtpCounter(VIDEO_STEP, video=True)
    audio = RtpCounter(AUDIO_STEP, video=False)
    tap.route(routed, {97: video, 98: video, 111: audio})
    wrapped = 2**32 - VIDEO_STEP, 0  # two frames' timestamps, either side of the wrap
    frames = [(65534, wrapped[0], True), (65535, wrapped[1], False), (0, wrapped[1], True)]
    for sequence, timestamp, marker in frames:
        assert tap.take(routed, _rtp(97, sequence, timestamp, marker=marker))
    for n in range(3):
        assert tap.take(routed, _rtp(111, (65535 + n) & 0xFFFF, n * AUDIO_STEP, ssrc=9))
    assert tap.take(routed, _rtp(98, 5, 0, ssrc=99))  # a retransmission: its own SSRC
    assert tap.take(routed, _rtp(35, 1, 1))  # a type the answer did not give: dropped
    assert tap.take(unrouted, _rtp(97, 1, 1, marker=True))
    for other in (struct.pack("!BBH", 0x80, 201, 1) + bytes(4), bytes(20), bytes([23]) * 20):
        assert not tap.take(routed, other)
    assert video.counts() == StreamCounts(packets=3, frames=2, foreign=1)
    assert audio.counts() == StreamCounts(packets=3, frames=3)
