"""``dpkit watch``: follow a server's live feed of session state changes in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dpkit.cli.parsers import add_data_dir_options, command_parser, http_url, positive_int, shown

if TYPE_CHECKING:
    from pathlib import Path

HELP = "follow every session's state changes on a server, live"
DESCRIPTION = """\
Follow the server's live feed (GET /api/events, Server-Sent Events) and print one line per
happening: a socket opening, each connection state, queue places, camera changes, endings.

The admin token is found as 'dpkit serve' finds it: --admin-token, else DPKIT_ADMIN_TOKEN, else
admin_token in --config FILE, else the adminToken in keys.json in the server's data directory
(--data-dir, DPKIT_DATA_DIR, data_dir in --config FILE, ~/.local/share/dpkit). Nothing is
created or changed. The watch command in the banner of 'dpkit serve' works as printed.

Exit status: 0 after --max-events events, 1 when the feed cannot be followed or the server ends
it, 2 for bad arguments or no admin token.
"""

#: How long connecting to the server may take (seconds); the feed itself may be quiet for ever.
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class AdminToken:
    """The token to present, and where it was found (for the advice when it is refused)."""

    token: str
    source: str


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "watch", HELP, DESCRIPTION)
    parser.add_argument(
        "url",
        nargs="?",
        type=http_url,
        default="http://127.0.0.1:8080",
        help="the server (default %(default)s)",
    )
    parser.add_argument("--admin-token", metavar="TOKEN", help="the server's admin token")
    add_data_dir_options(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help='print each event as one JSON object a line: {"seq", "type" (opened, state, '
        'queue, camera, ended), "socketId", "sessionId", "at", ...}',
    )
    parser.add_argument(
        "--max-events",
        type=positive_int,
        metavar="N",
        help="stop after N events, 1 or more (default: run until Ctrl-C)",
    )
    parser.set_defaults(run=run)


def find_admin_token(
    given: str | None, data_dir: Path | None, config_file: Path | None
) -> AdminToken:
    """The admin token as the server on this machine has it (see the command's help)."""
    from dpkit.server.keys import KEYS_FILE, KeyStore
    from dpkit.server.settings import existing_data_dir, resolve

    setting = resolve("admin_token", given, given_as="--admin-token", config_file=config_file)
    if setting.value:
        return AdminToken(str(setting.value), setting.source)
    directory = existing_data_dir(data_dir, config_file=config_file, needs=KEYS_FILE)
    return AdminToken(
        KeyStore.load(directory).admin_token, f"adminToken in {directory / KEYS_FILE}"
    )


def run(args: argparse.Namespace) -> int:
    from dpkit.errors import ConfigurationError

    try:
        token = find_admin_token(args.admin_token, args.data_dir, args.config)
    except ConfigurationError as exc:
        say(f"no admin token: {exc.message}; or pass --admin-token")
        return 2
    return asyncio.run(watch(args.url, token, args.json, args.max_events))


def say(text: str) -> None:
    print(shown(text), file=sys.stderr, flush=True)


async def watch(url: str, token: AdminToken, as_json: bool, max_events: int | None) -> int:
    import aiohttp
    import aiohttp.http_exceptions

    seen = 0
    headers = {"Authorization": f"Bearer {token.token}", "Accept": "text/event-stream"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=None)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url + "/api/events", headers=headers) as response,
        ):
            if response.status in (401, 403):
                say(
                    f"the server refused the feed: HTTP {response.status}: it does not take the "
                    f"admin token watch used ({token.source}). Pass the server's --data-dir "
                    "(as in its banner's watch command) or --admin-token."
                )
                return 1
            if response.status != 200:
                say(f"the server refused the feed: HTTP {response.status}")
                return 1
            # On stderr even with --json (whose events go to stdout): a script can wait for it.
            say(f"following {url} (Ctrl-C to stop)")
            async for raw in response.content:
                event = parse_event(raw)
                if event is None:
                    continue
                if as_json:
                    print(json.dumps(event), flush=True)
                else:
                    print(shown(describe(event)), flush=True)
                seen += 1
                if max_events is not None and seen >= max_events:
                    return 0
    except aiohttp.ClientError as exc:
        say(f"cannot follow {url}: {exc}")
        return 1
    except (ValueError, aiohttp.http_exceptions.HttpProcessingError) as exc:
        # aiohttp's reader: a line longer than it buffers (LineTooLong), or a broken body.
        say(f"cannot follow {url}: the server sent what is not an event stream ({exc!r:.200})")
        return 1
    say(f"the server at {url} ended the feed")
    return 1


def parse_event(raw: bytes) -> dict[str, Any] | None:
    """The event on one ``data:`` line of the stream; None for anything else."""
    line = raw.decode("utf-8", "replace").rstrip("\r\n")
    if not line.startswith("data: "):
        return None
    try:
        event = json.loads(line.removeprefix("data: "))
    except ValueError:
        say(f"skipped an event that is not JSON: {line[:200]}")
        return None
    if not isinstance(event, dict):
        say(f"skipped an event that is not an object: {line[:200]}")
        return None
    return event


def describe(event: dict[str, Any]) -> str:
    """One readable line for a feed event."""
    at_value = event.get("at", 0)
    at = time.strftime("%H:%M:%S", time.localtime(at_value if _is_time(at_value) else 0))
    who = str(event.get("sessionId") or f"socket {event.get('socketId')}")
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
    # The id is never cut: a longer one pushes the rest of the line along. A cluster's
    # stream says which node each event is from.
    node = event.get("node")
    where = f"{str(node)[:64]}  " if isinstance(node, str) and node else ""
    return f"{at}  {where}{who:<28} {what}"


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and 0 <= value < 2**40
