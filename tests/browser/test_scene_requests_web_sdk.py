"""Each scene request from the unmodified Web SDK in Chromium: its status and its body."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser

from dpkit.server import PersonaSettings
from tests.browser.test_web_sdk import MS, NO_DEVICES, connect, open_page
from tests.support import ServerFactory

#: Runs in the page: each request through the SDK's own methods, resolved body or rejection.
REQUESTS = """async () => {
  const scene = window.dpkitPage.scene;
  const persona = window.dpkitPage.persona;
  const answer = async (promise) => {
    try {
      return {status: 0, body: await promise};
    } catch (error) {
      return {status: error.status, name: error.requestName, body: error.responseBody};
    }
  };
  return {
    set: await answer(persona.conversationSetVariables({name: "Sam", visits: 3})),
    get: await answer(persona.conversationGetVariables()),
    badSet: await answer(persona.conversationSetVariables("not an object")),
    configure: await answer(scene.configure(
      {audio: {squelchLevel: 0.5}, statistics: {intervalSeconds: 10}, preset: "studio"})),
    badConfigure: await answer(scene.configure({audio: {squelchLevel: "loud"}})),
    camera: await answer(persona.animateToNamedCameraWithOrbitPan("CloseUp", 1, 0, 0, 0, 0)),
    content: await answer(scene.sendRequest("updateContentAwareness", {
      viewWidth: window.innerWidth, viewHeight: window.innerHeight,
      videoFrame: {x1: 0, y1: 0, x2: 640, y2: 480},
      content: [{id: "card", x1: 10, y1: 10, x2: 100, y2: 60}]})),
    state: await answer(scene.getState()),
    internal: await answer(persona.playAnimation({})),
    unknown: await answer(scene.sendRequest("makeCoffee", {})),
  };
}"""

#: Listens to the persona's speech markers through the SDK's event, then makes it speak.
SPEAK = """async () => {
  window.markers = [];
  window.dpkitPage.persona.onSpeechMarkerEvent.addListener(
    (persona, marker) => window.markers.push(
      {...marker, cards: Array.from(window.dpkitPage.scene.conversation.activeCardIds)}));
  return await window.dpkitPage.persona.startSpeaking(
    "@showcards(menu) Here is the menu. @marker(wave) @hidecards()");
}"""


async def test_each_scene_request_from_the_web_sdk_is_answered(
    start_server: ServerFactory, browser: Browser
) -> None:
    """Variables round trip, configure, camera, content awareness, getState; refusals named."""
    server = await start_server(
        persona=PersonaSettings(video_width=320, video_height=240, greet_at_start=False)
    )
    page = await open_page(browser, server.url, **NO_DEVICES)
    assert (await connect(page))["error"] is None
    seen: dict[str, Any] = await page.evaluate(REQUESTS)

    assert seen["set"] == {"status": 0, "body": {}}
    assert seen["get"] == {"status": 0, "body": {"variables": {"name": "Sam", "visits": 3}}}
    assert seen["badSet"]["status"] == 1
    assert seen["badSet"]["body"]["error"].startswith("badVariables: conversationSetVariables:")
    assert seen["configure"] == {
        "status": 0,
        "body": {
            "applied": ["audio.squelchLevel", "statistics.intervalSeconds"],
            "ignored": ["preset"],
        },
    }
    assert seen["badConfigure"]["status"] == 1
    assert "'audio.squelchLevel' must be a finite number" in seen["badConfigure"]["body"]["error"]
    assert seen["camera"] == {"status": 0, "body": {}}
    assert seen["content"] == {"status": 0, "body": {}}
    assert seen["state"]["status"] == 0
    assert seen["state"]["body"]["persona"]["1"]["speechState"] in ("idle", "speaking")
    assert seen["state"]["body"]["session"]["sessionId"] == await page.evaluate(
        "window.dpkitPage.sessionId"
    )
    assert seen["internal"]["status"] == 1
    assert seen["internal"]["name"] == "playAnimation"
    assert seen["internal"]["body"]["error"].startswith("platformOnly: 'playAnimation'")
    assert seen["unknown"]["status"] == 1
    assert seen["unknown"]["body"]["error"].startswith("unknownRequest: 'makeCoffee'")


async def test_the_persona_speech_reaches_the_sdk_as_speech_markers(
    start_server: ServerFactory, browser: Browser
) -> None:
    """startSpeaking with markers: persona.onSpeechMarkerEvent fires each, in order."""
    server = await start_server(
        persona=PersonaSettings(video_width=320, video_height=240, greet_at_start=False)
    )
    page = await open_page(browser, server.url, **NO_DEVICES)
    assert (await connect(page))["error"] is None
    assert await page.evaluate(SPEAK) == {}
    await page.wait_for_function("window.markers.length === 3", timeout=10 * MS)
    markers = await page.evaluate("window.markers")
    # With each one, the SDK's content-card state as it stood: the card shown, then hidden.
    assert markers == [
        {"personaId": "1", "name": "showcards", "arguments": ["menu"], "cards": ["menu"]},
        {"personaId": "1", "name": "marker", "arguments": ["wave"], "cards": ["menu"]},
        {"personaId": "1", "name": "hidecards", "arguments": [], "cards": []},
    ]
