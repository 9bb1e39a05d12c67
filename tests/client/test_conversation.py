"""The conversation core without I/O: parsing recognition results and speech markers, and the
Web SDK's conversation state machine, fed frame bodies directly."""

from __future__ import annotations

import json
from typing import Any

import pytest

import dpkit
from dpkit import (
    ConversationStateName,
    NoSession,
    RecognizeAlternative,
    RecognizeResult,
    SceneResponseError,
    SpeechMarker,
)
from dpkit.client.conversation import (
    MAX_ALTERNATIVES,
    MAX_MARKER_ARGUMENTS,
    MAX_RESULTS,
    MAX_TEXT_CHARS,
    Conversation,
    RecognizeResults,
    parse_recognize_results,
    parse_speech_marker,
)
from dpkit.errors import InvalidStateError

S = ConversationStateName


def interim(text: str = "hel") -> dict[str, Any]:
    return {
        "status": 0,
        "errorMessage": "",
        "results": [{"final": False, "alternatives": [{"confidence": 0.4, "transcript": text}]}],
    }


def final(text: str = "hello") -> dict[str, Any]:
    return {
        "status": 0,
        "errorMessage": "",
        "results": [{"final": True, "alternatives": [{"confidence": 0.9, "transcript": text}]}],
    }


def state(speech_state: str, persona_id: str = "1") -> dict[str, Any]:
    return {"persona": {persona_id: {"speechState": speech_state}}}


def recorded(conversation: Conversation) -> list[ConversationStateName]:
    seen: list[ConversationStateName] = []
    conversation.on_conversation_state_updated.add_listener(seen.append)
    return seen


def test_recognize_results_parse_into_frozen_results() -> None:
    """A well-formed body becomes RecognizeResults with results and alternatives, in order."""
    body = {
        "status": 0,
        "errorMessage": "",
        "results": [
            {
                "final": True,
                "alternatives": [
                    {"confidence": 0.9, "transcript": "what is your name"},
                    {"confidence": 0.2, "transcript": "what is your game"},
                ],
            }
        ],
    }
    parsed = parse_recognize_results(body)
    assert parsed == RecognizeResults(
        0,
        "",
        (
            RecognizeResult(
                True,
                (
                    RecognizeAlternative(0.9, "what is your name"),
                    RecognizeAlternative(0.2, "what is your game"),
                ),
            ),
        ),
    )
    assert parsed.final
    assert parsed.results[0].transcript == "what is your name"
    with pytest.raises(AttributeError):
        parsed.status = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "0", "results": "nope"},
        {"status": True, "results": [1, "x", None, []]},
        {"status": 0, "errorMessage": 7, "results": [{"final": "yes", "alternatives": {}}]},
        {
            "status": 0,
            "results": [
                {
                    "alternatives": [
                        {"confidence": "high", "transcript": "a"},
                        {"confidence": 1e308 * 10, "transcript": "b"},
                        {"confidence": -3, "transcript": "c"},
                        {"confidence": 0.5, "transcript": 12},
                        {"confidence": True, "transcript": "d"},
                        "junk",
                    ]
                }
            ],
        },
        json.loads('{"status": 1e400, "results": [{"final": true}]}'),
    ],
)
def test_hostile_recognize_results_never_raise(body: dict[str, Any]) -> None:
    """Malformed bodies parse without raising: bad parts are skipped, bad numbers clamped."""
    parsed = parse_recognize_results(body)
    assert isinstance(parsed.status, int)
    assert isinstance(parsed.error_message, str)
    for result in parsed.results:
        assert isinstance(result.final, bool)
        for alternative in result.alternatives:
            assert 0.0 <= alternative.confidence <= 1.0
            assert isinstance(alternative.transcript, str)


def test_recognize_results_clamp_confidence_and_skip_bad_alternatives() -> None:
    """Confidence outside 0..1 or not a number is clamped or zeroed; non-text transcripts go."""
    parsed = parse_recognize_results(
        {
            "status": 0,
            "results": [
                {
                    "final": True,
                    "alternatives": [
                        {"confidence": "high", "transcript": "a"},
                        {"confidence": float("inf"), "transcript": "b"},
                        {"confidence": -3, "transcript": "c"},
                        {"confidence": 2, "transcript": "d"},
                        {"confidence": 0.5, "transcript": 12},
                    ],
                }
            ],
        }
    )
    assert [(a.confidence, a.transcript) for a in parsed.results[0].alternatives] == [
        (0.0, "a"),
        (0.0, "b"),
        (0.0, "c"),
        (1.0, "d"),
    ]
    assert parse_recognize_results({"results": []}).status == -1  # no status: a failure


def test_recognize_results_are_bounded() -> None:
    """Huge result lists, alternative lists and transcripts are cut to the module's limits."""
    alternative = {"confidence": 0.5, "transcript": "x" * (MAX_TEXT_CHARS * 3)}
    result = {"final": False, "alternatives": [alternative] * (MAX_ALTERNATIVES * 4)}
    parsed = parse_recognize_results(
        {"status": 0, "errorMessage": "e" * (MAX_TEXT_CHARS + 5), "results": [result] * 1000}
    )
    assert len(parsed.results) == MAX_RESULTS
    assert len(parsed.results[0].alternatives) == MAX_ALTERNATIVES
    assert len(parsed.results[0].transcript) == MAX_TEXT_CHARS
    assert len(parsed.error_message) == MAX_TEXT_CHARS


