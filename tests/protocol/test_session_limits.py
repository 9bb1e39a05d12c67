"""The server machine's bounds on one client: frame size, text, offers, candidates, client logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dpkit.protocol.actions import AddRemoteCandidate, CloseSocket, ReleaseSession, SendFrame
from dpkit.protocol.limits import (
    CLIENT_LOG_LINE_CHARS,
    LOGGED_VIOLATIONS,
    MAX_VIOLATIONS,
    SessionLimits,
    printable,
)
from dpkit.protocol.messages import (
    Close,
    DiagnosticsLog,
    DpkitEvent,
    Ice,
    Offer,
    SceneRequest,
    SceneResponse,
    SessionSettings,
    UserText,
)
from dpkit.protocol.sdp import check_candidate
from dpkit.protocol.server import ServerPhase, ServerSession

SDP = (Path(__file__).parent / "offers" / "aiortc-1.16-two-sections.sdp").read_bytes().decode()
CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"
LIMITS = SessionLimits(max_frame_bytes=1000, max_text_chars=50, client_log_max_bytes=200)


def established(log_to_server: bool = False) -> ServerSession:
    session = ServerSession(LIMITS)
    session.persona_assigned(settings=SessionSettings(log_to_server=log_to_server))
    return session


def starting() -> ServerSession:
    session = established()
    session.receive(Offer(SDP))
    assert session.phase is ServerPhase.STARTING
    return session


def closes_with(actions: list[object], reason: str) -> bool:
    return actions[-3:] == [SendFrame(Close(reason)), CloseSocket(), ReleaseSession(reason)]


def test_a_frame_over_the_limit_closes_frame_too_large() -> None:
    """A frame over max_frame_bytes (counted in UTF-8 bytes) ends the session: frameTooLarge."""
    session = established()
    assert session.receive_text("x" * 1000) != []  # at the limit: parsed (and malformed)
    assert session.phase is ServerPhase.ESTABLISHED
    actions = session.receive_text("é" * 501)  # 501 characters, 1002 bytes
    assert closes_with(list(actions), "frameTooLarge")
    assert session.ending == "frameTooLarge"


@pytest.mark.parametrize("name", ["startSpeaking", "conversationSend"])
def test_text_over_the_limit_is_refused_with_a_response(name: str) -> None:
    """startSpeaking/conversationSend over max_text_chars are answered status 1, naming it."""
    session = established()
    at_limit = SceneRequest(name, "t1", {"text": "a" * 50})
    over = SceneRequest(name, "t2", {"text": "a" * 51})
    assert session.receive(at_limit)[0].__class__.__name__ == "AnswerSceneRequest"
    [refusal] = session.receive(over)
    assert isinstance(refusal, SendFrame)
    assert isinstance(refusal.frame, SceneResponse)
    assert (refusal.frame.transaction, refusal.frame.status) == ("t2", 1)
    assert "51 characters, over the limit of 50 (max_text_chars)" in refusal.frame.body["error"]
    assert session.phase is ServerPhase.ESTABLISHED


def test_text_that_is_not_a_string_is_refused() -> None:
    """A text field holding an object is refused, never turned into a string and spoken."""
    session = established()
    [refusal] = session.receive(SceneRequest("startSpeaking", "t", {"text": {"a": [1] * 9}}))
    assert isinstance(refusal, SendFrame)
    assert isinstance(refusal.frame, SceneResponse)
    assert refusal.frame.body["error"] == "startSpeaking: field 'text' must be a string"


def test_user_text_over_the_limit_is_a_protocol_error() -> None:
    """userText over max_text_chars is not passed on: the client gets a protocolError."""
    session = established()
    [notice] = session.receive(UserText("b" * 51))
    assert isinstance(notice, SendFrame)
    assert isinstance(notice.frame, DpkitEvent)
    assert "max_text_chars" in notice.frame.body["message"]


def test_an_unusable_offer_is_reported_then_closed() -> None:
    """An offer that fails the SDP checks: a protocolError naming why, then close."""
    session = established()
    actions = session.receive(Offer(SDP.replace("a=ice-ufrag:", "a=x:")))
    first = actions[0]
    assert isinstance(first, SendFrame)
    assert isinstance(first.frame, DpkitEvent)
    assert "has no a=ice-ufrag" in first.frame.body["message"]
    assert closes_with(list(actions), "protocolError")
    assert session.phase is ServerPhase.CLOSED


@pytest.mark.parametrize(
    "ice",
    [
        Ice("candidate:1 2 3", "0", 0),
        Ice(CANDIDATE, None, None),
        Ice(CANDIDATE, "9", None),
        Ice("candidate:1 1 udp 1 127.0.0.1 70000 typ host", "0", 0),
    ],
    ids=["short", "no-mid-no-index", "unknown-mid", "port"],
)
def test_an_unusable_candidate_is_reported_then_closed(ice: Ice) -> None:
    """A malformed or unplaceable candidate: protocolError, then close {protocolError}."""
    session = starting()
    actions = session.receive(ice)
    assert closes_with(list(actions), "protocolError")


def test_a_candidate_without_mid_is_placed_by_its_index() -> None:
    """A candidate with only sdpMLineIndex goes to that section, named by its mid."""
    session = starting()
    assert session.receive(Ice(CANDIDATE, None, 1)) == [
        AddRemoteCandidate(Ice(CANDIDATE, "1", 1), check_candidate(CANDIDATE))
    ]


def test_client_logs_are_dropped_unless_asked_for(caplog: pytest.LogCaptureFixture) -> None:
    """With logToServer off, a diagnostics/log frame writes nothing to the server's log."""
    session = established(log_to_server=False)
    with caplog.at_level(logging.INFO, logger="dpkit.server"):
        session.receive(DiagnosticsLog("browser", ("secret stuff",) * 5))
    assert "secret stuff" not in caplog.text


