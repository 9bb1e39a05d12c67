"""A session's ears: its :class:`~dpkit.server.recognition.listener.Listener`, wired to the
persona's corpus and speech, and what it hears turned into ``recognizeResults`` frames.

Interim results go out as they come; a final one goes out, then its text is handled exactly as
typed text (``conversationSend {text}``, through the session's ``converse``). Speech counts as
interaction for the idle timer when it starts and when its final result arrives. While the
persona speaks nothing is heard, unless barge-in is on: then speech that starts stops the persona.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from dpkit.protocol.messages import Frame, SceneEvent, SceneRequest, SceneResponse
from dpkit.server.conversation import Corpus
from dpkit.server.recognition.engine import Alternative, new_recognizer
from dpkit.server.recognition.intents import Decision, corpus_phrases, decide
from dpkit.server.recognition.listener import Listener
from dpkit.server.settings import PersonaSettings
from dpkit.server.speech import PersonaSpeaker

logger = logging.getLogger("dpkit.server.recognition")

#: The scene requests this module answers.
REQUESTS = frozenset({"startRecognize", "stopRecognize"})


def results_event(
    alternatives: tuple[Alternative, ...], *, final: bool, status: int = 0, error: str = ""
) -> SceneEvent:
    """A ``recognizeResults`` event as the Web SDK reads it."""
    return SceneEvent(
        "recognizeResults",
        {
            "status": status,
            "errorMessage": error,
            "results": [
                {
                    "final": final,
                    "alternatives": [
                        {"confidence": a.confidence, "transcript": a.transcript}
                        for a in alternatives
                    ],
                }
            ]
            if alternatives
            else [],
        },
    )


class SessionListening:
    """Speech recognition for one session."""

    def __init__(
        self,
        persona: PersonaSettings,
        corpus: Corpus,
        speaker: PersonaSpeaker,
        *,
        send: Callable[[Frame], Awaitable[None]],
        converse: Callable[[str], Awaitable[None]],
        touch: Callable[[], None],
        label: str,
    ) -> None:
        self._persona = persona
        self._corpus = corpus
        self._speaker = speaker
        self._send = send
        self._converse = converse
        self._touch = touch
        self._label = label
        #: Every final result's decision, in order (for logs and tests).
        self.decisions: list[Decision] = []
        phrases = corpus_phrases(corpus)
        engine = persona.recognition_engine
        self.listener = Listener(
            lambda: new_recognizer(engine, phrases),
            on_speech_started=self._speech_started,
            on_interim=self._interim,
            on_final=self._final,
            on_failure=self._failure,
            speaking=lambda: speaker.speaking,
            barge_in=persona.barge_in,
            max_utterance_s=persona.max_recognition_s,
            active=persona.recognition,
            name=f"session {label}",
        )

    def open(self) -> None:
        self.listener.open()

    async def close(self) -> None:
        await self.listener.close()

    def answer(self, request: SceneRequest) -> SceneResponse:
        """``startRecognize`` / ``stopRecognize``: switch recognition, answer ``{}``."""
        if self.listener.failed:
            return SceneResponse(
                request.name,
                request.transaction,
                1,
                {"error": "speech recognition failed in this session and is off"},
            )
        self.listener.set_active(request.name == "startRecognize")
        logger.debug("session %s: recognition %s", self._label, self.listener.active)
        return SceneResponse(request.name, request.transaction, 0, {})

    def _speech_started(self) -> None:
        self._touch()
        if self._persona.barge_in and self._speaker.speaking:
            logger.debug("session %s: the user spoke over the persona", self._label)
            self._speaker.stop()

    async def _interim(self, text: str) -> None:
        await self._send(results_event((Alternative(text, 0.0),), final=False))

    async def _final(self, alternatives: tuple[Alternative, ...]) -> None:
        decision = decide(alternatives, self._corpus, self._persona.recognition_threshold)
        self.decisions.append(decision)
        logger.debug("session %s: heard %r: %s", self._label, decision.transcript, decision)
        self._touch()
        await self._send(results_event(alternatives, final=True))
        await self._converse(decision.transcript)

    async def _failure(self, message: str) -> None:
        await self._send(
            results_event((), final=True, status=1, error=f"speech recognition failed: {message}")
        )
