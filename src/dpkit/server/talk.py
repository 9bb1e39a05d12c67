"""What a persona says in one session: answers from its corpus, spoken, and its welcome.

:class:`PersonaTalk` answers the conversation requests (``conversationSend``, ``startSpeaking``,
``stopSpeaking``, ``getState``), speaks through a :class:`~dpkit.server.speech.PersonaSpeaker`,
reports ``state`` (``speechState``, ``currentSpeech``) and ``conversationResult`` frames, and
greets at the start: when the client's video plays (``videoStarted``), or after a wait at the
latest, as the platform does (the seed's known issue).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from dpkit.protocol.messages import Frame, SceneEvent, SceneRequest, SceneResponse
from dpkit.server.conversation import Answer, Corpus
from dpkit.server.persona_media.voice import EspeakVoice
from dpkit.server.speech import IDLE, PersonaSpeaker, SpeechBacklogFull
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
        self.speaker = PersonaSpeaker(voice, fps, self._on_speech)
        self.speech_state = IDLE
        self.current_speech = ""
        self._video_started = asyncio.Event()
        self._greeted = False

    # --- requests ---------------------------------------------------------------------------

    async def handle(self, request: SceneRequest) -> SceneResponse | None:
        """The response to a request this persona handles, or None for one it does not."""
        try:
            return await self._handle(request)
        except SpeechBacklogFull as exc:
            logger.info("session %s: %s refused: %s", self.session_id, request.name, exc)
            return SceneResponse(request.name, request.transaction, 1, {"error": str(exc)})

    async def _handle(self, request: SceneRequest) -> SceneResponse | None:
        body = request.body
        if request.name == "conversationSend":
            optional = (
                body.get("optionalArgs") if isinstance(body.get("optionalArgs"), dict) else {}
            )
            answer = self._corpus.answer(str(body.get("text", "")), optional)
            await self._reply(str(body.get("text", "")), answer)
            return SceneResponse(request.name, request.transaction, 0, {})
        if request.name == "startSpeaking":
            await self.say(str(body.get("text", "")))
            return SceneResponse(request.name, request.transaction, 0, {})
        if request.name == "stopSpeaking":
            self.speaker.stop()
            return SceneResponse(request.name, request.transaction, 0, {})
        if request.name == "getState":
            return SceneResponse(request.name, request.transaction, 0, self._state_body())
        return None

    async def _reply(self, heard: str, answer: Answer) -> None:
        if answer.intent == "WELCOME_MESSAGE":
            self._greeted = True
        result = SceneEvent(
            "conversationResult",
            {
                "status": 0,
                "personaId": PERSONA_ID,
                "input": {"text": heard},
                # Server rule: context and meta must be objects, or the browser drops this.
                "output": {"text": answer.text, "context": {"intent": answer.intent}},
                "provider": {"kind": "dpkit", "meta": {"intent": answer.intent}},
            },
        )
        await self._send(result)
        await self.say(answer.text)

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
