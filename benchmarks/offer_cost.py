"""The server's cost of one offer, from the offer frame's arrival to ``accepted`` sent: Chromium's
offer (the unmodified Web SDK) against the Python client's, in the same run on the same server.

Run with ``python benchmarks/offer_cost.py [--n 10] [--warmup 2] [--devices]``. It takes under a
minute, keeps all traffic on 127.0.0.1, prints milliseconds and the ratio and asserts nothing (the
exit status is always 0); whether the target was met is printed.

The server is a real ``dpkit serve`` in a process of its own (320x240 at 15 fps, capacity 1), as
in production: neither client's work shares its event loop. The browser is Debian's Chromium
(``/usr/bin/chromium``) driven by Playwright with the browser tests' flags (loopback-only ICE,
mDNS off, fake devices), on the page ``dpkit serve`` serves, which runs the Web SDK's own
``connect()``; the Python client is ``dpkit.Scene`` in this process. By default both ask for no
devices, so the offers differ only as the two stacks write them (``--devices``: both send a
microphone and a camera, four media sections each). The kinds alternate (the order swapped every
round), so whatever else the machine does slows both alike; the ``--warmup`` rounds are not
counted. Before every connect, of either kind, the machine is left to settle (a quarter of a
second, then until the page's main thread is idle), so the page's load and the last session's
teardown are not counted against the next offer.

The time is the server's own: a ``perf_counter`` interval from the moment it read the offer frame
to the moment it sent ``accepted`` (:attr:`SessionInfo.offer_to_accepted_s`), which its INFO line
for the connected session reports ("offer answered in ... ms"); this reads it from the log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # as the tests launch it

from dpkit import Scene, SyntheticDevices
from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.keys import KeyStore

NO_DEVICES = "request_microphone=0&request_camera=0&require_microphone=0&require_camera=0"
CONNECTED = (
    "window.dpkitPage.sessionId !== null"
    " && window.dpkitPage.states.some(s => s.name === 'Connected')"
)
LOOPBACK = ("127.0.0.1",)
TARGET_RATIO = 2.0
STEP_TIMEOUT_S = 30.0  # bounds every connect, and the server's start
POLL_S = 0.02
#: How long the machine is left alone before each timed connect (see _settle).
SETTLE_S = 0.25
#: Resolves once the page's main thread has nothing left to do (bounded: 1 s).
PAGE_IDLE = "() => new Promise(done => requestIdleCallback(() => done(), {timeout: 1000}))"
BANNER = re.compile(r"dpkit serve on (\S+)")
CONFIG = """[server]
host = "127.0.0.1"
port = 0
capacity = 1
ice_addresses = ["127.0.0.1"]
data_dir = {data_dir}
[server.persona]
video_width = 320
video_height = 240
video_fps = 15
"""


@dataclass
class Served:
    """A running ``dpkit serve``: its URL, its data directory and its log."""

    url: str
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api_key(self) -> str:
        record = KeyStore.load_or_create(self.data_dir).keys[0]
        return record.api_key(self.url + TOKEN_PATH)

    async def offer_ms(self, session_id: str) -> float:
        """The server's offer -> accepted for this session, from its 'connected' line."""
        pattern = re.compile(
            rf"session {re.escape(session_id)}: connected \(.*offer answered in ([0-9.]+) ms\)"
        )
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while (found := pattern.search(self.log())) is None:  # noqa: ASYNC110 - a log file
                await asyncio.sleep(POLL_S)
        return float(found.group(1))

    async def ended(self, session_id: str) -> None:
        """Wait until the server has released the session (its person is free again)."""
        line = f"session {session_id}: ended"
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while line not in self.log():  # noqa: ASYNC110 - another process's log file
                await asyncio.sleep(POLL_S)


