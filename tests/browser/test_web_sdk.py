"""The unmodified Web SDK, in a real Chromium, connecting to a real dpkit serve through the page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from playwright.async_api import Browser, Page

from dpkit.server import DpkitServer
from dpkit.server.journal import SqliteJournal
from dpkit.server.page import WEB_DIR, find_web_sdk
from tests.support import UNIT, ServerFactory, serving, until

#: connect() resolved and the Connected state reported (the SDK may do either first).
CONNECTED = (
    "window.dpkitPage.sessionId !== null"
    " && window.dpkitPage.states.some(s => s.name === 'Connected')"
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
MS = int(1000 * UNIT)


async def open_page(
    browser: Browser,
    url: str,
    *,
    permissions: list[str] | None = None,
    width: int = 1280,
    height: int = 800,
    **settings: Any,
) -> Page:
    """The reference page with the given device settings; only ``permissions`` are granted."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    if permissions:
        await context.grant_permissions(permissions)
    page = await context.new_page()
    query = {key: str(value) for key, value in settings.items()}
    await page.goto(f"{url}/?{urlencode(query)}")
    await page.wait_for_selector("body[data-ready=true]")
    return page


async def connect(page: Page) -> dict[str, Any]:
    """Click Connect and wait until connect() resolved or failed; return what the page saw."""
    await page.click("#connect")
    await page.wait_for_function(f"({CONNECTED}) || window.dpkitPage.error", timeout=20 * MS)
    seen: dict[str, Any] = await page.evaluate("window.dpkitPage")
    return {key: seen[key] for key in ("states", "sessionId", "error", "disconnects")}


def progress(states: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    return [(s["name"], s["currentStep"], s["percentageLoaded"]) for s in states]


CONNECT_STATES = [
    ("SearchingForDigitalPerson", 1, 25),
    ("DownloadingAssets", 2, 50),
    ("ConnectingToDigitalPerson", 3, 75),
    ("Connected", 4, 100),
]
NO_DEVICES: dict[str, Any] = {
    "request_microphone": 0,
    "request_camera": 0,
    "require_microphone": 0,
    "require_camera": 0,
}


async def video_time(page: Page) -> float:
    value: float = await page.evaluate("document.getElementById('persona-video').currentTime")
    return value


async def test_connects_with_fake_devices_and_the_persona_video_plays(
    server: DpkitServer, browser: Browser
) -> None:
    """Connect passes 25/50/75/100; connect() gives the server's session id; video advances."""
    page = await open_page(browser, server.url, permissions=["microphone", "camera"])
    seen = await connect(page)
    assert seen["error"] is None
    assert progress(seen["states"]) == CONNECT_STATES
    assert list(server.state.sessions) == [seen["sessionId"]]
    first = await video_time(page)
    await page.wait_for_function(
        f"document.getElementById('persona-video').currentTime > {first + 0.5}", timeout=10 * MS
    )
    size = await page.evaluate(
        "[document.getElementById('persona-video').videoWidth,"
        " document.getElementById('persona-video').videoHeight]"
    )
    assert size == [320, 240]
    journal = SqliteJournal.in_data_dir(server.settings.data_dir)
    record = journal.show(seen["sessionId"])
    journal.close()
    assert record is not None
    assert (record.client_kind, record.microphone, record.camera) == ("browser", True, True)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "page-connected-desktop.png"))
    phone = await open_page(browser, server.url, width=390, height=844, **NO_DEVICES)
    await connect(phone)
    await phone.screenshot(path=str(ARTIFACTS / "page-connected-phone.png"), full_page=True)


async def test_required_microphone_denied_fails_before_any_socket(
    server: DpkitServer, browser: Browser
) -> None:
    """No permission for a required microphone: noUserMedia, and the server saw no socket."""
    page = await open_page(browser, server.url, request_camera=0)
    seen = await connect(page)
    assert seen["error"]["name"] == "noUserMedia"
    assert await page.is_visible("#error-panel")
    assert "unblock the devices" in (await page.text_content("#error-advice") or "")
    assert list(server.state.ended) == []
    assert server.state.live == set()


async def test_requested_only_microphone_denied_still_connects(
    server: DpkitServer, browser: Browser
) -> None:
    """A microphone only requested and refused: the session connects without it."""
    page = await open_page(browser, server.url, request_camera=0, require_microphone=0)
    seen = await connect(page)
    assert seen["error"] is None
    assert progress(seen["states"]) == CONNECT_STATES
    assert await page.text_content("#microphone-state") == "off"


