"""The reference page's states in a real Chromium against a real dpkit serve: the queue, Cancel,
the sidebar after a session ends, the disconnect reason in words, and a refused API key."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from dpkit.apikey import ApiKey, decode_api_key
from dpkit.server import DpkitServer
from dpkit.server.web_sdk import WebSdkProvider, resolve_web_sdk
from tests.browser.test_web_sdk import ARTIFACTS, CONNECTED, MS, NO_DEVICES, connect, open_page
from tests.support import ServerFactory, serving, until

PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


async def text(page: Page, selector: str) -> str:
    return (await page.text_content(selector) or "").strip()


async def settled(page: Page) -> None:
    """Wait for the page's transitions (the progress bar's) to finish, for a true screenshot."""
    await page.wait_for_function(
        "document.getAnimations().every(a => a.playState !== 'running')", timeout=5 * MS
    )


async def last_disconnect(page: Page) -> tuple[str, str]:
    return await text(page, "#disconnect-words"), await text(page, "#disconnect-reason")


QUEUE_TEXT = re.compile(
    r"Waiting for a Digital Person: position (\d+) of (\d+), about (\d+) s", re.ASCII
)


async def queue_shown(page: Page) -> tuple[int, int, int] | None:
    if not await page.is_visible("#queue-status"):
        return None
    match = QUEUE_TEXT.fullmatch(await text(page, "#queue-text"))
    assert match is not None, await text(page, "#queue-text")
    position, size, seconds = (int(group) for group in match.groups())
    return position, size, seconds


async def wait_for_queue(page: Page, position: int, size: int) -> dict[str, int]:
    await page.wait_for_function(
        "window.dpkitPage.queue !== null"
        f" && window.dpkitPage.queue.position === {position}"
        f" && window.dpkitPage.queue.size === {size}",
        timeout=10 * MS,
    )
    queue: dict[str, int] = await page.evaluate("window.dpkitPage.queue")
    return queue


async def test_queued_page_shows_its_place_and_cancel_leaves_the_queue(
    start_server: ServerFactory, browser: Browser
) -> None:
    """Queued: 'position N of M, about S s' from dpkit/queue; Cancel leaves; the next moves up."""
    server = await start_server(capacity=1)
    first = await open_page(browser, server.url, **NO_DEVICES)
    assert (await connect(first))["error"] is None
    second = await open_page(browser, server.url, **NO_DEVICES)
    await second.click("#connect")
    await until(lambda: server.state.pool.queue_length == 1)
    third = await open_page(browser, server.url, **NO_DEVICES)
    await third.click("#connect")
    await until(lambda: server.state.pool.queue_length == 2)

    queue = await wait_for_queue(third, 2, 2)
    assert await queue_shown(third) == (2, 2, round(queue["etaMs"] / 1000))
    assert await text(third, "#state-name") == "SearchingForDigitalPerson"
    assert await third.is_visible("#cancel")
    assert await third.is_enabled("#cancel")
    assert not await third.is_enabled("#connect")
    assert not await third.is_enabled("#disconnect")
    await wait_for_queue(second, 1, 2)
    ARTIFACTS.mkdir(exist_ok=True)
    await settled(third)
    await third.screenshot(path=str(ARTIFACTS / "page-queued.png"))

    await second.click("#cancel")
    await until(lambda: server.state.pool.queue_length == 1)
    # The third moves up to first, and is told so.
    await wait_for_queue(third, 1, 1)
    assert (await queue_shown(third) or (0, 0, 0))[:2] == (1, 1)
    # The cancelled page is back where it started, with no error, saying what happened.
    assert await queue_shown(second) is None
    assert await second.evaluate("window.dpkitPage.error") is None
    assert not await second.is_visible("#error-panel")
    assert await text(second, "#state-name") == "Disconnected"
    assert await second.is_enabled("#connect")
    assert not await second.is_visible("#cancel")
    assert await last_disconnect(second) == ("you cancelled the connection", "cancelled")

    # The person freed goes to the third, not to the page that cancelled.
    await first.click("#disconnect")
    await third.wait_for_function(CONNECTED, timeout=20 * MS)
    assert await queue_shown(third) is None
    assert not await third.is_visible("#cancel")
    sessions = list(server.state.sessions)
    assert sessions == [await third.evaluate("window.dpkitPage.sessionId")]


class GatedTokens:
    """A token endpoint on another loopback port that answers only when released.

    It asks the real server for the token (as a client that is not a browser) and hands it to
    the page, so a page can be held in the Web SDK's token request, before any socket.
    """

    def __init__(self, server: DpkitServer) -> None:
        self.server = server
        self.release = asyncio.Event()
        self.asked = 0
        self.url = ""

    async def token(self, request: web.Request) -> web.Response:
        cors = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Headers": "key",
        }
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=cors)
        self.asked += 1
        await self.release.wait()
        headers = {"key": self.server.api_key()}
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.server.url + "/api/token", headers=headers) as answer,
        ):
            body = await answer.json()
        return web.json_response(body, headers=cors)


@pytest.fixture
async def gated(server: DpkitServer) -> AsyncIterator[GatedTokens]:
    tokens = GatedTokens(server)
    app = web.Application()
    app.router.add_route("*", "/api/token", tokens.token)
    async with serving(app) as url:
        tokens.url = url
        yield tokens
        tokens.release.set()


async def test_cancel_while_connecting_ends_what_the_sdk_opens_later(
    server: DpkitServer, browser: Browser, gated: GatedTokens
) -> None:
    """Cancel during the token request: the page is idle at once; the late connect is ended."""
    key = decode_api_key(server.api_key())
    held = ApiKey(gated.url + "/api/token", key.key_id, key.secret).encode()
    page = await open_page(browser, server.url, apiKey=held, **NO_DEVICES)
    await page.click("#connect")
    await until(lambda: gated.asked == 1)
    assert await page.get_attribute("body", "data-phase") == "connecting"
    assert await page.is_enabled("#cancel")
    assert not await page.is_enabled("#connect")
    await page.click("#cancel")
    assert await page.get_attribute("body", "data-phase") == "idle"
    assert await page.is_enabled("#connect")
    assert await last_disconnect(page) == ("you cancelled the connection", "cancelled")

    gated.release.set()
    # The Web SDK goes on and connects the session it was asked for; the page ends it.
    outcome = await page.evaluate(
        "window.dpkitPage.connectPromise.then(() => 'resolved', (e) => 'rejected: ' + e.name)"
    )
    assert outcome == "resolved"
    await until(lambda: not server.state.live and server.state.pool.in_use == 0)
    assert [info.ending for info in server.state.ended] == ["normal"]
    assert await page.get_attribute("body", "data-phase") == "idle"
    assert await page.evaluate("window.dpkitPage.error") is None
    assert await text(page, "#session-id") == "—"


async def test_a_session_the_server_ends_resets_the_devices_and_says_why(
    server: DpkitServer, browser: Browser
) -> None:
    """Server-ended: microphone and camera read off, buttons off and disabled, reason in words."""
    page = await open_page(
        browser, server.url, permissions=["microphone", "camera"], require_microphone=1
    )
    seen = await connect(page)
    assert seen["error"] is None
    await page.wait_for_function(
        "document.getElementById('microphone-state').textContent === 'on'"
        " && document.getElementById('camera-state').textContent === 'on'",
        timeout=10 * MS,
    )
    assert await page.get_attribute("#toggle-microphone", "aria-pressed") == "true"
    assert await text(page, "#session-id") == seen["sessionId"]
    await page.wait_for_function(
        "document.getElementById('persona-video').currentTime > 0.5", timeout=10 * MS
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await settled(page)
    await page.screenshot(path=str(ARTIFACTS / "page-connected.png"))

    await server.state.sessions[seen["sessionId"]].end("sessionTimeout")
    await page.wait_for_function("window.dpkitPage.disconnects.length === 1", timeout=10 * MS)
    assert await text(page, "#microphone-state") == "off"
    assert await text(page, "#camera-state") == "off"
    for button, label in (
        ("#toggle-microphone", "Microphone off"),
        ("#toggle-camera", "Camera off"),
    ):
        assert await text(page, button) == label
        assert await page.get_attribute(button, "aria-pressed") == "false"
        assert not await page.is_enabled(button)
    assert await last_disconnect(page) == (
        "the session ended after a period of inactivity",
        "sessionTimeout",
    )
    assert await page.is_visible("#video-placeholder")
    assert await text(page, "#video-placeholder") == (
        "The session ended after a period of inactivity."
    )
    assert await text(page, "#session-id") == "—"
    assert await page.is_enabled("#connect")
    assert not await page.is_enabled("#disconnect")
    await settled(page)
    await page.screenshot(path=str(ARTIFACTS / "page-server-ended.png"))


def documented_disconnect_reasons() -> list[str]:
    """Every disconnect reason docs/protocol.md lists: the seed's, then dpkit's bullets."""
    doc = PROTOCOL_DOC.read_text()
    section = doc[doc.index("Disconnect reasons are the seed's") :]
    section = section[: section.index("\n## ")]
    seed = section[section.index("(") : section.index(")")]
    names = re.findall(r"`(\w+)`", seed)
    for bullet in re.findall(r"^- (.+?):", section, re.MULTILINE):
        names += re.findall(r"`(\w+)`", bullet)
    return names


async def test_every_documented_disconnect_reason_has_words(
    server: DpkitServer, browser: Browser
) -> None:
    """Each reason in docs/protocol.md (the seed's four and dpkit's) is said in words."""
    reasons = documented_disconnect_reasons()
    assert {"sessionTimeout", "conversationEnded", "controlDisconnected", "normal"} <= set(reasons)
    assert {"connectionLost", "mediaStreamFailed", "tooManySockets", "serverRestart"} <= set(
        reasons
    )
    page = await open_page(browser, server.url, **NO_DEVICES)
    words: dict[str, str] = await page.evaluate("window.dpkitDisconnectReasons")
    missing = [reason for reason in reasons if not words.get(reason)]
    assert missing == []
    assert len(set(words.values())) == len(words)  # no two reasons read the same
    # One more, for real: the conversation ends the session.
    seen = await connect(page)
    await server.state.sessions[seen["sessionId"]].end("conversationEnded")
    await page.wait_for_function("window.dpkitPage.disconnects.length === 1", timeout=10 * MS)
    assert await last_disconnect(page) == (words["conversationEnded"], "conversationEnded")


async def test_a_user_disconnect_is_kept_as_the_last_disconnect(
    server: DpkitServer, browser: Browser
) -> None:
    """Disconnect from the page: 'Last disconnect' says you ended it (normal), devices off."""
    page = await open_page(browser, server.url, **NO_DEVICES)
    assert await last_disconnect(page) == ("—", "")
    seen = await connect(page)
    assert seen["error"] is None
    await page.click("#disconnect")
    assert await last_disconnect(page) == ("you ended the session", "normal")
    assert await text(page, "#microphone-state") == "off"
    assert await text(page, "#state-name") == "Disconnected"
    await until(lambda: [i.ending for i in server.state.ended] == ["normal"])
    # And it stays so through the next connect, until that session ends.
    again = await connect(page)
    assert again["error"] is None
    assert await last_disconnect(page) == ("you ended the session", "normal")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def connect_with_key(
    browser: Browser, server: DpkitServer, api_key: str, screenshot: str = ""
) -> dict[str, Any]:
    page = await open_page(browser, server.url, apiKey=api_key, **NO_DEVICES)
    seen = await connect(page)
    assert seen["error"] is not None
    if screenshot:
        ARTIFACTS.mkdir(exist_ok=True)
        await settled(page)
        await page.screenshot(path=str(ARTIFACTS / screenshot))
    return {
        "name": seen["error"]["name"],
        "advice": await text(page, "#error-advice"),
        "token": await page.evaluate("window.dpkitPage.tokenAnswer"),
    }


async def test_a_refused_api_key_is_not_called_unreachable(
    server: DpkitServer, browser: Browser
) -> None:
    """401 from the token endpoint: 'refused the API key'; only no answer is 'not reached'."""
    key = decode_api_key(server.api_key())
    assert key.secret is not None
    wrong = ApiKey(key.auth_server, key.key_id, "x" * len(key.secret)).encode()
    refused = await connect_with_key(browser, server, wrong, "page-key-refused.png")
    assert refused["name"] == "serverConnectionFailed"
    assert refused["token"]["status"] == 401
    assert refused["advice"].startswith("The server refused the API key")
    assert "this server does not know it" in refused["advice"]  # the server's own words
    assert "could not be reached" not in refused["advice"]

    broken = await connect_with_key(browser, server, "bm90IGEga2V5")  # base64 of "not a key"
    assert broken["name"] == "serverConnectionFailed"
    assert broken["advice"].startswith("The API key is not a valid key")

    nowhere = ApiKey(f"http://127.0.0.1:{closed_port()}/api/token", key.key_id, key.secret)
    unreachable = await connect_with_key(browser, server, nowhere.encode())
    assert unreachable["name"] == "serverConnectionFailed"
    assert unreachable["token"]["status"] == 0
    assert "could not be reached" in unreachable["advice"]


async def test_a_page_without_the_web_sdk_says_why_at_once(
    server: DpkitServer, browser: Browser
) -> None:
    """Registry unreachable, no copy: the page loads and shows notInstalled with the remedy."""
    await server.state.web_sdk.close()
    unreachable = f"http://127.0.0.1:{closed_port()}"
    source = resolve_web_sdk(None, server.settings.data_dir, unreachable, checkouts=())
    server.state.web_sdk = WebSdkProvider(source)
    page = await open_page(browser, server.url, **NO_DEVICES)
    assert await page.is_visible("#error-panel")
    assert await text(page, "#error-name") == "notInstalled"
    message = await text(page, "#error-message")
    assert "registryUnreachable" in message
    assert unreachable in message
    assert "--web-sdk-dir" in message
    await page.click("#connect")  # still says so, and nothing is attempted
    assert await text(page, "#error-name") == "notInstalled"
    assert server.state.live == set()
