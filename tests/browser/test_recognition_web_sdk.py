"""The unmodified Web SDK in Chromium hears the user: a WAV as its fake microphone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser, Page, async_playwright

from dpkit.server import DpkitServer, PersonaSettings
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.test_web_sdk import ARTIFACTS, CONNECTED, MS, open_page
from tests.server.recognition.speech import silence, spoken, write_wav
from tests.support import ServerFactory

#: What the tests' listeners record, added through the SDK's own events as soon as the page has
#: its Scene (before the session exists, so nothing it reports is missed).
RECORD = """() => {
  const scene = window.dpkitPage.scene;
  const seen = { results: [], states: [], answers: [] };
  window.heard = seen;
  scene.onRecognizeResultsEvent.addListener((_scene, status, errorMessage, results) => {
    seen.results.push({ status, errorMessage, results });
  });
  scene.conversation.onConversationStateUpdated.addListener((state) => seen.states.push(state));
  new window.Persona(scene, 1).onConversationResultEvent.addListener((_persona, result) => {
    seen.answers.push(result);
  });
}"""
FINALS = "window.heard.results.filter(r => r.results.length && r.results[0].final)"
QUIET = "window.heard.states.length > 0 && window.heard.states.at(-1) === 'idle'"


@pytest.fixture
async def hearing_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Chromium whose fake microphone says "what can you do" (another voice than the persona's).

    Chromium loops the file: 2.5 s of silence, the phrase, then 8 s of silence, so each
    utterance is whole and ends before the next begins, and a session that connects while
    the phrase plays hears it whole on the next turn.
    """
    phrase = spoken("what can you do", "en-us-nyc", 180)
    wav = write_wav(tmp_path / "user.wav", np.concatenate((silence(2.5), phrase, silence(8))))
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield launched
        finally:
            await launched.close()


async def hearing_server(start_server: ServerFactory) -> DpkitServer:
    """A server whose persona does not greet, so the user's speech is the first thing said."""
    persona = PersonaSettings(video_width=320, video_height=240, video_fps=15, greet_at_start=False)
    server: DpkitServer = await start_server(persona=persona)
    return server


async def connect_listening(browser: Browser, server: DpkitServer) -> Page:
    """Open the page with a microphone (no camera), record the SDK's events, connect."""
    page = await open_page(
        browser, server.url, permissions=["microphone"], request_camera=0, require_camera=0
    )
    await page.click("#connect")
    await page.evaluate(RECORD)
    await page.wait_for_function(f"({CONNECTED}) || window.dpkitPage.error", timeout=20 * MS)
    assert await page.evaluate("window.dpkitPage.error") is None
    return page


def words(result: dict[str, Any]) -> set[str]:
    return set(result["results"][0]["alternatives"][0]["transcript"].split())


async def test_the_web_sdk_gets_recognize_results_and_the_conversation_states(
    start_server: ServerFactory, hearing_browser: Browser
) -> None:
    """Interim then final recognizeResults, the HELP answer, userSpeaking..idle in the SDK."""
    server = await hearing_server(start_server)
    page = await connect_listening(hearing_browser, server)
    await page.wait_for_function(
        "window.heard.answers.some(a => a.output.context.intent === 'HELP')", timeout=40 * MS
    )
    await page.wait_for_function(QUIET, timeout=30 * MS)
    heard: dict[str, Any] = await page.evaluate("window.heard")
    finals: list[dict[str, Any]] = await page.evaluate(FINALS)

    helped = next(a for a in heard["answers"] if a["output"]["context"]["intent"] == "HELP")
    transcript = helped["input"]["text"]
    final = next(
        f for f in finals if f["results"][0]["alternatives"][0]["transcript"] == transcript
    )
    assert {"what", "can", "you", "do"} <= words(final)
    assert (final["status"], final["errorMessage"]) == (0, "")
    # Interim results came before that final one, in the same utterance.
    before = heard["results"][: heard["results"].index(final)]
    assert any(r["results"] and not r["results"][0]["final"] for r in before)
    assert helped["output"]["text"]
    # The SDK's own ConversationState walked one turn in order (each state once, on change).
    states = heard["states"]
    start = states.index("userSpeaking")
    assert states[start : start + 4] == ["userSpeaking", "dpProcessing", "dpSpeaking", "idle"]


async def test_the_page_shows_what_the_persona_hears(
    start_server: ServerFactory, hearing_browser: Browser
) -> None:
    """The page shows the interim text while the user speaks, then a "you (heard)" line."""
    server = await hearing_server(start_server)
    page = await connect_listening(hearing_browser, server)
    await page.wait_for_selector("#heard-interim:not([hidden])", timeout=40 * MS)
    interim = await page.text_content("#heard-interim-text") or ""
    assert interim.strip()
    await page.wait_for_selector("#conversation li.heard", timeout=20 * MS)
    await page.wait_for_selector("#conversation li.persona", timeout=20 * MS)
    heard = await page.text_content("#conversation li.heard") or ""
    assert heard.startswith("you (heard) ")
    assert {"what", "can", "you", "do"} <= set(heard.removeprefix("you (heard) ").split())
    assert await page.is_hidden("#heard-interim")
    lines = await page.evaluate("window.dpkitPage.conversation")
    assert [line["who"] for line in lines[:2]] == ["heard", "persona"]
    assert lines[0]["text"] == heard.removeprefix("you (heard) ")
    await page.wait_for_function(QUIET, timeout=30 * MS)
    assert await page.text_content("#conversation-state") == "idle"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "page-heard.png"))
