"""What a persona says in one session: answers from its corpus, spoken, and its welcome.

:class:`PersonaTalk` answers the persona's scene requests (``conversationSend``,
``conversationSetVariables``, ``conversationGetVariables``, ``startSpeaking``, ``stopSpeaking``,
``getState``, ``configure``, ``animateToNamedCamera``, ``updateContentAwareness``; the table is
:mod:`dpkit.server.scene_requests`), speaks through a
:class:`~dpkit.server.speech.PersonaSpeaker`, reports ``state`` (``speechState``,
``currentSpeech``), ``conversationResult`` and ``speechMarker`` frames, and greets at the start:
when the client's video plays (``videoStarted``), or after a wait at the latest, as the platform
does (the seed's known issue). Corpus answers are templates of the session's conversation
variables (:mod:`dpkit.server.variables`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from dpkit.protocol.messages import Frame, SceneEvent, SceneRequest, SceneResponse
from dpkit.server.conversation import Answer, Corpus
from dpkit.server.persona_media.voice import EspeakVoice
from dpkit.server.scene_requests import (
    CameraMove,
    Configuration,
    PageGeometry,
    RequestError,
    check_camera,
    check_configure,
    check_content_awareness,
    check_persona,
)
from dpkit.server.speech import IDLE, PersonaSpeaker, SpeechBacklogFull, SpeechMarker
from dpkit.server.variables import ConversationVariables, VariablesError, render
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server.talk")

PERSONA_ID = "1"
Send = Callable[[Frame], Coroutine[Any, Any, None]]


class PersonaTalk:
    """One session's conversation with its persona."""

    def __init__(
        self,
        corpus: Corpus,
        voice: EspeakVoice,
        *,
        fps: float,
        scene_id: str,
        send: Send,
        on_activity: Callable[[], None],
    ) -> None:
        self._corpus = corpus
        self._send = send
        self._on_activity = on_activity
        self._scene_id = scene_id
        self.session_id: str | None = None
        self._tasks = TaskOwner("persona-talk")
        self.speaker = PersonaSpeaker(voice, fps, self._on_speech, self._on_marker)
        self.variables = ConversationVariables()
        #: What ``configure`` set: the audio levels are for the recognizer to use.
        self.configuration = Configuration()
        #: The page's geometry from its last ``updateContentAwareness``.
        self.page_geometry: PageGeometry | None = None
        #: The last ``animateToNamedCamera`` (accepted; dpkit's framing does not move).
        self.camera: CameraMove | None = None
        #: Every speech marker sent, in order, for tests and logs.
        self.markers_sent: list[SpeechMarker] = []
        self.speech_state = IDLE
        self.current_speech = ""
        self._video_started = asyncio.Event()
        self._greeted = False

    # --- requests ---------------------------------------------------------------------------

    async def handle(self, request: SceneRequest) -> SceneResponse | None:
        """The response to a request this persona handles, or None for one it does not."""
        try:
            body = await self._handle(request)
        except SpeechBacklogFull as exc:
            logger.info("session %s: %s refused: %s", self.session_id, request.name, exc)
            return SceneResponse(request.name, request.transaction, 1, {"error": str(exc)})
        except RequestError as exc:
            logger.info("session %s: refused %s", self.session_id, exc)
            return SceneResponse(request.name, request.transaction, 1, {"error": str(exc)})
        if body is None:
            return None
        return SceneResponse(request.name, request.transaction, 0, body)

    async def _handle(self, request: SceneRequest) -> dict[str, Any] | None:
        """The response body of a request carried out, or None for one this persona lacks."""
        name, body = request.name, request.body
        if name == "conversationSend":
            optional = body.get("optionalArgs")
            optional = optional if isinstance(optional, dict) else {}
            variables = self.request_variables(body, name)
            text = str(body.get("text", ""))
            await self._reply(text, self._corpus.answer(text, optional), variables)
            return {}
        if name == "startSpeaking":
            await self.say(str(body.get("text", "")))
            return {}
        if name == "stopSpeaking":
            self.speaker.stop()
            return {}
        if name == "getState":
            return self._state_body()
        if name == "conversationSetVariables":
            check_persona(name, body)
            self._check_variables(lambda: self.variables.set(body.get("variables"), name))
            logger.debug("session %s: variables set", self.session_id)
            return {}
        if name == "conversationGetVariables":
            check_persona(name, body)
            return {"variables": self.variables.snapshot()}
        if name == "configure":
            self.configuration = check_configure(body, self.configuration)
            return {
                "applied": list(self.configuration.applied),
                "ignored": list(self.configuration.ignored),
            }
        if name == "animateToNamedCamera":
            check_persona(name, body)
            self.camera = check_camera(body)
            return {}
        if name == "updateContentAwareness":
            self.page_geometry = check_content_awareness(body)
            return {}
        return None

    def request_variables(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """The session's variables with a request's own on top; RequestError if they are bad."""
        own = body.get("variables")
        merged: dict[str, Any] = {}

        def merge() -> None:
            merged.update(self.variables.merged(own, name))

        self._check_variables(merge)
        return merged

    @staticmethod
    def _check_variables(work: Callable[[], None]) -> None:
        try:
            work()
        except VariablesError as exc:
            raise RequestError(f"badVariables: {exc}") from exc

    async def _reply(
        self, heard: str, answer: Answer, variables: dict[str, Any] | None = None
    ) -> None:
        if answer.intent == "WELCOME_MESSAGE":
            self._greeted = True
        values = self.variables.snapshot() if variables is None else variables
        shown = render(answer.text, values)
        spoken = render(answer.text, values, literal_markers=True)
        result = SceneEvent(
            "conversationResult",
            {
                "status": 0,
                "personaId": PERSONA_ID,
                "input": {"text": heard},
                # Server rule: context and meta must be objects, or the browser drops this.
                "output": {"text": shown, "context": {"intent": answer.intent}},
                "provider": {"kind": "dpkit", "meta": {"intent": answer.intent}},
            },
        )
        await self._send(result)
        await self.say(spoken)

    async def say(self, text: str) -> None:
        self._on_activity()
        await self.speaker.say(text)

    # --- greeting ---------------------------------------------------------------------------

    def video_started(self) -> None:
        """The client's persona video plays unmuted (``videoStarted``)."""
        self._video_started.set()

    def start_greeting(self, wait_s: float) -> None:
        """Greet once the video plays, or after ``wait_s`` at the latest."""
        self._tasks.spawn(self._greet(wait_s), "greeting")

    async def _greet(self, wait_s: float) -> None:
        try:
            async with asyncio.timeout(wait_s):
                await self._video_started.wait()
        except TimeoutError:
            logger.info("session %s: no videoStarted in %.0f s, greeting", self.session_id, wait_s)
        if not self._greeted:
            self._greeted = True
            try:
                await self._reply("", self._corpus.answer("", {"kind": "init"}))
            except SpeechBacklogFull as exc:
                logger.info("session %s: no greeting: %s", self.session_id, exc)

    # --- state ------------------------------------------------------------------------------

    def _on_speech(self, state: str, text: str) -> None:
        # Called from the audio track as it pulls samples: report it from a task of our own.
        self.speech_state, self.current_speech = state, text
        if self._tasks.closed:
            return
        self._on_activity()
        self._tasks.spawn(self._send(SceneEvent("state", self._state_body())), "state")

    def _on_marker(self, marker: SpeechMarker) -> None:
        # Called from the audio track as it reaches the marker: sent from a task of our own.
        if self._tasks.closed:
            return
        self.markers_sent.append(marker)
        frame = SceneEvent(
            "speechMarker",
            {"personaId": PERSONA_ID, "name": marker.name, "arguments": list(marker.arguments)},
        )
        self._tasks.spawn(self._send(frame), "speech-marker")

    def _state_body(self) -> dict[str, Any]:
        return {
            "scene": {"sceneId": self._scene_id, "sdkVersion": "dpkit", "featureFlags": []},
            "persona": {
                PERSONA_ID: {"speechState": self.speech_state, "currentSpeech": self.current_speech}
            },
            "session": {"sessionId": self.session_id, "state": "connected"},
        }

    async def close(self) -> None:
        self.speaker.stop()
        await self._tasks.close()
