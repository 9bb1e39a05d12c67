"""The conversation side of a scene: recognition results, speech markers, conversation state.

No I/O: the scene feeds it the server's ``scene`` event bodies and it parses them into small
frozen classes and keeps the conversation state, as the Web SDK's ``Conversation`` and
``ConversationState`` do:

- a ``state`` frame whose first persona's ``speechState`` is ``speaking`` is *dpSpeaking*, and
  ``idle`` is *idle*;
- a ``recognizeResults`` frame with status 0 is *dpProcessing* when any result is final, and
  *userSpeaking* otherwise; one with another status changes nothing (it is logged);
- a disconnect, or the session ending, resets it to *idle* (and says so, even when it was idle).

``conversationResult`` does not change the state in the Web SDK, so it does not here either.
Bodies come from the network: anything malformed is skipped, never raised, and the number of
results, alternatives and argument strings kept is bounded.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpkit.client.events import Event

logger = logging.getLogger("dpkit.client")

#: At most this many results of one ``recognizeResults`` frame are kept (the rest are dropped).
MAX_RESULTS = 32
#: At most this many alternatives of one result are kept.
MAX_ALTERNATIVES = 32
#: A transcript, error message, marker name or argument is cut to this many characters.
MAX_TEXT_CHARS = 10_000
#: At most this many arguments of one speech marker are kept.
MAX_MARKER_ARGUMENTS = 64


class ConversationStateName(enum.Enum):
    """The Web SDK's ``ConversationStateTypes``: who has the floor."""

    IDLE = "idle"
    DP_SPEAKING = "dpSpeaking"
    USER_SPEAKING = "userSpeaking"
    DP_PROCESSING = "dpProcessing"


@dataclass(frozen=True)
class RecognizeAlternative:
    """One hypothesis of what the user said, and how sure the recognizer is (0 to 1)."""

    confidence: float
    transcript: str


@dataclass(frozen=True)
class RecognizeResult:
    """One result of a ``recognizeResults`` frame: interim (``final`` false) or final."""

    final: bool
    alternatives: tuple[RecognizeAlternative, ...]

    @property
    def transcript(self) -> str:
        """The best alternative's transcript ('' when there is none)."""
        return self.alternatives[0].transcript if self.alternatives else ""


@dataclass(frozen=True)
class RecognizeResults:
    """A ``recognizeResults`` frame: ``status`` 0 on success, else ``error_message`` says why."""

    status: int
    error_message: str
    results: tuple[RecognizeResult, ...]

    @property
    def final(self) -> bool:
        """Whether any result is final (the Web SDK's test for *dpProcessing*)."""
        return any(result.final for result in self.results)


@dataclass(frozen=True)
class SpeechMarker:
    """A ``speechMarker`` frame: the persona reached a marker in its speech.

    ``@showcards(a, b)`` in an answer is ``SpeechMarker(persona_id, "showcards", ("a", "b"))``;
    ``name`` is also ``hidecards``, ``feature`` or ``marker`` (``@marker(name, ...)``).
    """

    persona_id: str
    name: str
    arguments: tuple[str, ...]


def _text(value: object) -> str:
    return value[:MAX_TEXT_CHARS] if isinstance(value, str) else ""


def _alternative(raw: object) -> RecognizeAlternative | None:
    if not isinstance(raw, Mapping):
        return None
    transcript = raw.get("transcript")
    if not isinstance(transcript, str):
        return None
    confidence = raw.get("confidence", 0.0)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        confidence = 0.0
    value = float(confidence)
    if not math.isfinite(value):
        value = 0.0
    return RecognizeAlternative(min(1.0, max(0.0, value)), transcript[:MAX_TEXT_CHARS])


