"""``dpkit watch``: follow a server's live feed of session state changes in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from dpkit.cli.parsers import command_parser
from dpkit.server.keys import KeyStore
from dpkit.server.settings import default_data_dir

HELP = "follow every session's state changes on a server, live"
DESCRIPTION = """\
Follow the server's live feed (GET /api/events, Server-Sent Events) and print one line per
happening: a socket opening, each connection state, queue places, camera changes, endings.
The admin token is read from the local server's data directory unless --admin-token is given.
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "watch", HELP, DESCRIPTION)
    parser.add_argument(
        "url", nargs="?", default="http://127.0.0.1:8080", help="the server (default %(default)s)"
    )
    parser.add_argument("--admin-token", help="the server's admin token")
    parser.add_argument("--data-dir", type=Path, help="the local server's data directory")
    parser.add_argument("--json", action="store_true", help="print each event as a JSON line")
    parser.add_argument(
        "--max-events",
        type=int,
        metavar="N",
        help="stop after N events (default: run until Ctrl-C)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    token = args.admin_token
    if token is None:
        directory = args.data_dir or default_data_dir()
        if not (directory / "keys.json").exists():
            console.print(
                f"[red]no admin token[/red]: pass --admin-token, or --data-dir of a server on "
                f"this machine (looked in {directory})"
            )
            return 2
        token = KeyStore.load_or_create(directory).admin_token
    return asyncio.run(watch(args.url.rstrip("/"), token, args.json, args.max_events, console))


async def watch(
    url: str, token: str, as_json: bool, max_events: int | None, console: Console
) -> int:
    seen = 0
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url + "/api/events", headers=headers) as response,
        ):
            if response.status != 200:
                console.print(f"[red]the server refused the feed[/red]: HTTP {response.status}")
                return 1
            if not as_json:
                console.print(f"following {url} (Ctrl-C to stop)")
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if not line.startswith("data: "):
                    continue
                event = json.loads(line.removeprefix("data: "))
                if as_json:
                    print(json.dumps(event), flush=True)
                else:
                    console.print(describe(event), highlight=False)
                seen += 1
                if max_events is not None and seen >= max_events:
                    return 0
    except aiohttp.ClientError as exc:
        console.print(f"[red]cannot follow {url}[/red]: {exc}")
        return 1
    return 0


def describe(event: dict[str, Any]) -> str:
    """One readable line for a feed event."""
    at = time.strftime("%H:%M:%S", time.localtime(event.get("at", 0)))
    who = event.get("sessionId") or f"socket {event.get('socketId')}"
    kind = event.get("type")
    if kind == "opened":
        what = f"opened by a {event.get('client')} client ({event.get('persona')})"
    elif kind == "state":
        what = str(event.get("state"))
    elif kind == "queue":
        what = f"queued at {event.get('queue')}"
    elif kind == "camera":
        what = f"camera {event.get('camera')}"
    elif kind == "ended":
        what = f"ended: {event.get('reason')}"
    else:
        what = json.dumps(event)
    return f"{at}  {who:<28} {what}"
