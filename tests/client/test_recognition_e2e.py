"""The Python client's conversation surface through the real recognizer, on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from dpkit import Scene
from dpkit.client.conversation import ConversationStateName, RecognizeResult
from dpkit.media.files import MediaFileDevices
from dpkit.server import PersonaSettings
from tests.server.recognition.speech import silence, spoken, write_wav
from tests.support import UNIT, ServerFactory


async def test_recognize_results_and_the_conversation_states_reach_the_scene(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """on_recognize_results: interims then a final; conversation: userSpeaking..idle in order."""
    server = await start_server(
        persona=PersonaSettings(video_width=160, video_height=120, greet_at_start=False)
    )
    wav = write_wav(
        tmp_path / "speech.wav",
        np.concatenate((silence(1.5), spoken("what can you do", "en-gb-x-rp", 140), silence(3))),
    )
    scene = Scene(
        server.api_key(),
        requested_media_devices={"microphone": True},
        required_media_devices={},
        devices=MediaFileDevices(wav, loop=False),
    )
    results: list[tuple[int, str, tuple[RecognizeResult, ...]]] = []
    states: list[ConversationStateName] = []
    answered = asyncio.Event()
    scene.on_recognize_results.add_listener(
        lambda _scene, status, error, got: results.append((status, error, got))
    )

    def changed(state: ConversationStateName) -> None:
        states.append(state)
        if state is ConversationStateName.IDLE and ConversationStateName.DP_SPEAKING in states:
            answered.set()

    scene.conversation.on_conversation_state_updated.add_listener(changed)
    async with scene:
        await scene.connect()
        await asyncio.wait_for(answered.wait(), 40 * UNIT)
        assert scene.conversation.state is ConversationStateName.IDLE
        turn = list(states)  # closing resets the state to idle once more, as the Web SDK's does
    assert turn == [
        ConversationStateName.USER_SPEAKING,
        ConversationStateName.DP_PROCESSING,
        ConversationStateName.DP_SPEAKING,
        ConversationStateName.IDLE,
    ]
    assert all((status, error) == (0, "") for status, error, _ in results)
    finals = [got[0] for _, _, got in results if got and got[0].final]
    assert len(finals) == 1
    assert {"what", "can", "you", "do"} <= set(finals[0].transcript.split())
    assert 0.0 <= finals[0].alternatives[0].confidence <= 1.0
    interims = [got[0] for _, _, got in results if got and not got[0].final]
    assert interims
    assert results[-1][2][0] == finals[0]  # the final result came last