async def test_no_devices_connects_without_asking(server: DpkitServer, browser: Browser) -> None:
    """Nothing requested or required: connects with no permission at all, camera reported off."""
    page = await open_page(browser, server.url, **NO_DEVICES)
    seen = await connect(page)
    assert seen["error"] is None
    session = server.state.sessions[seen["sessionId"]]
    await until(lambda: session.info.user_camera == [False])


async def test_camera_toggle_reaches_the_server(server: DpkitServer, browser: Browser) -> None:
    """Camera on and off: isCameraActive follows, userCamera matches, camera frames start/stop."""
    page = await open_page(
        browser,
        server.url,
        permissions=["camera"],
        request_microphone=0,
        require_microphone=0,
        request_camera=0,
    )
    seen = await connect(page)
    session = server.state.sessions[seen["sessionId"]]
    await until(lambda: session.info.user_camera == [False])
    assert session.received_frames.get("video", 0) == 0

    await page.click("#toggle-camera")
    await page.wait_for_function("window.dpkitPage.scene.isCameraActive() === true")
    assert await page.text_content("#camera-state") == "on"
    await until(lambda: session.info.user_camera == [False, True])
    await until(lambda: session.received_frames.get("video", 0) > 10)

    await page.click("#toggle-camera")
    await page.wait_for_function("window.dpkitPage.scene.isCameraActive() === false")
    await until(lambda: session.info.user_camera == [False, True, False])
    await asyncio.sleep(0.5 * UNIT)  # let frames already in flight land
    stopped_at = session.received_frames["video"]
    await asyncio.sleep(1.0 * UNIT)
    assert session.received_frames["video"] <= stopped_at + 2


async def test_busy_server_is_retried_until_a_person_frees_up(
    start_server: ServerFactory, browser: Browser
) -> None:
    """All Digital Persons busy: noScene is retried per retryOptions and succeeds once free."""
    server = await start_server(capacity=1, queue_max_length=0)
    first = await open_page(browser, server.url, **NO_DEVICES)
    await connect(first)
    second = await open_page(browser, server.url, maxRetries=200, delayMs=50, **NO_DEVICES)
    await second.click("#connect")
    await until(lambda: sum(i.ending == "noScene" for i in server.state.ended) >= 2)
    await first.click("#disconnect")
    await second.wait_for_function(CONNECTED, timeout=20 * MS)
    seen = await second.evaluate("window.dpkitPage")
    assert seen["error"] is None
    assert list(server.state.sessions) == [seen["sessionId"]]
    # Every retry came back with the one token fetched for this connect(): a refused socket
    # does not spend it, and no retry was turned away for reusing it.
    retries = [info.token_id for info in server.state.ended if info.ending == "noScene"]
    connected = server.state.sessions[seen["sessionId"]].info.token_id
    assert len(retries) >= 2
    assert set(retries) == {connected}
    assert server.state.refusals["token_reuse"] == 0


async def test_busy_server_gives_no_scene_after_the_retries(
    start_server: ServerFactory, browser: Browser
) -> None:
    """With the person never freed, connect() fails with noScene after maxRetries attempts."""
    server = await start_server(capacity=1, queue_max_length=0)
    first = await open_page(browser, server.url, **NO_DEVICES)
    await connect(first)
    second = await open_page(browser, server.url, maxRetries=3, delayMs=20, **NO_DEVICES)
    seen = await connect(second)
    assert seen["error"]["name"] == "noScene"
    assert [i.ending for i in server.state.ended] == ["noScene"] * 3
    assert "retry" in (await second.text_content("#error-advice") or "")


async def test_server_ending_the_session_reaches_the_page(
    server: DpkitServer, browser: Browser
) -> None:
    """The server ends a session: the page's handler gets the reason; the bar shows Disconnected."""
    page = await open_page(browser, server.url, **NO_DEVICES)
    seen = await connect(page)
    await server.state.sessions[seen["sessionId"]].end("sessionTimeout")
    await page.wait_for_function("window.dpkitPage.disconnects.length === 1", timeout=10 * MS)
    after = await page.evaluate("window.dpkitPage")
    assert after["disconnects"] == [{"sessionId": seen["sessionId"], "reason": "sessionTimeout"}]
    assert await page.text_content("#state-name") == "Disconnected"
    assert await page.text_content("#disconnect-reason") == "sessionTimeout"


async def test_disconnect_from_the_page_is_recorded_as_normal(
    server: DpkitServer, browser: Browser
) -> None:
    """disconnect() in the page: the server records reason normal and frees the person."""
    page = await open_page(browser, server.url, **NO_DEVICES)
    seen = await connect(page)
    await page.click("#disconnect")
    await until(lambda: len(server.state.ended) == 1)
    assert [(i.session_id, i.ending) for i in server.state.ended] == [(seen["sessionId"], "normal")]
    assert server.state.pool.in_use == 0


