"""``Persona``: talk to the Digital Person, as the Web SDK's ``Persona`` does.

persona = Persona(scene)
persona.on_conversation_result.add_listener(lambda persona, result: print(result["output"]))
persona.on_speech_marker.add_listener(lambda persona, marker: print(marker.name))
await persona.conversation_send("hello", {}, {})
await persona.conversation_send("", {}, {"kind": "init"})   # ask for the welcome

Requests return the response's body and raise :class:`~dpkit.errors.SceneResponseError` when the
server answers with a non-zero status, as the Web SDK's promises resolve and reject.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dpkit.client.conversation import SpeechMarker, parse_speech_marker
from dpkit.client.events import Event
from dpkit.protocol.messages import Frame, SceneEvent

if TYPE_CHECKING:
    from dpkit.client.scene import Scene


class Persona:
    """One persona of a scene (``persona_id`` 1 unless told)."""

    def __init__(self, scene: Scene, persona_id: int | str = 1) -> None:
        self.scene = scene
        self.persona_id = str(persona_id)
        #: ``(persona, result)`` for each ``conversationResult``: input, output, provider.
        self.on_conversation_result: Event[[Persona, dict[str, Any]]] = Event(
            "on_conversation_result"
        )
        #: ``(persona, marker)`` for each ``speechMarker`` of this persona (the Web SDK's
        #: ``onSpeechMarkerEvent``): ``marker.name`` (showcards, hidecards, feature, marker)
        #: and ``marker.arguments``.
        self.on_speech_marker: Event[[Persona, SpeechMarker]] = Event("on_speech_marker")
        #: ``(persona, speech_state, current_speech)`` when the persona starts or stops speaking.
        self.on_speech: Event[[Persona, str, str]] = Event("on_speech")
        self.speech_state = "idle"
        self.current_speech = ""
        scene.on_message.add_listener(self._on_message)

    def _wire_id(self) -> int | str:
        return int(self.persona_id) if self.persona_id.isdigit() else self.persona_id

    async def conversation_send(
        self,
        text: str,
        variables: Mapping[str, Any] | None = None,
        optional_args: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Say ``text`` to the persona; the answer comes as a conversation result and speech.

        Returns the response's body; a non-zero status raises ``SceneResponseError``.
        """
        return await self.scene.send_request(
            "conversationSend",
            {
                "personaId": self._wire_id(),
                "text": text,
                "variables": dict(variables or {}),
                "optionalArgs": dict(optional_args or {}),
            },
        )

    async def stop_speaking(self) -> dict[str, Any]:
        """Stop the persona's speech; returns the response's body."""
        return await self.scene.send_request("stopSpeaking", {"personaId": self.persona_id})

    def _on_message(self, frame: Frame) -> None:
        if not isinstance(frame, SceneEvent):
            return
        if frame.name == "conversationResult":
            if str(frame.body.get("personaId", self.persona_id)) == self.persona_id:
                self.on_conversation_result.call(self, frame.body)
        elif frame.name == "speechMarker":
            marker = parse_speech_marker(frame.body)
            if marker is not None and marker.persona_id == self.persona_id:
                self.on_speech_marker.call(self, marker)
        elif frame.name == "state":
            personas = frame.body.get("persona")
            mine = personas.get(self.persona_id) if isinstance(personas, dict) else None
            if isinstance(mine, dict) and "speechState" in mine:
                state = str(mine["speechState"])
                speech = str(mine.get("currentSpeech", ""))
                if (state, speech) != (self.speech_state, self.current_speech):
                    self.speech_state, self.current_speech = state, speech
                    self.on_speech.call(self, state, speech)
