"""The unmodified Web SDK in Chromium over https and wss, against dpkit serving TLS itself.

Why TLS matters: a browser gives a page the microphone and camera only in a secure context,
which off loopback means https; and the Web SDK fetches its telemetry token only when the socket
is ``wss://``. The certificate is self-signed, made by the test; Chromium is told to accept it
(``--ignore-certificate-errors``, which covers the page, its fetches and the WebSocket), and
``--host-resolver-rules`` gives it a name that is not loopback-looking, ``dpkit.test``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from dpkit.server import DpkitServer
from dpkit.server.journal import SqliteJournal
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.test_web_sdk import CONNECT_STATES, connect, open_page, progress
from tests.certificates import Certificate, self_signed
from tests.support import ServerFactory

#: A name that is not loopback to the browser, resolved to 127.0.0.1 by Chromium itself.
NAME = "dpkit.test"
TLS_ARGS = ["--ignore-certificate-errors", f"--host-resolver-rules=MAP {NAME} 127.0.0.1"]


@pytest.fixture
async def tls_browser() -> AsyncIterator[Browser]:
    """Chromium with fake devices that accepts the test's certificate and resolves dpkit.test."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *TLS_ARGS]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def tls_server(start_server: ServerFactory, tmp_path: Path) -> DpkitServer:
    """A server with a self-signed certificate for 127.0.0.1, localhost and dpkit.test."""
    certificate: Certificate = self_signed(tmp_path / "tls", ("127.0.0.1", "localhost", NAME))
    server: DpkitServer = await start_server(tls_cert=certificate.cert, tls_key=certificate.key)
    return server


def offered_devices(server: DpkitServer, session_id: str) -> tuple[str, bool | None, bool | None]:
    """The client kind, and whether its offer carried a microphone and a camera (the journal)."""
    journal = SqliteJournal.in_data_dir(server.settings.data_dir)
    try:
        record = journal.show(session_id)
    finally:
        journal.close()
    assert record is not None
    return record.client_kind, record.microphone, record.camera


async def test_web_sdk_connects_over_https_and_wss_with_fake_devices(
    tls_server: DpkitServer, tls_browser: Browser
) -> None:
    """At https://127.0.0.1: secure context, mic and camera offered, 25/50/75/100, telemetry."""
    assert tls_server.url.startswith("https://127.0.0.1:")
    page = await open_page(tls_browser, tls_server.url, permissions=["microphone", "camera"])
    assert await page.evaluate("window.isSecureContext") is True
    seen = await connect(page)
    assert seen["error"] is None
    assert progress(seen["states"]) == CONNECT_STATES
    assert list(tls_server.state.sessions) == [seen["sessionId"]]
    assert offered_devices(tls_server, seen["sessionId"]) == ("browser", True, True)
    # The SDK asks https://<socket host>/api/telemetry/jwt only when its socket is wss://.
    assert tls_server.state.telemetry_tokens >= 1


async def test_off_loopback_only_https_gives_the_page_its_devices(
    tls_server: DpkitServer, start_server: ServerFactory, tls_browser: Browser
) -> None:
    """At http://dpkit.test there is no navigator.mediaDevices and connect fails; https works."""
    plain_server: DpkitServer = await start_server()
    plain = await open_page(
        tls_browser, f"http://{NAME}:{plain_server.port}", permissions=["microphone", "camera"]
    )
    assert await plain.evaluate("[window.isSecureContext, typeof navigator.mediaDevices]") == [
        False,
        "undefined",
    ]
    failed = await connect(plain)
    assert failed["error"] is not None
    assert "getUserMedia" in failed["error"]["message"]
    # The page says why, and what to do, instead of the SDK's TypeError alone.
    assert "not served over https" in (await plain.text_content("#error-advice") or "")
    # It failed before any session socket was opened, and no telemetry token was asked for.
    assert (plain_server.state.live, list(plain_server.state.ended)) == (set(), [])
    assert (plain_server.state.sessions, plain_server.state.telemetry_tokens) == ({}, 0)

    secure = await open_page(
        tls_browser, f"https://{NAME}:{tls_server.port}", permissions=["microphone", "camera"]
    )
    assert await secure.evaluate("[window.isSecureContext, typeof navigator.mediaDevices]") == [
        True,
        "object",
    ]
    seen = await connect(secure)
    assert seen["error"] is None
    assert progress(seen["states"]) == CONNECT_STATES
    assert offered_devices(tls_server, seen["sessionId"]) == ("browser", True, True)
    assert tls_server.state.telemetry_tokens >= 1
