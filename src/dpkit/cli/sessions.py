"""``dpkit sessions list | show``: read the session journal of a server on this machine."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from dpkit.cli.parsers import (
    add_data_dir_options,
    columns,
    command_parser,
    http_url,
    identifier,
    int_in_range,
    shown,
)

if TYPE_CHECKING:
    from dpkit.server.journal import SessionRecord, SqliteJournal

HELP = "list sessions, or show one session's timeline, from the server's journal"
DESCRIPTION = """\
Read the session journal that 'dpkit serve' keeps in its data directory (SQLite), found as
'dpkit serve' finds it (--data-dir, DPKIT_DATA_DIR, data_dir in --config FILE,
~/.local/share/dpkit). Reading changes nothing and creates nothing.

  dpkit sessions list               the most recent sessions, newest first
  dpkit sessions show SESSION_ID    one session's timeline: each state with its time, queue
                                    waits, camera changes and how it ended
  dpkit sessions cluster [URL]      every node's live sessions, asked of any node of a cluster
                                    (its admin API; a gone node's sessions are shown lost)

SESSION_ID is the id connect() returned, or the start of one that matches one session (a
socket id works too, for sockets that never got a session, such as those refused with noScene).
Ids are printed whole, never cut short, so they can be copied from any terminal.

--json prints one document, with the fields of the admin API (GET /api/sessions):
  list: {"sessions": [{"socket_id", "session_id", "key_id", "client_kind", "node", "persona",
         "opened_at", "ended_at", "ending", "queue_wait_s", "microphone", "camera",
         "events": []}, ...]}  (times are Unix seconds; a live session has "ending": null)
  show: one such session, with "events": [{"at", "kind", "detail"}, ...]
"""

#: How many matches an ambiguous SESSION_ID lists.
SHOWN_MATCHES = 10


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "sessions", HELP, DESCRIPTION)
    # One parser per action, so options may come before or after SESSION_ID.
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = command_parser(actions, "list", "the most recent sessions, newest first", DESCRIPTION)
    listing.add_argument(
        "--limit",
        type=int_in_range(1, 100_000),
        default=20,
        help="how many sessions, 1 to 100000 (default 20)",
    )
    show = command_parser(actions, "show", "one session's timeline", DESCRIPTION)
    show.add_argument(
        "session_id",
        type=identifier,
        metavar="SESSION_ID",
        help="a session id, a socket id, or the start of one that matches one session",
    )
    cluster = command_parser(
        actions,
        "cluster",
        "every node's live sessions, from a node of the cluster's admin API",
        DESCRIPTION,
    )
    cluster.add_argument(
        "url",
        nargs="?",
        type=http_url,
        default="http://127.0.0.1:8080",
        help="any node of the cluster (default %(default)s)",
    )
    cluster.add_argument("--admin-token", metavar="TOKEN", help="the cluster's admin token")
    for action in (listing, show, cluster):
        add_data_dir_options(action)
        action.add_argument("--json", action="store_true", help="print JSON (see above)")
    parser.set_defaults(run=run, session_id=None, limit=20, url=None, admin_token=None)


def _cluster(args: argparse.Namespace) -> int:
    """``dpkit sessions cluster``: GET /api/cluster/sessions of a node."""
    import asyncio

    import aiohttp

    from dpkit.cli.watch import find_admin_token
    from dpkit.errors import ConfigurationError

    try:
        token = find_admin_token(args.admin_token, args.data_dir, args.config)
    except ConfigurationError as exc:
        return _fail(f"no admin token: {exc.message}; or pass --admin-token", 2)

    async def fetch() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token.token}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(args.url + "/api/cluster/sessions", headers=headers) as response,
        ):
            return response.status, await response.json(content_type=None)

    try:
        status, body = asyncio.run(fetch())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return _fail(f"cannot read {args.url}: {exc or type(exc).__name__}", 1)
    if status != 200 or not isinstance(body, dict):
        return _fail(f"{args.url} answered HTTP {status}: {shown(str(body)[:300])}", 1)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    rows = [("node", "session id", "state", "since")]
    for entry in body.get("sessions", []):
        lost = " (lost: its node is gone)" if entry.get("lost") else ""
        since = entry.get("since")
        rows.append(
            (
                str(entry.get("node")),
                str(entry.get("sessionId") or f"socket {entry.get('socketId')}"),
                f"{entry.get('state') or '-'}{lost}",
                _clock(since if isinstance(since, int | float) else None, milliseconds=False),
            )
        )
    if len(rows) == 1:
        print(f"no live sessions in the cluster of {args.url}")
        return 0
    print("\n".join(columns(rows)))
    return 0


def run(args: argparse.Namespace) -> int:
    import sqlite3

    if args.action == "cluster":
        return _cluster(args)

    from dpkit.errors import ConfigurationError
    from dpkit.server.journal import JOURNAL_FILE, SqliteJournal
    from dpkit.server.settings import existing_data_dir

    try:
        data_dir = existing_data_dir(args.data_dir, config_file=args.config)
        path = data_dir / JOURNAL_FILE
        if not path.is_file():
            return _fail(f"no session journal at {path}: has 'dpkit serve' run with it?", 1)
        journal = SqliteJournal.read_only(path)
    except ConfigurationError as exc:
        return _fail(f"{exc.name}: {exc.message}", 2)
    try:
        if args.action == "list":
            records = journal.list(args.limit)
            if args.json:
                print(json.dumps({"sessions": [asdict(record) for record in records]}, indent=2))
            else:
                print_list(records, str(path))
            return 0
        return _show(journal, args.session_id, args.json)
    except sqlite3.Error as exc:
        return _fail(f"cannot read the session journal {path}: {exc}", 1)
    finally:
        journal.close()


def _fail(message: str, status: int) -> int:
    print(shown(message), file=sys.stderr)
    return status


def _show(journal: SqliteJournal, wanted: str, as_json: bool) -> int:
    record = journal.show(wanted)
    if record is None:
        matches = journal.matching(wanted, SHOWN_MATCHES + 1)
        if not matches:
            return _fail(f"no session {wanted!r} in {journal.path}", 1)
        if len(matches) > 1:
            listed = ", ".join(matches[:SHOWN_MATCHES])
            more = " and more" if len(matches) > SHOWN_MATCHES else ""
            return _fail(
                f"{wanted!r} is the start of more than one session id: {listed}{more}; "
                "give more of the id",
                1,
            )
        record = journal.show(matches[0])
        if record is None:  # ended and pruned between the two reads
            return _fail(f"no session {wanted!r} in {journal.path}", 1)
    if as_json:
        print(json.dumps(asdict(record), indent=2))
    else:
        print_record(record)
    return 0


def _clock(at: float | None, *, milliseconds: bool = True) -> str:
    if at is None:
        return "—"
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return text + f".{int(at % 1 * 1000):03d}" if milliseconds else text


COLUMNS = ("session id", "opened", "client", "persona", "ending", "length")


def list_rows(records: list[SessionRecord]) -> list[tuple[str, ...]]:
    """The list's rows, every value whole: the id first, so it starts its line."""
    rows: list[tuple[str, ...]] = []
    for record in records:
        length = "—" if record.ended_at is None else f"{record.ended_at - record.opened_at:.1f} s"
        rows.append(
            (
                record.session_id or f"{record.socket_id} (socket)",
                _clock(record.opened_at, milliseconds=False),
                record.client_kind,
                record.persona,
                record.ending or "live",
                length,
            )
        )
    return rows


def print_list(records: list[SessionRecord], where: str) -> None:
    """Aligned columns, never cut: a row wider than the terminal wraps on screen as a whole."""
    if not records:
        print(shown(f"no sessions in {where}"))
        return
    print(shown(f"Sessions in {where}, newest first"))
    for line in columns([COLUMNS, *list_rows(records)]):
        print(line)


def print_record(record: SessionRecord) -> None:
    print(shown(f"session {record.session_id or '—'} (socket {record.socket_id})"))
    devices = {"microphone": record.microphone, "camera": record.camera}
    print(
        shown(
            f"  client {record.client_kind}, persona {record.persona}, node {record.node}, "
            f"key {record.key_id}"
        )
    )
    print(
        "  devices: "
        + ", ".join(
            f"{name} {'on' if on else 'off'}" for name, on in devices.items() if on is not None
        )
    )
    if record.queue_wait_s:
        print(f"  waited {record.queue_wait_s:.2f} s in the queue")
    print(shown(f"  ended: {record.ending or 'still live'}"))
    for event in record.events:
        offset = (event.at - record.opened_at) * 1000
        print(shown(f"  {_clock(event.at)}  +{offset:8.1f} ms  {event.kind:<6} {event.detail}"))