@asynccontextmanager
async def _served(directory: Path) -> AsyncIterator[Served]:
    data_dir = directory / "data"
    config = directory / "dpkit.toml"
    config.write_text(CONFIG.format(data_dir=json.dumps(str(data_dir))))
    log_path = directory / "server.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dpkit",
            "--log-level",
            "INFO",
            "serve",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while (match := BANNER.search(log_path.read_text(errors="replace"))) is None:
                if process.returncode is not None:
                    raise RuntimeError(f"dpkit serve exited: {log_path.read_text()}")
                await asyncio.sleep(POLL_S)
        yield Served(match.group(1), data_dir, log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STEP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _python_offer(server: Served, devices: bool) -> float:
    wanted = {"microphone": devices, "camera": devices}
    scene = Scene(
        server.api_key(),
        requested_media_devices=wanted,
        required_media_devices=wanted,
        devices=SyntheticDevices(320, 240, 15),
        ice_addresses=LOOPBACK,
        play_audio=False,
    )
    session_id = await scene.connect(connect_timeout=STEP_TIMEOUT_S)
    try:
        return await server.offer_ms(session_id)
    finally:
        await scene.disconnect()
        await server.ended(session_id)


async def _chromium_offer(server: Served, page: Page) -> float:
    await page.click("#connect")
    # Polled every 50 ms, not at every animation frame (Playwright's default), which would keep
    # the browser drawing, on the CPUs the server's work is being timed on.
    await page.wait_for_function(
        f"({CONNECTED}) || window.dpkitPage.error",
        polling=50,
        timeout=STEP_TIMEOUT_S * 1000,
    )
    session_id, error = await page.evaluate("[window.dpkitPage.sessionId, window.dpkitPage.error]")
    if error:
        raise RuntimeError(f"the Web SDK did not connect: {error}")
    try:
        return await server.offer_ms(session_id)
    finally:
        await page.click("#disconnect")
        await server.ended(session_id)


async def _settle(page: Page) -> None:
    """Before each connect, of either kind: let the last session's teardown and the page's own
    work (its load, then the previous disconnect) finish, so that it does not land on the CPUs
    while the server's work is timed. Nothing of the server's work is left out by this: it all
    happens after the connect starts."""
    await asyncio.sleep(SETTLE_S)
    await page.evaluate(PAGE_IDLE)


async def _open_page(browser: Browser, url: str, devices: bool) -> Page:
    context = await browser.new_context()
    if devices:
        await context.grant_permissions(["microphone", "camera"])
    page = await context.new_page()
    await page.goto(f"{url}/?{'' if devices else NO_DEVICES}")
    await page.wait_for_selector("body[data-ready=true]")
    return page


async def main(n: int, warmup: int, devices: bool) -> None:
    if shutil.which(CHROMIUM) is None:
        print(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
        return
    layout = "a microphone and a camera each" if devices else "no devices"
    print(f"{n} timed connects of each after {warmup} warm-up rounds; loopback only; {layout}")
    results: dict[str, list[float]] = {"chromium": [], "python": []}
    with tempfile.TemporaryDirectory(prefix="dpkit-bench-") as tmp:
        async with _served(Path(tmp)) as server, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await _open_page(browser, server.url, devices)
                for index in range(warmup + n):
                    order = ("chromium", "python") if index % 2 == 0 else ("python", "chromium")
                    for kind in order:
                        await _settle(page)
                        if kind == "chromium":
                            elapsed = await _chromium_offer(server, page)
                        else:
                            elapsed = await _python_offer(server, devices)
                        if index >= warmup:
                            results[kind].append(elapsed)
            finally:
                await browser.close()

    print("server: offer frame read -> 'accepted' sent")
    for kind, label in (("chromium", "Chromium (Web SDK)"), ("python", "Python (dpkit.Scene)")):
        values = results[kind]
        print(
            f"  {label:<22} median {statistics.median(values):7.1f} ms"
            f"   min {min(values):7.1f} ms   max {max(values):7.1f} ms"
        )
    ratio = statistics.median(results["chromium"]) / statistics.median(results["python"])
    verdict = "MET" if ratio <= TARGET_RATIO else "NOT MET"
    print(f"ratio Chromium / Python: median {ratio:.2f}x")
    print(f"target {verdict}: {ratio:.2f}x against <= {TARGET_RATIO}x")


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=_count(1), default=10, help="timed runs of each (default 10)")
    parser.add_argument("--warmup", type=_count(0), default=2, help="untimed rounds (default 2)")
    parser.add_argument(
        "--devices",
        action="store_true",
        help="both send a microphone and a camera (Chromium's fake ones, dpkit's synthetic)",
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.n, arguments.warmup, arguments.devices))
