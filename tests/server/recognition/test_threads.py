"""Listening holds no thread of the event loop's default executor.

The server's other blocking work (the persona's speech synthesis, asset and file reads) runs in
that executor, which has only ``min(32, cores + 4)`` threads. A listener that kept one of them
for the whole session would, from that many sessions on, leave the persona unable to speak.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import Any

from dpkit import NoDevices, Persona, Scene
from dpkit.protocol.messages import Frame, SceneEvent
from dpkit.server import PersonaSettings
from tests.support import UNIT, ServerFactory, until

#: asyncio's default executor size on this machine.
DEFAULT_EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)


async def test_more_sessions_than_executor_threads_still_speak(
    start_server: ServerFactory,
) -> None:
    """With one session more than the default executor has threads, the last one's persona
    still answers by voice."""
    sessions = DEFAULT_EXECUTOR_THREADS + 1
    persona = PersonaSettings(
        video_width=64, video_height=48, video_fps=5, greet_at_start=False, recognition=True
    )
    server = await start_server(capacity=sessions, persona=persona)
    async with AsyncExitStack() as stack:
        scenes = []
        for _ in range(sessions):
            scene = Scene(
                server.api_key(),
                requested_media_devices={},
                required_media_devices={},
                devices=NoDevices(),
            )
            await stack.enter_async_context(scene)
            await scene.connect()
            scenes.append(scene)
        last = scenes[-1]
        states: list[dict[str, Any]] = []

        def on_message(frame: Frame) -> None:
            if isinstance(frame, SceneEvent) and frame.name == "state":
                states.append(frame.body)

        last.on_message.add_listener(on_message)
        await Persona(last).conversation_send("hello")
        await until(
            lambda: any(s["persona"]["1"]["speechState"] == "speaking" for s in states),
            15 * UNIT,
        )
