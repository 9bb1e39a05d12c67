"""The checks on offers and candidates: real offers pass, every hostile shape is named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dpkit.errors import ProtocolError
from dpkit.protocol.sdp import (
    MAX_MEDIA_SECTIONS,
    Candidate,
    MediaSection,
    OfferLayout,
    check_candidate,
    check_offer,
)

OFFERS = Path(__file__).parent / "offers"
AIORTC = (OFFERS / "aiortc-1.16-two-sections.sdp").read_bytes().decode()
CHROMIUM = (OFFERS / "chromium-156-four-sections.sdp").read_bytes().decode()


def test_a_chromium_offer_passes_with_its_four_sections() -> None:
    """Chromium 156's offer (microphone, camera, then one more audio and video) is accepted."""
    layout = check_offer(CHROMIUM)
    assert layout.sections == (
        MediaSection("audio", "0"),
        MediaSection("video", "1"),
        MediaSection("audio", "2"),
        MediaSection("video", "3"),
    )


def test_an_aiortc_offer_passes() -> None:
    """dpkit's own client (aiortc) offer is accepted, candidates and all."""
    assert check_offer(AIORTC).mids == ("0", "1")


def _second_audio_with_the_first_mid(sdp: str) -> str:
    audio = sdp[sdp.index("m=audio") : sdp.index("m=video")]
    return sdp.replace("m=video", audio + "m=video", 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda s: s.replace("a=ice-ufrag:", "a=x-ufrag:"), "has no a=ice-ufrag"),
        (lambda s: s.replace("a=ice-pwd:", "a=x-pwd:"), "has no a=ice-pwd"),
        (_second_audio_with_the_first_mid, "two media sections share the mid '0'"),
        (lambda s: re.sub(r"m=audio \d+", "m=audio 99999", s), "media port must be in 0..65535"),
        (
            lambda s: re.sub(r"(a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1) \d+", r"\1 70000", s),
            "candidate port must be in 1..65535",
        ),
        (lambda s: s.replace("v=0", "v=1"), "must start with v=0"),
        (lambda s: s.split("m=audio")[0], "has no media section"),
        (lambda s: s.replace("a=mid:1", "a=mid:"), "a=mid is not valid"),
        (lambda s: s.replace("a=mid:1\r\n", ""), "media section 1 has no a=mid"),
        (lambda s: s.replace("a=fingerprint:", "a=x-fingerprint:"), "no DTLS a=fingerprint"),
        (lambda s: s.replace("a=fingerprint:sha-256 ", "a=fingerprint:md5 "), "a=fingerprint is"),
        (lambda s: s.replace("c=IN IP4 127.0.0.1", "c=IN IP4 example.com", 1), "not an IP"),
        (lambda s: s.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 7"), "names the mid '7'"),
        (lambda s: s.replace("a=rtpmap:96 opus", "a=rtpmap:300 opus"), "a=rtpmap is not valid"),
        (lambda s: s.replace("a=extmap:1 ", "a=extmap:0 "), "extmap id must be in 1..255"),
        (lambda s: s.replace("a=ssrc:", "a=ssrc:99999999999", 1), "a=ssrc must be"),
        (lambda s: s.replace("a=setup:actpass", "a=setup:sideways", 1), "a=setup is not valid"),
        (lambda s: s.replace("s=-", "garbage"), "line 3 is not 'x=value'"),
        (lambda s: re.sub(r"m=audio (\d+)", r"m=audio \1/2", s), "port count"),
        (lambda s: s.replace("m=audio", "m=hologram", 1), "media kind must be"),
        (lambda s: s.replace("a=fmtp:98 apt=97", "a=fmtp:x apt=97"), "a=fmtp payload type"),
    ],
)
def test_hostile_offers_are_refused_naming_the_problem(make: object, message: str) -> None:
    """Each shape that broke aiortc (and a few more) raises one ProtocolError saying why."""
    assert callable(make)
    bad = make(AIORTC)
    assert bad != AIORTC
    with pytest.raises(ProtocolError) as caught:
        check_offer(bad)
    assert message in caught.value.message


