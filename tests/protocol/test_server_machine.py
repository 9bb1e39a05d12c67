"""The server session machine: every (phase, input) pair, and whole histories of frames."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from dpkit.errors import InvalidStateError
from dpkit.protocol.actions import (
    Action,
    AddRemoteCandidate,
    AnswerSceneRequest,
    ClientEvent,
    CloseSocket,
    OrchestrationEvent,
    ReleaseSession,
    SendFrame,
    StartSession,
)
from dpkit.protocol.limits import SessionLimits
from dpkit.protocol.messages import (
    Accepted,
    Answer,
    Close,
    Connected,
    DiagnosticsLog,
    DpkitEvent,
    Established,
    Frame,
    Ice,
    IceServer,
    KeepAlive,
    Offer,
    SceneEvent,
    SceneRequest,
    SceneResponse,
    SessionSettings,
    Ui,
    UnknownFrame,
    UpdateOffer,
    UserCamera,
    UserText,
    VideoBounds,
    VideoStarted,
    WebRtcEvent,
    serialize_frame,
)
from dpkit.protocol.sdp import check_candidate
from dpkit.protocol.server import (
    FROM_CLIENT,
    SERVER_TRANSITIONS,
    ServerInput,
    ServerPhase,
    ServerSession,
)

P = ServerPhase
I = ServerInput  # noqa: E741 - mirrors the module under test

SID = "s1"
SDP = (Path(__file__).parent / "offers" / "aiortc-1.16-two-sections.sdp").read_bytes().decode()
ANSWER_SDP = "v=0\r\na=msid:persona audio\r\n"
CANDIDATE = "candidate:1 1 udp 2113937151 abc.local 54321 typ host"
LIVE = [P.OPENED, P.ESTABLISHED, P.STARTING, P.ACCEPTED, P.CONNECTED]
REQUEST = SceneRequest("conversationSend", "scene-1_1", {"personaId": "1", "text": "hi"})

Feed = Callable[[ServerSession], list[Action]]

# One representative payload per input.
FEED: dict[ServerInput, Feed] = {
    I.OFFER: lambda s: s.receive(Offer(SDP)),
    I.ICE: lambda s: s.receive(Ice(CANDIDATE, "0", 0, session_id=SID)),
    I.CLIENT_EVENT: lambda s: s.receive(KeepAlive(SID)),
    I.SCENE_REQUEST: lambda s: s.receive(REQUEST),
    I.ORCHESTRATION: lambda s: s.receive(SceneEvent("conversationResponse", {})),
    I.CLIENT_CLOSE: lambda s: s.receive(Close("normal", SID)),
    I.IGNORED_FRAME: lambda s: s.receive(UnknownFrame("future", "event", "thing", {})),
    I.SERVER_FRAME: lambda s: s.receive(Connected(SID)),
    I.MALFORMED: lambda s: s.receive_text("{oops"),
    I.OVERSIZED: lambda s: s.receive_text(" " * (SessionLimits().max_frame_bytes + 1)),
    I.PERSONA_ASSIGNED: lambda s: s.persona_assigned(),
    I.SESSION_STARTED: lambda s: s.session_started(Accepted(SID), ANSWER_SDP),
    I.TRANSPORT_CONNECTED: lambda s: s.transport_connected(),
    I.TRANSPORT_FAILED: lambda s: s.transport_failed(),
    I.END: lambda s: s.end("sessionTimeout"),
    I.SOCKET_CLOSED: lambda s: s.socket_closed(),
    I.HANDED_OVER: lambda s: s.handed_over(),
}

# A legal path of inputs from a fresh session to each phase.
PATHS: dict[ServerPhase, list[ServerInput]] = {
    P.OPENED: [],
    P.ESTABLISHED: [I.PERSONA_ASSIGNED],
    P.STARTING: [I.PERSONA_ASSIGNED, I.OFFER],
    P.ACCEPTED: [I.PERSONA_ASSIGNED, I.OFFER, I.SESSION_STARTED],
    P.CONNECTED: [I.PERSONA_ASSIGNED, I.OFFER, I.SESSION_STARTED, I.TRANSPORT_CONNECTED],
    P.CLOSED: [I.PERSONA_ASSIGNED, I.SOCKET_CLOSED],
}

ALL_PAIRS = [(phase, what) for phase in ServerPhase for what in ServerInput]


def drive(phase: ServerPhase) -> tuple[ServerSession, list[Action]]:
    """A session brought to ``phase`` through the legal path for it, and the actions on the way."""
    session = ServerSession()
    history: list[Action] = []
    for what in PATHS[phase]:
        history += FEED[what](session)
    assert session.phase is phase
    return session, history


def sent(actions: list[Action]) -> list[Frame]:
    return [action.frame for action in actions if isinstance(action, SendFrame)]


def protocol_error(message: str) -> list[Action]:
    return [SendFrame(DpkitEvent("protocolError", {"message": message}))]


def is_notice(frame: Frame) -> bool:
    return isinstance(frame, DpkitEvent) and frame.name == "protocolError"


# --- every (phase, input) pair -----------------------------------------------------------------


def test_feed_and_paths_cover_everything() -> None:
    """The walk below has a payload for every input and a path to every phase."""
    assert set(FEED) == set(ServerInput)
    assert set(PATHS) == set(ServerPhase)


@pytest.mark.parametrize(("phase", "what"), ALL_PAIRS, ids=lambda v: str(v.value))
def test_every_phase_input_pair(phase: ServerPhase, what: ServerInput) -> None:
    """Each pair follows the table; a client frame not in it is a protocolError notice."""
    session, history = drive(phase)
    if (phase, what) in SERVER_TRANSITIONS:
        target = SERVER_TRANSITIONS[(phase, what)]
        actions = FEED[what](session)
        assert session.phase is (target or phase)
        if phase is P.CLOSED:
            assert actions == []
    elif what in FROM_CLIENT:
        actions = FEED[what](session)
        assert actions == protocol_error(f"unexpected {what.value} while {phase.value}")
        assert session.phase is phase
    else:
        with pytest.raises(InvalidStateError, match=f"session is {phase.value}"):
            FEED[what](session)
        assert session.phase is phase
        return

    history += actions
    frames = [f for f in sent(history) if not is_notice(f)]
    # `established` comes before every other session frame; only a close may come without it.
    if frames and not isinstance(frames[0], Close):
        assert isinstance(frames[0], Established)
    # `connected` only ever comes from transport_connected.
    if any(isinstance(f, Connected) for f in sent(actions)):
        assert what is I.TRANSPORT_CONNECTED
    # A socket the server closes always gets `close {reason}` first; a client close needs none.
    if CloseSocket() in actions and what is not I.CLIENT_CLOSE:
        index = actions.index(CloseSocket())
        assert index > 0
        previous = actions[index - 1]
        assert isinstance(previous, SendFrame)
        assert isinstance(previous.frame, Close)
    # Whatever ends a live session releases it exactly once.
    if session.phase is P.CLOSED and phase is not P.CLOSED:
        assert [a for a in actions if isinstance(a, ReleaseSession)] == [
            ReleaseSession(session.ending or "")
        ]


@pytest.mark.parametrize("phase", LIVE)
def test_malformed_frame_is_a_notice_in_every_live_phase(phase: ServerPhase) -> None:
    """A malformed client frame gets a protocolError naming the problem; the session goes on."""
    session, _ = drive(phase)
    assert session.receive_text("[1]") == protocol_error("frame must be a JSON object, got list")
    assert session.receive_text(b"\xff") == protocol_error("frame is not UTF-8 text")
    assert session.phase is phase


# --- whole histories ---------------------------------------------------------------------------


def test_happy_path_frames_in_order() -> None:
    """On a happy path the server sends established, accepted, answer, connected, in order."""
    servers = (IceServer(("turn:t.example",), "u", "c"),)
    settings = SessionSettings(1000, True)
    accepted = Accepted(SID, True, "node-a", "scene-1")
    session = ServerSession()
    history: list[Action] = []
    history += session.persona_assigned(servers, settings)
    history += session.receive(Offer(SDP))
    history += session.receive(VideoBounds(640, 480, SID))
    history += session.session_started(accepted, ANSWER_SDP)
    history += session.receive(Ice(CANDIDATE, "0", 0, session_id=SID))
    history += session.receive(Ice("", "", 0, complete=True, session_id=SID))
    history += session.transport_connected()
    history += session.receive(UserCamera(True, session_id=SID))
    history += session.receive(VideoStarted(SID))
    assert history == [
        SendFrame(Established(servers, settings)),
        StartSession(Offer(SDP)),
        ClientEvent(VideoBounds(640, 480, SID)),
        SendFrame(accepted),
        SendFrame(Answer(ANSWER_SDP)),
        AddRemoteCandidate(Ice(CANDIDATE, "0", 0, session_id=SID), check_candidate(CANDIDATE)),
        AddRemoteCandidate(Ice("", "", 0, complete=True, session_id=SID)),
        SendFrame(Connected(SID)),
        ClientEvent(UserCamera(True, session_id=SID)),
        ClientEvent(VideoStarted(SID)),
    ]
    names = [json.loads(serialize_frame(frame))["name"] for frame in sent(history)]
    assert names == ["established", "accepted", "answer", "connected"]
    assert session.phase is P.CONNECTED
    assert session.session_id == SID
    assert session.offer == Offer(SDP)


def test_connected_only_after_transport_connected() -> None:
    """`connected` is not sent by session_started; transport_connected sends it, once."""
    session, history = drive(P.ACCEPTED)
    assert not any(isinstance(f, Connected) for f in sent(history))
    assert session.transport_connected() == [SendFrame(Connected(SID))]
    with pytest.raises(InvalidStateError, match="session is connected"):
        session.transport_connected()


@pytest.mark.parametrize("phase", [P.OPENED, P.ESTABLISHED, P.STARTING])
def test_transport_connected_too_early_is_a_misuse(phase: ServerPhase) -> None:
    """transport_connected before `accepted` was sent raises InvalidStateError."""
    session, _ = drive(phase)
    with pytest.raises(
        InvalidStateError, match=f"cannot transport connected: session is {phase.value}"
    ):
        session.transport_connected()


@pytest.mark.parametrize("phase", LIVE)
@pytest.mark.parametrize("reason", ["noScene", "sessionTimeout", "conversationEnded", "normal"])
def test_end_sends_close_before_closing(phase: ServerPhase, reason: str) -> None:
    """end(reason) in every live phase sends `close {reason}`, closes, and releases."""
    session, _ = drive(phase)
    assert session.end(reason) == [
        SendFrame(Close(reason)),
        CloseSocket(),
        ReleaseSession(reason),
    ]
    assert session.phase is P.CLOSED
    assert session.ending == reason


@pytest.mark.parametrize("phase", [P.ACCEPTED, P.CONNECTED])
def test_transport_failure_sends_close_media_stream_failed(phase: ServerPhase) -> None:
    """A failed transport sends `close {reason: mediaStreamFailed}` before closing."""
    session, _ = drive(phase)
    assert session.transport_failed() == [
        SendFrame(Close("mediaStreamFailed")),
        CloseSocket(),
        ReleaseSession("mediaStreamFailed"),
    ]
    assert session.ending == "mediaStreamFailed"


@pytest.mark.parametrize("phase", LIVE)
@pytest.mark.parametrize("reason", ["normal", "somethingElse"])
def test_client_close_releases_without_close_frame(phase: ServerPhase, reason: str) -> None:
    """A client `close` releases the session as "normal" and sends no close frame back."""
    session, _ = drive(phase)
    assert session.receive(Close(reason, SID)) == [CloseSocket(), ReleaseSession("normal")]
    assert session.ending == "normal"
    assert session.phase is P.CLOSED


@pytest.mark.parametrize("phase", LIVE)
def test_socket_closed_is_connection_lost(phase: ServerPhase) -> None:
    """A socket that drops without `close` releases the session as connectionLost."""
    session, _ = drive(phase)
    assert session.socket_closed() == [ReleaseSession("connectionLost")]
    assert session.ending == "connectionLost"
    assert session.phase is P.CLOSED


@pytest.mark.parametrize("what", list(ServerInput))
def test_everything_after_the_end_is_dropped(what: ServerInput) -> None:
    """Once closed, every input is dropped: no frame, no second release, no error."""
    session, _ = drive(P.CONNECTED)
    session.end("normal")
    assert FEED[what](session) == []
    assert session.ending == "normal"


@pytest.mark.parametrize("phase", LIVE)
def test_every_scene_request_is_answered(phase: ServerPhase) -> None:
    """Every scene request yields AnswerSceneRequest, in every live phase."""
    session, _ = drive(phase)
    for request in (REQUEST, SceneRequest("stopSpeaking", "scene-1_2"), SceneRequest("x", "t")):
        assert session.receive(request) == [AnswerSceneRequest(request)]
    assert session.phase is phase


CLIENT_EVENTS: list[WebRtcEvent] = [
    VideoBounds(640, 480, SID),
    UserCamera(False, 90, SID),
    VideoStarted(SID),
    KeepAlive(SID),
    Ui(False, SID),
    UserText("hello", SID),
]


@pytest.mark.parametrize("phase", LIVE)
@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=lambda e: e.NAME)
def test_client_events_reach_the_server(phase: ServerPhase, event: WebRtcEvent) -> None:
    """Informational client events become ClientEvent actions in every live phase."""
    session, _ = drive(phase)
    assert session.receive(event) == [ClientEvent(event)]
    assert session.phase is phase


@pytest.mark.parametrize("phase", LIVE)
def test_diagnostics_log_is_only_logged(phase: ServerPhase) -> None:
    """Client log lines are logged by the server and produce no action."""
    session, _ = drive(phase)
    assert session.receive(DiagnosticsLog("browser", ("a", "b"))) == []


@pytest.mark.parametrize("phase", LIVE)
@pytest.mark.parametrize(
    "frame",
    [
        UnknownFrame("orchestration", "event", "x", {}),
        SceneEvent("state", {}),
        SceneResponse("getState", "t", 0),
        DpkitEvent("hello", {}),
    ],
    ids=repr,
)
def test_frames_the_server_does_not_act_on_are_ignored(phase: ServerPhase, frame: Frame) -> None:
    """Unknown frames, scene events and responses from a client are ignored silently."""
    session, _ = drive(phase)
    assert session.receive(frame) == []
    assert session.phase is phase


@pytest.mark.parametrize("phase", LIVE)
@pytest.mark.parametrize(
    "frame",
    [Established(), Accepted(SID), Answer(SDP), Connected(SID)],
    ids=lambda f: f.NAME,
)
def test_server_only_frames_from_client_are_violations(
    phase: ServerPhase, frame: WebRtcEvent
) -> None:
    """established/accepted/answer/connected from a client get a protocolError notice."""
    session, _ = drive(phase)
    assert session.receive(frame) == protocol_error(
        f"unexpected server-only frame while {phase.value}"
    )
    assert session.phase is phase


@pytest.mark.parametrize("phase", [P.OPENED, P.STARTING, P.ACCEPTED, P.CONNECTED])
def test_offer_outside_established_is_a_violation(phase: ServerPhase) -> None:
    """An offer before `established` or a second offer gets a protocolError notice."""
    session, _ = drive(phase)
    assert session.receive(Offer(SDP)) == protocol_error(f"unexpected offer while {phase.value}")
    assert session.phase is phase


@pytest.mark.parametrize("phase", [P.OPENED, P.ESTABLISHED])
def test_ice_before_offer_is_a_violation(phase: ServerPhase) -> None:
    """A candidate before the offer gets a protocolError notice."""
    session, _ = drive(phase)
    assert session.receive(Ice(CANDIDATE)) == protocol_error(f"unexpected ice while {phase.value}")


def test_resume_with_matching_update_offer() -> None:
    """`established {resumeSessionId}` then an updateOffer for that session starts it."""
    session = ServerSession()
    assert session.persona_assigned(resume_session_id="s-old") == [
        SendFrame(Established(resume_session_id="s-old"))
    ]
    offer = UpdateOffer(SDP, session_id="s-old")
    assert session.receive(offer) == [StartSession(offer)]
    assert session.phase is P.STARTING
    assert session.offer == offer


def test_update_offer_for_another_session_is_a_violation() -> None:
    """An updateOffer for a different session than the resumed one is a protocolError notice."""
    session = ServerSession()
    session.persona_assigned(resume_session_id="s-old")
    assert session.receive(UpdateOffer(SDP, session_id="s-other")) == protocol_error(
        "updateOffer for session s-other, but this socket resumes s-old"
    )
    assert session.phase is P.ESTABLISHED
    assert session.offer is None
    offer = UpdateOffer(SDP, session_id="s-old")
    assert session.receive(offer) == [StartSession(offer)]


def test_update_offer_without_resume_is_a_violation() -> None:
    """An updateOffer on a socket that resumes nothing is a protocolError notice."""
    session, _ = drive(P.ESTABLISHED)
    assert session.receive(UpdateOffer(SDP, session_id="s-x")) == protocol_error(
        "updateOffer for session s-x, but this socket resumes None"
    )
    assert session.phase is P.ESTABLISHED


@pytest.mark.parametrize(
    ("phase", "what"),
    [
        (P.ESTABLISHED, I.PERSONA_ASSIGNED),
        (P.OPENED, I.SESSION_STARTED),
        (P.CONNECTED, I.SESSION_STARTED),
        (P.OPENED, I.TRANSPORT_FAILED),
    ],
    ids=str,
)
def test_local_misuse_names_the_phase(phase: ServerPhase, what: ServerInput) -> None:
    """A local call the table does not allow raises InvalidStateError naming input and phase."""
    session, _ = drive(phase)
    with pytest.raises(InvalidStateError) as caught:
        FEED[what](session)
    assert caught.value.message == f"cannot {what.value}: session is {phase.value}"


@pytest.mark.parametrize("name", ["conversationResponse", "endConversation"])
def test_orchestration_events_reach_the_server_once_accepted(name: str) -> None:
    """The orchestrator's answers, relayed by the client, become OrchestrationEvent actions."""
    session, _ = drive(ServerPhase.CONNECTED)
    event = SceneEvent(name, {"output": {"text": "hi"}})
    assert session.receive(event) == [OrchestrationEvent(event)]
