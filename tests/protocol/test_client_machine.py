"""The client session machine: every (phase, input) pair, and whole histories of actions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from dpkit.errors import (
    CONNECTION_ERRORS,
    ConnectionError_,
    InvalidStateError,
    MediaStreamFailed,
    NoScene,
    ProtocolError,
    ServerConnectionFailed,
    UnknownConnectionError,
)
from dpkit.protocol.actions import (
    Action,
    AddRemoteCandidate,
    ApplyAnswer,
    CloseSocket,
    ConnectFailed,
    ConnectSucceeded,
    CreatePeerConnection,
    DeliverFrame,
    SendFrame,
    SessionEnded,
    StateChanged,
)
from dpkit.protocol.client import (
    CLIENT_TRANSITIONS,
    FROM_SERVER,
    ClientInput,
    ClientPhase,
    ClientSession,
)
from dpkit.protocol.messages import (
    Accepted,
    Answer,
    Close,
    Connected,
    DpkitEvent,
    Established,
    Ice,
    IceServer,
    KeepAlive,
    Offer,
    SceneEvent,
    SessionSettings,
    UpdateOffer,
    VideoBounds,
)
from dpkit.protocol.states import ConnectionState, ConnectionStateData, ConnectionStateName

P = ClientPhase
I = ClientInput  # noqa: E741 - mirrors the module under test
N = ConnectionStateName

SID = "s1"
SDP = "v=0\r\n"
CANDIDATE = "candidate:1 1 udp 2113937151 192.0.2.1 54321 typ host"

# The connection state each live phase shows (docs/protocol.md section 5).
SHOWN = {
    P.IDLE: N.DISCONNECTED,
    P.SEARCHING: N.SEARCHING_FOR_DIGITAL_PERSON,
    P.DOWNLOADING: N.DOWNLOADING_ASSETS,
    P.CONNECTING: N.CONNECTING_TO_DIGITAL_PERSON,
    P.AWAITING_MEDIA: N.CONNECTING_TO_DIGITAL_PERSON,
    P.CONNECTED: N.CONNECTED,
}

Feed = Callable[[ClientSession], list[Action]]

# One representative payload per input.
FEED: dict[ClientInput, Feed] = {
    I.ESTABLISHED: lambda s: s.receive(Established()),
    I.ACCEPTED: lambda s: s.receive(Accepted(SID)),
    I.ANSWER: lambda s: s.receive(Answer(SDP)),
    I.ICE: lambda s: s.receive(Ice(CANDIDATE, "0", 0)),
    I.CONNECTED: lambda s: s.receive(Connected(SID)),
    I.CLOSE: lambda s: s.receive(Close("noScene")),
    I.OTHER_FRAME: lambda s: s.receive(SceneEvent("state", {})),
    I.MALFORMED: lambda s: s.receive_text("{not json"),
    I.SOCKET_OPENED: lambda s: s.socket_opened(),
    I.SOCKET_CLOSED: lambda s: s.socket_closed(),
    I.MEDIA_READY: lambda s: s.media_ready(),
    I.TRANSPORT_FAILED: lambda s: s.transport_failed(),
    I.CONTROL_LOST: lambda s: s.control_lost("controlDisconnected"),
    I.SEND: lambda s: s.send(KeepAlive()),
    I.DISCONNECT: lambda s: s.disconnect(),
}

# A legal path of inputs from a fresh session to each phase.
PATHS: dict[ClientPhase, list[ClientInput]] = {
    P.IDLE: [],
    P.SEARCHING: [I.SOCKET_OPENED],
    P.DOWNLOADING: [I.SOCKET_OPENED, I.ESTABLISHED],
    P.CONNECTING: [I.SOCKET_OPENED, I.ESTABLISHED, I.ACCEPTED],
    P.AWAITING_MEDIA: [I.SOCKET_OPENED, I.ESTABLISHED, I.ACCEPTED, I.CONNECTED],
    P.CONNECTED: [I.SOCKET_OPENED, I.ESTABLISHED, I.ACCEPTED, I.CONNECTED, I.MEDIA_READY],
    P.CLOSED: [I.SOCKET_OPENED, I.SOCKET_CLOSED],
}

ALL_PAIRS = [(phase, what) for phase in ClientPhase for what in ClientInput]


def drive(phase: ClientPhase, state: ConnectionState | None = None) -> ClientSession:
    """A session brought to ``phase`` through the legal path for it."""
    session = ClientSession(state)
    for what in PATHS[phase]:
        FEED[what](session)
    assert session.phase is phase
    return session


def run(session: ClientSession, *steps: Feed) -> list[Action]:
    """Every action of a sequence of inputs, in order."""
    return [action for step in steps for action in step(session)]


def states(actions: list[Action]) -> list[ConnectionStateData]:
    return [action.data for action in actions if isinstance(action, StateChanged)]


def sent(actions: list[Action]) -> list[object]:
    return [action.frame for action in actions if isinstance(action, SendFrame)]


def failure(actions: list[Action]) -> ConnectionError_:
    errors = [action.error for action in actions if isinstance(action, ConnectFailed)]
    assert len(errors) == 1, actions
    return errors[0]


def known_id(phase: ClientPhase) -> str | None:
    """The session id a session driven to ``phase`` knows (from `accepted`)."""
    return SID if phase in (P.CONNECTING, P.AWAITING_MEDIA, P.CONNECTED) else None


def connect(session: ClientSession) -> list[Action]:
    """The whole happy path, as the I/O layer drives it."""
    return run(
        session,
        lambda s: s.socket_opened(),
        lambda s: s.receive(Established()),
        lambda s: s.send(Offer(SDP)),
        lambda s: s.receive(Accepted(SID)),
        lambda s: s.receive(Answer(SDP)),
        lambda s: s.receive(Connected(SID)),
        lambda s: s.media_ready(),
    )


# --- every (phase, input) pair -----------------------------------------------------------------


def test_feed_and_paths_cover_everything() -> None:
    """The walk below has a payload for every input and a path to every phase."""
    assert set(FEED) == set(ClientInput)
    assert set(PATHS) == set(ClientPhase)


def test_table_names_only_known_phases_and_inputs() -> None:
    """Every table entry is a (phase, input) pair and leads to a phase or None."""
    for (phase, what), target in CLIENT_TRANSITIONS.items():
        assert isinstance(phase, ClientPhase)
        assert isinstance(what, ClientInput)
        assert target is None or isinstance(target, ClientPhase)


@pytest.mark.parametrize(("phase", "what"), ALL_PAIRS, ids=lambda v: str(v.value))
def test_every_phase_input_pair(phase: ClientPhase, what: ClientInput) -> None:
    """Each pair follows the table; a pair not in it is a server violation or a misuse."""
    session = drive(phase)
    before = session.state.name
    if (phase, what) in CLIENT_TRANSITIONS:
        target = CLIENT_TRANSITIONS[(phase, what)]
        actions = FEED[what](session)
        assert session.phase is (target or phase)
    elif what in FROM_SERVER:
        actions = FEED[what](session)
        if phase in (P.CONNECTED, P.CLOSED):
            assert actions == []
            assert session.phase is phase
        else:
            assert actions[:2] == [SendFrame(Close("normal", known_id(phase))), CloseSocket()]
            error = failure(actions)
            assert isinstance(error, ServerConnectionFailed)
            assert f"unexpected {what.value} while {phase.value}" in error.message
            assert session.phase is P.CLOSED
    else:
        with pytest.raises(InvalidStateError, match=f"session is {phase.value}"):
            FEED[what](session)
        assert session.phase is phase
        assert session.state.name is before
        return

    # The state shown follows the phase; a failure leaves it, an ending after connect resets it.
    if session.phase in SHOWN:
        after = SHOWN[session.phase]
    elif phase is P.CONNECTED or (what is I.DISCONNECT and phase is not P.CLOSED):
        after = N.DISCONNECTED
    else:
        after = before
    assert session.state.name is after
    expected = [] if after is before else [ConnectionStateData.of(after)]
    assert states(actions) == expected
    if phase is P.CLOSED:
        assert actions == []


@pytest.mark.parametrize(("phase", "what"), ALL_PAIRS, ids=lambda v: str(v.value))
def test_every_pair_settles_connect_at_most_once(phase: ClientPhase, what: ClientInput) -> None:
    """Across a path and one more input, connect() resolves or fails at most once in all."""
    session = ClientSession()
    history: list[Action] = []
    for step in PATHS[phase]:
        history += FEED[step](session)
    with contextlib.suppress(InvalidStateError):
        history += FEED[what](session)
    outcomes = [a for a in history if isinstance(a, ConnectSucceeded | ConnectFailed)]
    assert len(outcomes) <= 1
    ended = [a for a in history if isinstance(a, SessionEnded)]
    assert len(ended) <= 1
    if ended:
        assert outcomes == [ConnectSucceeded(SID)]


# --- connected and media ready, in either order ------------------------------------------------


def test_connected_then_media_ready() -> None:
    """`connected` first waits in AWAITING_MEDIA; media ready then completes the connect."""
    session = drive(P.CONNECTING)
    assert session.receive(Connected(SID)) == []
    assert (session.phase, session.state.name) == (P.AWAITING_MEDIA, N.CONNECTING_TO_DIGITAL_PERSON)
    assert session.media_ready() == [
        StateChanged(ConnectionStateData.of(N.CONNECTED)),
        ConnectSucceeded(SID),
    ]
    assert (session.phase, session.state.name) == (P.CONNECTED, N.CONNECTED)


@pytest.mark.parametrize("phase", [P.DOWNLOADING, P.CONNECTING])
def test_media_ready_then_connected(phase: ClientPhase) -> None:
    """Media ready before `connected` makes `connected` go straight on to CONNECTED."""
    session = drive(phase)
    assert session.media_ready() == []
    assert session.phase is phase
    if phase is P.DOWNLOADING:
        session.receive(Accepted(SID))
    assert session.receive(Connected(SID)) == [
        StateChanged(ConnectionStateData.of(N.CONNECTED)),
        ConnectSucceeded(SID),
    ]
    assert session.phase is P.CONNECTED


def test_media_ready_again_after_connected_does_nothing() -> None:
    """A second media-ready once connected neither changes state nor resolves again."""
    session = drive(P.CONNECTED)
    assert session.media_ready() == []
    assert session.phase is P.CONNECTED


# --- whole histories ---------------------------------------------------------------------------


def test_happy_path_state_history() -> None:
    """A connect shows Searching 25, Downloading 50, Connecting 75, Connected 100, in order."""
    actions = connect(ClientSession())
    assert [
        (d.name, d.current_step, d.total_steps, d.percentage_loaded) for d in states(actions)
    ] == [
        (N.SEARCHING_FOR_DIGITAL_PERSON, 1, 5, 25.0),
        (N.DOWNLOADING_ASSETS, 2, 5, 50.0),
        (N.CONNECTING_TO_DIGITAL_PERSON, 3, 5, 75.0),
        (N.CONNECTED, 4, 5, 100.0),
    ]


def test_happy_path_whole_action_list() -> None:
    """The happy path's actions, in order, are exactly the protocol page's sequence."""
    servers = (IceServer(("stun:s.example:3478",)),)
    settings = SessionSettings(1500, True)
    session = ClientSession()
    actions = run(
        session,
        lambda s: s.socket_opened(),
        lambda s: s.receive(Established(servers, settings)),
        lambda s: s.send(Offer(SDP)),
        lambda s: s.send(Ice(CANDIDATE, "0", 0)),
        lambda s: s.receive(Accepted(SID, scene_id="scene-1")),
        lambda s: s.receive(Answer("answer-sdp")),
        lambda s: s.receive(Ice(CANDIDATE, "1", 1)),
        lambda s: s.receive(Connected(SID)),
        lambda s: s.media_ready(),
        lambda s: s.send(VideoBounds(640, 480)),
        lambda s: s.receive(SceneEvent("state", {"x": 1})),
    )
    assert actions == [
        StateChanged(ConnectionStateData.of(N.SEARCHING_FOR_DIGITAL_PERSON)),
        StateChanged(ConnectionStateData.of(N.DOWNLOADING_ASSETS)),
        CreatePeerConnection(servers, settings, None),
        SendFrame(Offer(SDP)),
        StateChanged(ConnectionStateData.of(N.CONNECTING_TO_DIGITAL_PERSON)),
        SendFrame(Ice(CANDIDATE, "0", 0, session_id=SID)),
        ApplyAnswer("answer-sdp"),
        AddRemoteCandidate(Ice(CANDIDATE, "1", 1)),
        StateChanged(ConnectionStateData.of(N.CONNECTED)),
        ConnectSucceeded(SID),
        SendFrame(VideoBounds(640, 480, SID)),
        DeliverFrame(SceneEvent("state", {"x": 1})),
    ]
    assert session.accepted == Accepted(SID, scene_id="scene-1")
    assert session.established == Established(servers, settings)


def test_connect_resolves_with_connected_session_id() -> None:
    """ConnectSucceeded carries the session id that `connected` names."""
    session = drive(P.CONNECTING)
    actions = run(
        session, lambda s: s.receive(Connected("from-connected")), lambda s: s.media_ready()
    )
    assert [a for a in actions if isinstance(a, ConnectSucceeded)] == [
        ConnectSucceeded("from-connected")
    ]
    assert session.session_id == "from-connected"


def test_frames_before_accepted_are_queued_then_flushed_with_session_id() -> None:
    """Before `accepted` only `offer` goes out; the rest go out, stamped, right after it."""
    session = drive(P.DOWNLOADING)
    assert session.send(Offer(SDP)) == [SendFrame(Offer(SDP))]
    assert session.send(Ice(CANDIDATE, "0", 0)) == []
    assert session.send(Ice("", "", 0, complete=True)) == []
    assert session.send(VideoBounds(640, 480)) == []
    assert session.receive(Accepted(SID)) == [
        StateChanged(ConnectionStateData.of(N.CONNECTING_TO_DIGITAL_PERSON)),
        SendFrame(Ice(CANDIDATE, "0", 0, session_id=SID)),
        SendFrame(Ice("", "", 0, complete=True, session_id=SID)),
        SendFrame(VideoBounds(640, 480, SID)),
    ]
    assert session.send(KeepAlive()) == [SendFrame(KeepAlive(SID))]


def test_frames_queued_from_idle_and_searching_are_flushed_too() -> None:
    """Events sent before the socket opened or before `established` wait for `accepted` too."""
    session = ClientSession()
    assert session.send(KeepAlive()) == []
    session.socket_opened()
    assert session.send(VideoBounds(1, 2)) == []
    session.receive(Established())
    assert sent(session.receive(Accepted(SID))) == [KeepAlive(SID), VideoBounds(1, 2, SID)]


def test_resume_stamps_update_offer_with_resumed_session_id() -> None:
    """`established {resumeSessionId}` gives the id that the updateOffer then carries."""
    session = drive(P.SEARCHING)
    actions = session.receive(Established(resume_session_id="s-old"))
    assert CreatePeerConnection((), SessionSettings(), "s-old") in actions
    assert session.send(UpdateOffer(SDP)) == [SendFrame(UpdateOffer(SDP, session_id="s-old"))]


@pytest.mark.parametrize("phase", [P.SEARCHING, P.DOWNLOADING, P.CONNECTING, P.AWAITING_MEDIA])
@pytest.mark.parametrize("reason", [*CONNECTION_ERRORS, "somethingNew"])
def test_close_before_connected_fails_connect(phase: ClientPhase, reason: str) -> None:
    """`close {reason}` before connected fails connect() with error name = reason."""
    session = drive(phase)
    shown = session.state.data
    actions = session.receive(Close(reason))
    error = failure(actions)
    assert actions == [CloseSocket(), ConnectFailed(error)]
    assert error.name == reason
    assert error.message == f"websocket closed: {reason}"
    expected_type = CONNECTION_ERRORS.get(reason, UnknownConnectionError)
    assert type(error) is expected_type
    assert session.phase is P.CLOSED
    assert session.state.data == shown


def test_close_no_scene_before_connected() -> None:
    """`close {reason: noScene}` fails connect with a retryable NoScene; state stays Searching."""
    session = drive(P.SEARCHING)
    actions = session.receive(Close("noScene"))
    error = failure(actions)
    assert isinstance(error, NoScene)
    assert error.name == "noScene"
    assert error.retryable
    assert error.message == "websocket closed: noScene"
    assert session.state.name is N.SEARCHING_FOR_DIGITAL_PERSON
    assert states(actions) == []


@pytest.mark.parametrize("reason", ["sessionTimeout", "conversationEnded", "normal"])
def test_close_after_connected_ends_session_and_resets(reason: str) -> None:
    """`close` after connected ends the session with its reason and resets to Disconnected."""
    session = drive(P.CONNECTED)
    assert session.receive(Close(reason)) == [
        CloseSocket(),
        StateChanged(ConnectionStateData.of(N.DISCONNECTED)),
        SessionEnded(SID, reason),
    ]
    assert session.phase is P.CLOSED
    assert session.state.name is N.DISCONNECTED


def test_disconnect_after_connected() -> None:
    """disconnect() sends `close {reason: normal, sessionId}` and resets the state."""
    session = drive(P.CONNECTED)
    assert session.disconnect() == [
        SendFrame(Close("normal", SID)),
        CloseSocket(),
        StateChanged(ConnectionStateData.of(N.DISCONNECTED)),
        SessionEnded(SID, "normal"),
    ]
    assert session.phase is P.CLOSED
    assert session.state.name is N.DISCONNECTED
    assert session.disconnect() == []


@pytest.mark.parametrize("phase", [P.SEARCHING, P.DOWNLOADING, P.CONNECTING, P.AWAITING_MEDIA])
def test_disconnect_during_connect(phase: ClientPhase) -> None:
    """disconnect() while connecting sends `close normal`, resets and fails the connect."""
    session = drive(phase)
    actions = session.disconnect()
    error = failure(actions)
    assert actions == [
        SendFrame(Close("normal", known_id(phase))),
        CloseSocket(),
        StateChanged(ConnectionStateData.of(N.DISCONNECTED)),
        ConnectFailed(error),
    ]
    assert error.name == "normal"
    assert session.state.name is N.DISCONNECTED


def test_disconnect_before_socket_opened() -> None:
    """disconnect() before the socket opened sends nothing, closes and fails the connect."""
    session = ClientSession()
    actions = session.disconnect()
    assert actions == [CloseSocket(), ConnectFailed(failure(actions))]
    assert session.phase is P.CLOSED


@pytest.mark.parametrize("phase", [P.SEARCHING, P.DOWNLOADING, P.CONNECTING, P.AWAITING_MEDIA])
def test_malformed_frame_before_connected_fails_connect(phase: ClientPhase) -> None:
    """A malformed frame before connected fails with serverConnectionFailed from a ProtocolError."""
    session = drive(phase)
    shown = session.state.data
    actions = session.receive_text('{"category": "webrtc", "name": "accepted", "body": {}}')
    error = failure(actions)
    assert actions[:2] == [SendFrame(Close("normal", known_id(phase))), CloseSocket()]
    assert error.name == "serverConnectionFailed"
    assert isinstance(error.__cause__, ProtocolError)
    assert "'sessionId'" in error.message
    assert session.phase is P.CLOSED
    assert session.state.data == shown


def test_malformed_frame_after_connected_is_ignored() -> None:
    """A malformed frame after connected is dropped and the session goes on."""
    session = drive(P.CONNECTED)
    assert session.receive_text("[1, 2") == []
    assert session.receive_text(b"\xff") == []
    assert session.phase is P.CONNECTED
    assert session.state.name is N.CONNECTED


@pytest.mark.parametrize("phase", [P.DOWNLOADING, P.CONNECTING, P.AWAITING_MEDIA])
def test_transport_failure_before_connected(phase: ClientPhase) -> None:
    """ICE/DTLS failure before connected fails connect() with mediaStreamFailed."""
    session = drive(phase)
    shown = session.state.data
    actions = session.transport_failed()
    error = failure(actions)
    assert actions == [
        SendFrame(Close("normal", known_id(phase))),
        CloseSocket(),
        ConnectFailed(error),
    ]
    assert isinstance(error, MediaStreamFailed)
    assert error.name == "mediaStreamFailed"
    assert session.state.data == shown


def test_transport_failure_after_connected() -> None:
    """ICE/DTLS failure after connected closes the session with reason mediaStreamFailed."""
    session = drive(P.CONNECTED)
    assert session.transport_failed() == [
        SendFrame(Close("normal", SID)),
        CloseSocket(),
        StateChanged(ConnectionStateData.of(N.DISCONNECTED)),
        SessionEnded(SID, "mediaStreamFailed"),
    ]


@pytest.mark.parametrize(
    "phase", [P.IDLE, P.SEARCHING, P.DOWNLOADING, P.CONNECTING, P.AWAITING_MEDIA]
)
def test_bare_socket_close_before_connected(phase: ClientPhase) -> None:
    """A socket closing without `close` before connected fails with serverConnectionFailed."""
    session = drive(phase)
    shown = session.state.data
    actions = session.socket_closed()
    error = failure(actions)
    assert actions == [ConnectFailed(error)]
    assert error.name == "serverConnectionFailed"
    assert session.state.data == shown


def test_bare_socket_close_after_connected() -> None:
    """A socket closing without `close` after connected ends the session: connectionLost."""
    session = drive(P.CONNECTED)
    assert session.socket_closed() == [
        StateChanged(ConnectionStateData.of(N.DISCONNECTED)),
        SessionEnded(SID, "connectionLost"),
    ]


def test_violation_before_connected_fails_connect() -> None:
    """`connected` while still searching fails connect() with serverConnectionFailed."""
    session = drive(P.SEARCHING)
    actions = session.receive(Connected(SID))
    error = failure(actions)
    assert actions == [SendFrame(Close("normal")), CloseSocket(), ConnectFailed(error)]
    assert error.message == "the server broke the protocol: unexpected connected while searching"


def test_other_frames_are_delivered() -> None:
    """Scene and dpkit frames are handed to the application in every live phase."""
    for phase in (P.SEARCHING, P.DOWNLOADING, P.CONNECTING, P.AWAITING_MEDIA, P.CONNECTED):
        session = drive(phase)
        frame = DpkitEvent("queue", {"position": 1})
        assert session.receive(frame) == [DeliverFrame(frame)]


def test_send_after_closed_is_a_misuse() -> None:
    """send() after the session closed raises InvalidStateError naming the phase."""
    session = drive(P.CLOSED)
    with pytest.raises(InvalidStateError, match="cannot send: session is closed"):
        session.send(KeepAlive())


def test_retry_shares_state_without_repeating_searching() -> None:
    """A retry on the same ConnectionState does not report Searching a second time."""
    state = ConnectionState()
    first = ClientSession(state)
    history = run(first, lambda s: s.socket_opened(), lambda s: s.receive(Close("noScene")))
    assert failure(history).name == "noScene"
    second = ClientSession(state)
    history += connect(second)
    assert [data.name for data in states(history)] == [
        N.SEARCHING_FOR_DIGITAL_PERSON,
        N.DOWNLOADING_ASSETS,
        N.CONNECTING_TO_DIGITAL_PERSON,
        N.CONNECTED,
    ]
    assert second.state is first.state


def test_reconnect_after_session_ended_starts_from_disconnected() -> None:
    """After a session ends, the next connect on the same state reports every step again."""
    state = ConnectionState()
    session = ClientSession(state)
    history = connect(session)
    history += session.disconnect()
    session = ClientSession(state)
    history += connect(session)
    history += session.receive(Close("sessionTimeout"))
    history += connect(ClientSession(state))
    steps = [
        N.SEARCHING_FOR_DIGITAL_PERSON,
        N.DOWNLOADING_ASSETS,
        N.CONNECTING_TO_DIGITAL_PERSON,
        N.CONNECTED,
    ]
    assert [data.name for data in states(history)] == [
        *steps,
        N.DISCONNECTED,
        *steps,
        N.DISCONNECTED,
        *steps,
    ]
