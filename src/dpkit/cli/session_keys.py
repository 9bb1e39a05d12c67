"""The interactive part of ``dpkit connect``: commands and text typed while connected.

Each line typed is either a command (``/m`` microphone, ``/c`` camera, ``/p`` persona mute,
``/q`` quit) or words said to the persona, whose answers are printed, as is what the server
heard the user say into the microphone (``heard: ...``). Standard input is read without a
thread (the event loop watches it), so quitting never waits on a blocked read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable

from dpkit.client.conversation import RecognizeResult
from dpkit.client.persona import Persona
from dpkit.client.scene import Scene
from dpkit.errors import DpkitError

HELP_LINE = "type to talk to the persona; /m microphone, /c camera, /p persona mute, /q quit"

COMMANDS = {
    "/m": "microphone",
    "/mic": "microphone",
    "/c": "camera",
    "/cam": "camera",
    "/p": "mute",
    "/mute": "mute",
    "/q": "quit",
    "/quit": "quit",
}


class SessionKeys:
    """Reads lines from standard input and acts on them until quit or end of input."""

    def __init__(self, scene: Scene, say: Callable[[str], None], stop: asyncio.Event) -> None:
        self._scene = scene
        self.say = say
        self._stop = stop
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._partial = ""
        self.persona = Persona(scene)
        self.persona.on_conversation_result.add_listener(self._on_result)
        self.persona.on_speech.add_listener(self._on_speech)
        scene.on_recognize_results.add_listener(self._on_heard)

    @property
    def stopped(self) -> bool:
        """Whether the user asked to quit."""
        return self._stop.is_set()

    def _on_result(self, _persona: Persona, result: dict[str, object]) -> None:
        output = result.get("output")
        if isinstance(output, dict) and output.get("text"):
            self.say(f"persona: {output['text']}")

    def _on_heard(
        self,
        _scene: Scene,
        status: int,
        error_message: str,
        results: tuple[RecognizeResult, ...],
    ) -> None:
        """What the server heard the user say: each final result, or why it cannot listen."""
        if status != 0:
            self.say(f"speech recognition: {error_message or f'status {status}'}")
            return
        for result in results:
            if result.final and result.transcript:
                self.say(f"heard: {result.transcript}")

    def _on_speech(self, _persona: Persona, state: str, text: str) -> None:
        self.say(f"  (persona {state})" if state != "speaking" else "  (persona speaking)")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stdin = sys.stdin.fileno()
        loop.add_reader(stdin, self._readable)
        self.say(HELP_LINE)
        try:
            while (line := await self._lines.get()) is not None:
                await self.act(line.strip())
                if self.stopped:
                    return
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(stdin)

    def _readable(self) -> None:
        # Read what is there, unbuffered: a buffered readline would keep the lines after the
        # first where the event loop cannot see them.
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            self._lines.put_nowait(None)
            return
        self._partial += chunk.decode("utf-8", "replace")
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._lines.put_nowait(line)

    async def act(self, line: str) -> None:
        """Act on one line the user typed: a command, or text to the persona."""
        if not line:
            return
        command = COMMANDS.get(line.lower())
        try:
            if command == "quit":
                self._stop.set()
            elif command == "microphone":
                active = not self._scene.is_microphone_active()
                await self._scene.set_media_device_active(microphone=active)
                self.say(f"microphone {'on' if active else 'off'}")
            elif command == "camera":
                active = not self._scene.is_camera_active()
                await self._scene.set_media_device_active(camera=active)
                self.say(f"camera {'on' if active else 'off'}")
            elif command == "mute":
                muted = not self._scene.is_persona_muted()
                await self._scene.set_persona_muted(muted)
                self.say("persona muted" if muted else "persona unmuted")
            elif line.startswith("/"):
                self.say(f"unknown command {line}: {HELP_LINE}")
            else:
                self.say(f"you: {line}")
                await self.persona.conversation_send(line)
        except DpkitError as exc:
            self.say(f"{exc.name}: {exc.message}")


async def run_keys(scene: Scene, say: Callable[[str], None], stop: asyncio.Event) -> None:
    """Run the interactive session; end of input simply stops reading."""
    with contextlib.suppress(NotImplementedError):  # no add_reader on this platform's loop
        await SessionKeys(scene, say, stop).run()