def test_client_logs_are_escaped_capped_and_budgeted(caplog: pytest.LogCaptureFixture) -> None:
    """With logToServer on, lines are escaped (no forged lines), cut, and stop at the budget."""
    session = established(log_to_server=True)
    forged = "hello\n2026-12-01 12:00:00 ERROR dpkit.server: forged\x1b[31m"
    with caplog.at_level(logging.INFO, logger="dpkit.server"):
        session.receive(DiagnosticsLog("browser\n", (forged,)))
        for _ in range(20):
            session.receive(DiagnosticsLog("browser", ("x" * 40,)))
    messages = [record.getMessage() for record in caplog.records]
    assert all("\n" not in message and "\x1b" not in message for message in messages)
    assert "hello\\x0a2026-12-01 12:00:00 ERROR dpkit.server: forged\\x1b[31m" in caplog.text
    logged = sum(message.count("x" * 40) for message in messages)
    assert 0 < logged < 5  # 200 bytes of budget
    assert sum("client_log_max_bytes" in message for message in messages) == 1


def test_printable_cuts_and_escapes() -> None:
    """printable() escapes controls and separators and marks a cut line."""
    assert printable("a\tb\u2028c") == "a\\x09b\\u2028c"
    assert printable("y" * (CLIENT_LOG_LINE_CHARS + 1)).endswith("y...")


def test_a_client_that_keeps_breaking_the_protocol_is_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After MAX_VIOLATIONS notices the session closes; only the first few reach WARNING."""
    session = established()
    with caplog.at_level(logging.DEBUG, logger="dpkit.server"):
        for _ in range(MAX_VIOLATIONS - 1):
            assert session.receive_text("{") != []
            assert session.phase is ServerPhase.ESTABLISHED
        actions = session.receive_text("{")
    assert closes_with(list(actions), "protocolError")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == LOGGED_VIOLATIONS
