"""Checks on the SDP and ICE candidates a client sends, before a WebRTC stack is given them.

A WebRTC stack trusts its own peer's SDP; a server cannot. aiortc, given a hostile offer, fails
deep inside with an AssertionError, an AttributeError or, for a candidate port above 65535, an
OverflowError later in a datagram transport. :func:`check_offer` and :func:`check_candidate`
accept only what a browser or dpkit's client sends, and raise one
:class:`~dpkit.errors.ProtocolError` naming the line that is wrong.

Candidate addresses must be IP literals (or the ``.local`` mDNS names Chrome uses): a host name
would make the server resolve names chosen by the client.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from dpkit.errors import ProtocolError

#: More media sections than this is not a browser's offer (it sends 2 to 4).
MAX_MEDIA_SECTIONS = 8
MAX_LINES = 2000
MAX_CANDIDATE_CHARS = 512

_MEDIA_KINDS = frozenset({"audio", "video", "application"})
_CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})
_TRANSPORTS = frozenset({"udp", "tcp"})
_TCP_TYPES = frozenset({"active", "passive", "so"})
_SETUP = frozenset({"actpass", "active", "passive", "holdconn"})
_ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}$")
_FINGERPRINT = re.compile(
    r"^(sha-1|sha-224|sha-256|sha-384|sha-512) ([0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+)$"
)
_MDNS = re.compile(r"^[0-9a-fA-F-]{1,64}\.local$")
_RTPMAP = re.compile(r"^(\d{1,3}) [A-Za-z0-9_.+-]{1,32}/(\d{1,6})(/\d{1,2})?$")


@dataclass(frozen=True)
class MediaSection:
    """One ``m=`` section of an offer: its kind and its ``mid``."""

    kind: str
    mid: str


@dataclass(frozen=True)
class OfferLayout:
    """What the server needs to know of a checked offer."""

    sections: tuple[MediaSection, ...]

    @property
    def mids(self) -> tuple[str, ...]:
        return tuple(section.mid for section in self.sections)

    def resolve_mid(self, sdp_mid: str | None, sdp_mline_index: int | None) -> tuple[str, int]:
        """The media section a trickled candidate belongs to, by its mid or else its index."""
        if sdp_mid is not None:
            if sdp_mid not in self.mids:
                raise ProtocolError(f"ice: sdpMid {sdp_mid!r} names no media section of the offer")
            return sdp_mid, self.mids.index(sdp_mid)
        if sdp_mline_index is None:
            raise ProtocolError("ice: the candidate has neither sdpMid nor sdpMLineIndex")
        if not 0 <= sdp_mline_index < len(self.sections):
            raise ProtocolError(
                f"ice: sdpMLineIndex {sdp_mline_index} is not one of the offer's "
                f"{len(self.sections)} media sections"
            )
        return self.sections[sdp_mline_index].mid, sdp_mline_index


@dataclass(frozen=True)
class Candidate:
    """A checked ICE candidate (RFC 8839's grammar, the fields a stack uses)."""

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str

    @property
    def is_mdns(self) -> bool:
        return self.address.endswith(".local")


def _integer(text: str, low: int, high: int, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise ProtocolError(f"{what} must be a number, got {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise ProtocolError(f"{what} must be in {low}..{high}, got {value}")
    return value


def _address(text: str, what: str, *, allow_mdns: bool) -> str:
    if allow_mdns and _MDNS.match(text):
        return text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProtocolError(f"{what} must be an IP address, got {text[:60]!r}") from None
    if address.is_multicast or address.is_unspecified or str(address) == "255.255.255.255":
        raise ProtocolError(f"{what} {address} is not a unicast address")
    return str(address)


def check_candidate(text: str) -> Candidate:
    """Check one candidate (with or without its ``candidate:`` prefix)."""
    if len(text) > MAX_CANDIDATE_CHARS:
        raise ProtocolError(f"ice: candidate is longer than {MAX_CANDIDATE_CHARS} characters")
    bits = text.removeprefix("a=").removeprefix("candidate:").split()
    if len(bits) < 8 or bits[6] != "typ":
        raise ProtocolError(
            f"ice: candidate is not 'foundation component transport priority "
            f"address port typ type ...': {text[:80]!r}"
        )
    foundation, component, transport, priority, address, port, _typ, kind = bits[:8]
    if not _TOKEN.match(foundation):
        raise ProtocolError(f"ice: candidate foundation is not valid: {foundation[:40]!r}")
    if transport.lower() not in _TRANSPORTS:
        raise ProtocolError(f"ice: candidate transport must be udp or tcp, got {transport[:20]!r}")
    if kind not in _CANDIDATE_TYPES:
        raise ProtocolError(
            f"ice: candidate type must be host, srflx, prflx or relay, got {kind[:20]!r}"
        )
    candidate = Candidate(
        foundation,
        _integer(component, 1, 256, "ice: candidate component"),
        transport.lower(),
        _integer(priority, 0, 2**32 - 1, "ice: candidate priority"),
        _address(address, "ice: candidate address", allow_mdns=True),
        _integer(port, 0 if transport.lower() == "tcp" else 1, 65535, "ice: candidate port"),
        kind,
    )
    _check_extensions(bits[8:])
    return candidate


def _check_extensions(rest: list[str]) -> None:
    if len(rest) % 2:
        raise ProtocolError("ice: candidate extensions must come in name value pairs")
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        if name == "raddr":
            _address(value, "ice: candidate raddr", allow_mdns=True)
        elif name == "rport":
            _integer(value, 0, 65535, "ice: candidate rport")
        elif name == "tcptype" and value not in _TCP_TYPES:
            raise ProtocolError(f"ice: candidate tcptype is not valid: {value[:20]!r}")
        elif not _TOKEN.match(name) or len(value) > 128:
            raise ProtocolError(f"ice: candidate extension is not valid: {name[:40]!r}")


@dataclass
class _Section:
    kind: str
    port: int
    mid: str | None = None
    ufrag: bool = False
    pwd: bool = False
    fingerprint: bool = False


def check_offer(sdp: str) -> OfferLayout:
    """Check an offer's SDP; return its media sections, or raise naming the first problem."""
    lines = sdp.replace("\r\n", "\n").strip("\n").split("\n")
    if len(lines) > MAX_LINES:
        raise ProtocolError(f"offer: the SDP has more than {MAX_LINES} lines")
    if not lines or lines[0].strip() != "v=0":
        raise ProtocolError("offer: the SDP must start with v=0")
    session = _Section("session", 0)
    sections: list[_Section] = []
    grouped: list[str] = []
    for number, line in enumerate(lines, start=1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise ProtocolError(f"offer: SDP line {number} is not 'x=value': {line[:60]!r}")
        if line.startswith("m="):
            if len(sections) == MAX_MEDIA_SECTIONS:
                raise ProtocolError(f"offer: more than {MAX_MEDIA_SECTIONS} media sections")
            sections.append(_media_line(line))
            continue
        if line.startswith("a=group:"):
            grouped += line.split()[1:]
        _check_line(line, sections[-1] if sections else session)
    if not sections:
        raise ProtocolError("offer: the SDP has no media section")
    mids: list[str] = []
    for index, section in enumerate(sections):
        if section.mid is None:
            raise ProtocolError(f"offer: media section {index} has no a=mid")
        if section.mid in mids:
            raise ProtocolError(f"offer: two media sections share the mid {section.mid!r}")
        mids.append(section.mid)
        for field, name in (("ufrag", "a=ice-ufrag"), ("pwd", "a=ice-pwd")):
            if not (getattr(section, field) or getattr(session, field)):
                raise ProtocolError(f"offer: media section {index} has no {name}")
        if not (section.fingerprint or session.fingerprint):
            raise ProtocolError(f"offer: media section {index} has no DTLS a=fingerprint")
    for mid in grouped:
        if mid not in mids:
            raise ProtocolError(f"offer: a=group names the mid {mid[:40]!r}, which no section has")
    return OfferLayout(tuple(MediaSection(s.kind, s.mid or "") for s in sections))


def _media_line(line: str) -> _Section:
    bits = line[2:].split()
    if len(bits) < 4:
        raise ProtocolError(f"offer: media line is not 'm=kind port proto formats': {line[:60]!r}")
    kind, port, proto = bits[0], bits[1], bits[2]
    if kind not in _MEDIA_KINDS:
        raise ProtocolError(
            f"offer: media kind must be audio, video or application, got {kind[:20]!r}"
        )
    if "/" in port:
        raise ProtocolError("offer: a media line may not give a port count")
    if not _TOKEN.match(proto.replace("/", "-")):
        raise ProtocolError(f"offer: media protocol is not valid: {proto[:40]!r}")
    return _Section(kind, _integer(port, 0, 65535, "offer: media port"))


def _check_line(line: str, section: _Section) -> None:
    """Check the lines a WebRTC stack parses into numbers, addresses and ids."""
    key, _, value = line[2:].partition(":") if line.startswith("a=") else (line[:1], "", line[2:])
    if line.startswith("c="):
        bits = value.split()
        if len(bits) != 3 or bits[0] != "IN" or bits[1] not in ("IP4", "IP6"):
            raise ProtocolError(f"offer: connection line is not 'c=IN IP4 address': {line[:60]!r}")
        try:
            ipaddress.ip_address(bits[2])
        except ValueError:
            raise ProtocolError(
                f"offer: connection address is not an IP: {bits[2][:60]!r}"
            ) from None
    elif key == "mid":
        if section.kind == "session":
            raise ProtocolError("offer: a=mid outside a media section")
        if section.mid is not None or not _TOKEN.match(value):
            raise ProtocolError(f"offer: a=mid is not valid or given twice: {value[:40]!r}")
        section.mid = value
    elif key in ("ice-ufrag", "ice-pwd"):
        low = 4 if key == "ice-ufrag" else 22
        if not low <= len(value) <= 256 or not _ICE_CHARS.match(value):
            raise ProtocolError(f"offer: a={key} is not valid")
        setattr(section, "ufrag" if key == "ice-ufrag" else "pwd", True)
    elif key == "fingerprint":
        if not _FINGERPRINT.match(value):
            raise ProtocolError("offer: a=fingerprint is not 'algorithm hex:hex:...'")
        section.fingerprint = True
    elif key == "setup":
        if value not in _SETUP:
            raise ProtocolError(f"offer: a=setup is not valid: {value[:20]!r}")
    elif key == "candidate":
        check_candidate(value)
    elif key == "rtpmap":
        if not _RTPMAP.match(value) or int(value.split()[0]) > 127:
            raise ProtocolError(f"offer: a=rtpmap is not valid: {value[:60]!r}")
    elif key in ("fmtp", "rtcp-fb"):
        payload_type = value.split(" ", 1)[0]
        if payload_type != "*":
            _integer(payload_type, 0, 127, f"offer: a={key} payload type")
    elif key == "extmap":
        _integer(value.split(" ", 1)[0].split("/", 1)[0], 1, 255, "offer: a=extmap id")
    elif key == "ssrc":
        _integer(value.split(" ", 1)[0], 0, 2**32 - 1, "offer: a=ssrc")
    elif key == "ssrc-group":
        for ssrc in value.split()[1:]:
            _integer(ssrc, 0, 2**32 - 1, "offer: a=ssrc-group ssrc")
    elif key == "rtcp":
        _integer(value.split(" ", 1)[0], 0, 65535, "offer: a=rtcp port")
    elif key in ("sctp-port", "max-message-size"):
        _integer(value.strip(), 0, 2**31 - 1, f"offer: a={key}")