def test_too_many_media_sections_are_refused() -> None:
    """More media sections than a browser ever sends is refused."""
    head, _, rest = AIORTC.partition("m=audio")
    audio = "m=audio" + rest[: rest.index("m=video")]
    many = head + "".join(
        audio.replace("a=mid:0", f"a=mid:{n}") for n in range(MAX_MEDIA_SECTIONS + 1)
    )
    with pytest.raises(ProtocolError, match="more than 8 media sections"):
        check_offer(many.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
            Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 5000, "host"),
        ),
        (
            "candidate:842163049 1 udp 1677729535 203.0.113.7 61665 typ srflx raddr 10.0.0.2 "
            "rport 61665 generation 0 ufrag Xy12 network-cost 999",
            Candidate("842163049", 1, "udp", 1677729535, "203.0.113.7", 61665, "srflx"),
        ),
        (
            "candidate:2 1 tcp 1518280447 ::1 9 typ host tcptype active",
            Candidate("2", 1, "tcp", 1518280447, "::1", 9, "host"),
        ),
        (
            "candidate:3 1 UDP 2113937151 6f1c2d3e-aaaa-bbbb-cccc-0123456789ab.local 54321 "
            "typ host",
            Candidate(
                "3",
                1,
                "udp",
                2113937151,
                "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab.local",
                54321,
                "host",
            ),
        ),
    ],
)
def test_browser_candidates_pass(text: str, expected: Candidate) -> None:
    """Host, srflx, TCP and mDNS candidates as browsers trickle them are read correctly."""
    assert check_candidate(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("candidate:1 2 3", "is not 'foundation component"),
        ("candidate:1 1 udp 1 127.0.0.1 70000 typ host", "port must be in 1..65535"),
        ("candidate:1 1 udp 1 127.0.0.1 0 typ host", "port must be in 1..65535"),
        ("candidate:1 1 udp 99999999999 127.0.0.1 5 typ host", "priority must be"),
        ("candidate:1 0 udp 1 127.0.0.1 5 typ host", "component must be in 1..256"),
        ("candidate:1 1 udp 1 evil.example.com 5 typ host", "must be an IP address"),
        ("candidate:1 1 udp 1 224.0.0.251 5 typ host", "not a unicast address"),
        ("candidate:1 1 udp 1 0.0.0.0 5 typ host", "not a unicast address"),
        ("candidate:1 1 udp 1 255.255.255.255 5 typ host", "not a unicast address"),
        ("candidate:1 1 sctp 1 127.0.0.1 5 typ host", "transport must be udp or tcp"),
        ("candidate:1 1 udp 1 127.0.0.1 5 typ magic", "type must be host"),
        ("candidate:1 1 udp 1 127.0.0.1 5 type host", "is not 'foundation component"),
        ("candidate:1 1 udp 1 127.0.0.1 5 typ host raddr", "name value pairs"),
        ("candidate:1 1 udp 1 127.0.0.1 5 typ srflx raddr 1.2.3.4 rport 99999", "rport must be"),
        ("candidate:1 1 udp -1 127.0.0.1 5 typ host", "priority must be a number"),
        ("candidate:" + "x" * 600, "longer than 512"),
    ],
)
def test_hostile_candidates_are_refused_naming_the_problem(text: str, message: str) -> None:
    """Each candidate shape that broke aiortc (and a few more) raises one ProtocolError."""
    with pytest.raises(ProtocolError) as caught:
        check_candidate(text)
    assert message in caught.value.message


def test_a_candidate_finds_its_section_by_mid_or_index() -> None:
    """sdpMid wins; without it sdpMLineIndex names the section; without both it is refused."""
    layout = OfferLayout((MediaSection("audio", "a0"), MediaSection("video", "v1")))
    assert layout.resolve_mid("v1", None) == ("v1", 1)
    assert layout.resolve_mid(None, 0) == ("a0", 0)
    with pytest.raises(ProtocolError, match="neither sdpMid nor sdpMLineIndex"):
        layout.resolve_mid(None, None)
    with pytest.raises(ProtocolError, match="names no media section"):
        layout.resolve_mid("zz", None)
    with pytest.raises(ProtocolError, match="sdpMLineIndex 2 is not one of"):
        layout.resolve_mid(None, 2)
