"""What fuzzing found in the protocol core, pinned; and the server machine under hostile frames."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from dpkit.errors import ProtocolError
from dpkit.protocol.actions import AnswerSceneRequest, SendFrame
from dpkit.protocol.messages import (
    MAX_NESTING,
    Accepted,
    DpkitEvent,
    SceneRequest,
    SceneResponse,
    parse_frame,
)
from dpkit.protocol.server import ServerPhase, ServerSession
from tests.fuzzing import FrameGenerator, encode, envelope, nested_text

SEED = 20_240_611


def _in_frames(nested: str) -> list[str]:
    """``nested`` JSON as a dpkit body, as scene variables and as a client log's text."""
    return [
        '{"category":"dpkit","kind":"event","name":"x","body":{"a":' + nested + "}}",
        '{"category":"scene","kind":"request","name":"conversationSend","transaction":"t",'
        '"body":{"text":"hi","variables":' + nested + "}}",
        '{"category":"diagnostics","kind":"event","name":"log","body":{"text":' + nested + "}}",
    ]


def _at_stack_depth(depth: int, call: Callable[[], Any]) -> Any:
    return call() if depth == 0 else _at_stack_depth(depth - 1, call)


def test_frames_nested_past_the_limit_are_refused_however_deep_the_caller() -> None:
    """Past MAX_NESTING a frame is a ProtocolError naming the limit, never a RecursionError."""
    for depth in (MAX_NESTING, *range(850, 1000)):
        for text in _in_frames(nested_text(depth)):
            for stack in (0, 60):
                with pytest.raises(ProtocolError) as caught:
                    _at_stack_depth(stack, partial(parse_frame, text))
                assert "JSON" in caught.value.message or str(MAX_NESTING) in caught.value.message
    for text in _in_frames(nested_text(MAX_NESTING - 3)):
        parse_frame(text)


def test_a_deep_frame_is_a_violation_even_with_debug_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nested just shallow enough for json, a frame is refused before a debug line reprs it."""
    caplog.set_level(logging.DEBUG)
    for depth in range(850, 1000):
        session = ServerSession()
        session.persona_assigned()
        text = _in_frames(nested_text(depth, objects=True))[0]
        actions = _at_stack_depth(40, partial(session.receive_text, text))
        assert [type(a) for a in actions] == [SendFrame]
        assert isinstance(actions[0].frame, DpkitEvent)
        assert actions[0].frame.name == "protocolError"


@pytest.mark.parametrize("name", ["startSpeaking", "conversationSend"])
@pytest.mark.parametrize(
    "text", [chr(0xD800), "a" + chr(0xDFFF) + "b", "hi " + chr(0xD83D)], ids=["high", "low", "half"]
)
def test_text_to_speak_with_a_lone_surrogate_is_answered_with_a_refusal(
    name: str, text: str
) -> None:
    """Half a surrogate pair is no text to speak: the request is answered, status 1, not spoken."""
    session = ServerSession()
    session.persona_assigned()
    frame = encode(envelope("scene", name, {"text": text}, kind="request", transaction="t_1"))
    [action] = session.receive_text(frame)
    assert isinstance(action, SendFrame)
    assert isinstance(action.frame, SceneResponse)
    assert (action.frame.transaction, action.frame.status) == ("t_1", 1)
    assert "lone surrogate" in action.frame.body["error"]
    emoji = encode(envelope("scene", name, {"text": "hi 😀"}, kind="request", transaction="t_2"))
    [spoken] = session.receive_text(emoji)
    assert isinstance(spoken, AnswerSceneRequest)
    assert spoken.request == SceneRequest(name, "t_2", {"text": "hi 😀"})


def _session_in(phase: ServerPhase, offer: str) -> ServerSession:
    session = ServerSession()
    if phase is not ServerPhase.OPENED:
        session.persona_assigned()
    if phase in (ServerPhase.STARTING, ServerPhase.ACCEPTED, ServerPhase.CONNECTED):
        session.receive_text(offer)
    if phase in (ServerPhase.ACCEPTED, ServerPhase.CONNECTED):
        session.session_started(Accepted("node-1-s"), "v=0")
    if phase is ServerPhase.CONNECTED:
        session.transport_connected()
    assert session.phase is phase
    return session


def test_the_server_machine_takes_thousands_of_generated_frames_in_every_phase(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Generated hostile frames, 3000 per live phase: actions come back, nothing raises."""
    caplog.set_level(logging.DEBUG)
    generator = FrameGenerator(SEED)
    offer = encode(generator.valid_frame("offer"))
    live = [phase for phase in ServerPhase if phase is not ServerPhase.CLOSED]
    for phase in live:
        session = _session_in(phase, offer)
        for _ in range(3000):
            if session.phase is ServerPhase.CLOSED:
                session = _session_in(phase, offer)
            frame = generator.frame(after_offer=phase is not ServerPhase.OPENED)
            assert isinstance(session.receive_text(frame.payload), list)
    assert not [r for r in caplog.records if r.levelno > logging.WARNING or r.exc_info]