async def serve_page_elsewhere(sdk_dir: Path) -> AsyncGenerator[str, None]:
    """The page's files on a second origin (another port), as a customer's site would host it."""

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static/", WEB_DIR)
    app.router.add_static("/sdk/", sdk_dir)
    async with serving(app) as origin:
        yield origin


async def test_page_on_another_origin_connects_with_an_api_key(
    server: DpkitServer, browser: Browser
) -> None:
    """A page on another origin connects with a key that allows its origin, not with the page's."""
    sdk_dir = find_web_sdk(server.settings)
    assert sdk_dir is not None, "the Web SDK is not installed: run scripts/setup"
    elsewhere = serve_page_elsewhere(sdk_dir)
    origin = await anext(elsewhere)
    try:
        assert origin != server.url
        refused = await open_page(browser, origin, apiKey=server.api_key(), **NO_DEVICES)
        seen = await connect(refused)
        assert seen["error"]["name"] == "serverConnectionFailed"
        assert server.state.refusals["origin"] == 1
        server.state.keys.add("kiosk", origins=(origin,))
        page = await open_page(browser, origin, apiKey=server.api_key("kiosk"), **NO_DEVICES)
        seen = await connect(page)
        assert seen["error"] is None
        assert progress(seen["states"]) == CONNECT_STATES
        assert list(server.state.sessions) == [seen["sessionId"]]
    finally:
        await elsewhere.aclose()


async def test_mute_button_mutes_the_persona_video(server: DpkitServer, browser: Browser) -> None:
    """The mute button sets video.muted (the seed's approach) and back; its label follows."""
    page = await open_page(browser, server.url, **NO_DEVICES)
    await connect(page)
    muted = "document.getElementById('persona-video').muted"
    assert await page.evaluate(muted) is False
    await page.click("#toggle-mute")
    assert await page.evaluate(muted) is True
    assert await page.text_content("#toggle-mute") == "Persona muted"
    await page.click("#toggle-mute")
    assert await page.evaluate(muted) is False


async def test_text_box_sends_a_scene_request_that_is_answered(
    server: DpkitServer, browser: Browser
) -> None:
    """Text sent with conversationSend is answered by the persona, shown in the conversation."""
    page = await open_page(browser, server.url, **NO_DEVICES)
    await connect(page)
    await page.fill("#chat-text", "hello there")
    await page.click("#chat-send")
    await page.wait_for_function(
        "window.dpkitPage.conversation.some(line => line.text === \"Hi there! It's nice to meet"
        ' you.")',
        timeout=10 * MS,
    )
    lines = await page.evaluate("window.dpkitPage.conversation")
    assert {"who": "user", "text": "hello there"} in lines
    assert {"who": "persona", "text": "Hi there! It's nice to meet you."} in lines


async def test_page_waits_in_the_queue_and_connects_when_a_person_frees_up(
    start_server: ServerFactory, browser: Browser
) -> None:
    """The browser ignores dpkit's queue frames: it stays Searching, then connects in turn."""
    server = await start_server(capacity=1)
    first = await open_page(browser, server.url, **NO_DEVICES)
    await connect(first)
    second = await open_page(browser, server.url, **NO_DEVICES)
    await second.click("#connect")
    await until(lambda: server.state.pool.queue_length == 1)
    # The socket is open on both sides; the page shows it once its 'open' event has run.
    await second.wait_for_function(
        "document.getElementById('state-name').textContent === 'SearchingForDigitalPerson'",
        timeout=5 * MS,
    )
    await asyncio.sleep(0.3 * UNIT)  # still waiting a moment later: it stays in the queue
    assert await second.text_content("#state-name") == "SearchingForDigitalPerson"
    await first.click("#disconnect")
    await second.wait_for_function(CONNECTED, timeout=20 * MS)
    seen = await second.evaluate("window.dpkitPage")
    assert progress(seen["states"]) == CONNECT_STATES
    assert [i.ending for i in server.state.ended] == ["normal"]


async def test_browser_resumes_its_session_across_a_page_load(
    server: DpkitServer, browser: Browser
) -> None:
    """With a persistent key, reloading the page and connecting again resumes the same session."""
    server.state.keys.add("persistent", persistence=True, origins=("self",))
    key = server.api_key("persistent")
    page = await open_page(browser, server.url, apiKey=key, **NO_DEVICES)
    first = await connect(page)
    assert first["error"] is None
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]")
    await until(lambda: first["sessionId"] in server.state.detached)
    again = await connect(page)
    assert again["error"] is None
    assert again["sessionId"] == first["sessionId"]
    assert progress(again["states"]) == CONNECT_STATES
    assert list(server.state.sessions) == [first["sessionId"]]
