"""``dpkit sessions list | show``: read the session journal of a server on this machine."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dpkit.cli.parsers import command_parser
from dpkit.server.journal import JOURNAL_FILE, SessionRecord, SqliteJournal
from dpkit.server.settings import default_data_dir

HELP = "list sessions, or show one session's timeline, from the server's journal"
DESCRIPTION = """\
Read the session journal that 'dpkit serve' keeps in its data directory (SQLite).

  dpkit sessions list               the most recent sessions, newest first
  dpkit sessions show SESSION_ID    one session's timeline: each state with its time, queue
                                    waits, camera changes and how it ended

SESSION_ID is the id connect() returned (a socket id from 'list' works too, for sockets that
never got a session, such as those refused with noScene).
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "sessions", HELP, DESCRIPTION)
    parser.add_argument("action", choices=["list", "show"], help="what to do")
    parser.add_argument("session_id", nargs="?", metavar="SESSION_ID", help="for 'show'")
    parser.add_argument("--data-dir", type=Path, help="the server's data directory")
    parser.add_argument("--limit", type=int, default=20, help="rows for 'list' (default 20)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    errors = Console(stderr=True)
    path = (args.data_dir or default_data_dir()) / JOURNAL_FILE
    if not path.exists():
        errors.print(f"[red]no session journal at {path}[/red]: has 'dpkit serve' run here?")
        return 1
    journal = SqliteJournal(path)
    try:
        if args.action == "list":
            records = journal.list(args.limit)
            if args.json:
                print(json.dumps([asdict(record) for record in records], indent=2))
            else:
                console.print(list_table(records))
            return 0
        if not args.session_id:
            errors.print("[red]usage[/red]: dpkit sessions show SESSION_ID")
            return 2
        record = journal.show(args.session_id)
        if record is None:
            errors.print(f"[red]no session {args.session_id!r}[/red] in {path}")
            return 1
        if args.json:
            print(json.dumps(asdict(record), indent=2))
        else:
            print_record(console, record)
        return 0
    finally:
        journal.close()


def _clock(at: float | None) -> str:
    if at is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


def list_table(records: list[SessionRecord]) -> Table:
    table = Table(title="Sessions, newest first")
    for column in ("opened", "session id", "client", "persona", "ending", "length"):
        table.add_column(column)
    for record in records:
        length = "—" if record.ended_at is None else f"{record.ended_at - record.opened_at:.1f} s"
        table.add_row(
            _clock(record.opened_at),
            record.session_id or f"(socket {record.socket_id})",
            record.client_kind,
            record.persona,
            record.ending or "live",
            length,
        )
    return table


def print_record(console: Console, record: SessionRecord) -> None:
    console.print(f"[bold]session {record.session_id or '—'}[/bold] (socket {record.socket_id})")
    devices = {"microphone": record.microphone, "camera": record.camera}
    console.print(
        f"  client {record.client_kind}, persona {record.persona}, node {record.node}, "
        f"key {record.key_id}"
    )
    console.print(
        "  devices: "
        + ", ".join(
            f"{name} {'on' if on else 'off'}" for name, on in devices.items() if on is not None
        )
    )
    if record.queue_wait_s:
        console.print(f"  waited {record.queue_wait_s:.2f} s in the queue")
    console.print(f"  ended: {record.ending or 'still live'}")
    for event in record.events:
        offset = (event.at - record.opened_at) * 1000
        console.print(f"  {_clock(event.at)}  +{offset:8.1f} ms  {event.kind:<6} {event.detail}")