def _result(raw: object) -> RecognizeResult | None:
    if not isinstance(raw, Mapping):
        return None
    alternatives = raw.get("alternatives")
    kept: list[RecognizeAlternative] = []
    if isinstance(alternatives, list):
        for item in alternatives[:MAX_ALTERNATIVES]:
            alternative = _alternative(item)
            if alternative is not None:
                kept.append(alternative)
    return RecognizeResult(raw.get("final") is True, tuple(kept))


def parse_recognize_results(body: Mapping[str, Any]) -> RecognizeResults:
    """A ``recognizeResults`` body as :class:`RecognizeResults`; malformed parts are skipped.

    A missing or non-integer ``status`` counts as a failure (status -1), so a garbled frame
    never moves the conversation state.
    """
    status = body.get("status")
    if isinstance(status, bool) or not isinstance(status, int):
        status = -1
    results = body.get("results")
    kept: list[RecognizeResult] = []
    if isinstance(results, list):
        for item in results[:MAX_RESULTS]:
            result = _result(item)
            if result is not None:
                kept.append(result)
    return RecognizeResults(status, _text(body.get("errorMessage")), tuple(kept))


def parse_speech_marker(body: Mapping[str, Any]) -> SpeechMarker | None:
    """A ``speechMarker`` body as :class:`SpeechMarker`, or None without a persona id or name.

    The persona id may be a number or a string (the Web SDK's ``PersonaId``); it is kept as a
    string, as :attr:`Persona.persona_id` is. Arguments that are not strings are dropped.
    """
    persona_id = body.get("personaId")
    if isinstance(persona_id, bool) or not isinstance(persona_id, int | str) or persona_id == "":
        return None
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return None
    arguments = body.get("arguments")
    kept = (
        tuple(_text(a) for a in arguments[:MAX_MARKER_ARGUMENTS] if isinstance(a, str))
        if isinstance(arguments, list)
        else ()
    )
    return SpeechMarker(str(persona_id)[:MAX_TEXT_CHARS], name[:MAX_TEXT_CHARS], kept)


class Conversation:
    """The scene's conversation state (``scene.conversation``), as the Web SDK's.

    ``scene.conversation.on_conversation_state_updated.add_listener(print)`` is called with the
    new :class:`ConversationStateName` on each change.
    """

    def __init__(self) -> None:
        self._state = ConversationStateName.IDLE
        self.on_conversation_state_updated: Event[[ConversationStateName]] = Event(
            "on_conversation_state_updated"
        )

    @property
    def state(self) -> ConversationStateName:
        """The current conversation state (the Web SDK's ``getSpeechState()``)."""
        return self._state

    def process_state_message(self, body: Mapping[str, Any]) -> None:
        """A ``state`` body: the first persona's ``speechState`` decides, as in the Web SDK."""
        personas = body.get("persona")
        if not isinstance(personas, Mapping) or not personas:
            return
        first = next(iter(personas.values()))
        speech_state = first.get("speechState") if isinstance(first, Mapping) else None
        if speech_state == "idle":
            self._set(ConversationStateName.IDLE)
        elif speech_state == "speaking":
            self._set(ConversationStateName.DP_SPEAKING)

    def process_recognize_results(self, results: RecognizeResults) -> None:
        """Recognition results: *dpProcessing* on a final one, *userSpeaking* on an interim."""
        if results.status != 0:
            logger.error(
                "%s",
                results.error_message
                or "recognizeResults sent back a message with non-zero status but no error "
                "message.",
            )
        elif results.final:
            self._set(ConversationStateName.DP_PROCESSING)
        else:
            self._set(ConversationStateName.USER_SPEAKING)

    def reset(self) -> None:
        """Back to *idle*, and say so (the Web SDK calls its listeners even when idle)."""
        self._state = ConversationStateName.IDLE
        self.on_conversation_state_updated.call(self._state)

    def _set(self, state: ConversationStateName) -> None:
        if state is not self._state:
            logger.debug("conversation state: %s -> %s", self._state.value, state.value)
            self._state = state
            self.on_conversation_state_updated.call(state)