def test_speech_markers_parse_with_the_web_sdks_shape() -> None:
    """{personaId, name, arguments}: the id kept as a string, non-text arguments dropped."""
    assert parse_speech_marker(
        {"personaId": 1, "name": "showcards", "arguments": ["cardA", "cardB"]}
    ) == SpeechMarker("1", "showcards", ("cardA", "cardB"))
    assert parse_speech_marker(
        {"personaId": "2", "name": "marker", "arguments": ["x", 3, None]}
    ) == (SpeechMarker("2", "marker", ("x",)))
    assert parse_speech_marker({"personaId": 1, "name": "hidecards"}) == SpeechMarker(
        "1", "hidecards", ()
    )
    many = parse_speech_marker({"personaId": 1, "name": "m", "arguments": ["a"] * 10_000})
    assert many is not None
    assert len(many.arguments) == MAX_MARKER_ARGUMENTS


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": "showcards", "arguments": []},
        {"personaId": "", "name": "showcards"},
        {"personaId": True, "name": "showcards"},
        {"personaId": [1], "name": "showcards"},
        {"personaId": 1, "name": ""},
        {"personaId": 1, "name": 5},
    ],
)
def test_speech_markers_without_a_persona_or_name_are_skipped(body: dict[str, Any]) -> None:
    """A marker the Web SDK could not dispatch (no persona id, no name) is None, not an error."""
    assert parse_speech_marker(body) is None


def test_the_conversation_state_follows_a_whole_turn() -> None:
    """Interim, final, speaking, idle: userSpeaking, dpProcessing, dpSpeaking, idle."""
    conversation = Conversation()
    seen = recorded(conversation)
    assert conversation.state is S.IDLE
    for step in (interim("hel"), interim("hello"), final("hello")):
        conversation.process_recognize_results(parse_recognize_results(step))
    conversation.process_state_message(state("speaking"))
    conversation.process_state_message(state("speaking"))
    conversation.process_state_message(state("idle"))
    assert seen == [S.USER_SPEAKING, S.DP_PROCESSING, S.DP_SPEAKING, S.IDLE]
    assert conversation.state is S.IDLE


def test_failed_recognition_and_other_state_frames_change_nothing() -> None:
    """A non-zero status, a state without personas or speechState, or another speechState
    leave the state as it was, as in the Web SDK."""
    conversation = Conversation()
    seen = recorded(conversation)
    failed = {"status": 3, "errorMessage": "recognizer broke", "results": final()["results"]}
    conversation.process_recognize_results(parse_recognize_results(failed))
    conversation.process_recognize_results(parse_recognize_results({"results": "junk"}))
    bodies: list[dict[str, Any]] = [
        {},
        {"persona": {}},
        {"persona": []},
        {"persona": {"1": "x"}},
        state("animating"),
    ]
    for body in bodies:
        conversation.process_state_message(body)
    assert seen == []
    assert conversation.state is S.IDLE


def test_only_the_first_persona_decides_the_state() -> None:
    """The Web SDK reads the first persona of a state frame and ignores the rest."""
    conversation = Conversation()
    seen = recorded(conversation)
    conversation.process_state_message(
        {"persona": {"1": {"speechState": "idle"}, "2": {"speechState": "speaking"}}}
    )
    conversation.process_state_message(
        {"persona": {"1": {"speechState": "speaking"}, "2": {"speechState": "idle"}}}
    )
    assert seen == [S.DP_SPEAKING]


def test_speech_during_the_persona_speaking_takes_the_floor() -> None:
    """Recognition while the persona speaks moves the state to userSpeaking (barge-in)."""
    conversation = Conversation()
    seen = recorded(conversation)
    conversation.process_state_message(state("speaking"))
    conversation.process_recognize_results(parse_recognize_results(interim()))
    conversation.process_state_message(state("speaking"))
    assert seen == [S.DP_SPEAKING, S.USER_SPEAKING, S.DP_SPEAKING]


def test_reset_says_idle_even_when_idle() -> None:
    """reset() calls the listeners with idle every time, as the Web SDK's does."""
    conversation = Conversation()
    seen = recorded(conversation)
    conversation.reset()
    conversation.process_state_message(state("speaking"))
    conversation.reset()
    assert seen == [S.IDLE, S.DP_SPEAKING, S.IDLE]
    assert [s.value for s in S] == ["idle", "dpSpeaking", "userSpeaking", "dpProcessing"]


def test_scene_response_error_carries_the_web_sdks_fields() -> None:
    """request_name, status and response_body; the message starts as the Web SDK's."""
    error = SceneResponseError("conversationSend", 1, {"error": "text is too long"})
    assert (error.request_name, error.status, error.response_body) == (
        "conversationSend",
        1,
        {"error": "text is too long"},
    )
    assert error.message == "Scene response failed, status: 1 (conversationSend: text is too long)"
    assert str(SceneResponseError("x", 2, "not an object")).endswith("status: 2 (x)")
    assert dpkit.SceneResponseError is SceneResponseError
    assert isinstance(error, dpkit.DpkitError)


def test_no_session_is_the_web_sdks_name() -> None:
    """A request without a session raises name 'noSession' (an InvalidStateError too)."""
    error = NoSession("No session available")
    assert error.name == "noSession"
    assert isinstance(error, InvalidStateError)
