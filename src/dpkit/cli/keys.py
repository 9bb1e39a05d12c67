"""``dpkit keys list | add``: the API keys of a server on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dpkit.cli.parsers import command_parser
from dpkit.errors import ConfigurationError
from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.keys import KeyStore
from dpkit.server.settings import default_data_dir

HELP = "list the server's API keys, or add one (with session persistence if asked)"
DESCRIPTION = """\
Manage the API keys kept in the server's data directory (keys.json). A running server picks up
a new key at once.

  dpkit keys list
  dpkit keys add --label kiosk --persistence --url https://dp.example.com
  dpkit keys add --label web --origin https://shop.example.com --url https://dp.example.com

The key's authServer points at --url, the server's address as clients reach it. A browser page
may use a key only from an origin the key allows (--origin, repeatable; '*' for any origin,
'self' for the server's own pages); a key with no origin is for clients that are not browsers.
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "keys", HELP, DESCRIPTION)
    parser.add_argument("action", choices=["list", "add"], help="what to do")
    parser.add_argument("--data-dir", type=Path, help="the server's data directory")
    parser.add_argument("--label", default="key", help="a name for the new key (default 'key')")
    parser.add_argument(
        "--persistence", action="store_true", help="sessions opened with the key can be resumed"
    )
    parser.add_argument(
        "--origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="a browser origin that may use the new key, like https://app.example.com "
        "(repeatable; '*' any origin, 'self' the server's own pages; default: none)",
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8080", help="the server's URL (default %(default)s)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        store = KeyStore.load_or_create(args.data_dir or default_data_dir())
    except ConfigurationError as exc:
        Console(stderr=True).print(f"[red]{exc.name}[/red]: {exc.message}")
        return 2
    auth_server = args.url.rstrip("/") + TOKEN_PATH
    if args.action == "add":
        try:
            record = store.add(
                args.label, persistence=args.persistence, origins=tuple(args.origins or ())
            )
        except ConfigurationError as exc:
            Console(stderr=True).print(f"[red]{exc.name}[/red]: {exc.message}")
            return 2
        console.print(record.api_key(auth_server), soft_wrap=True)
        return 0
    table = Table(title=f"API keys for {args.url}")
    for column in ("label", "key id", "persistence", "origins", "API key"):
        table.add_column(column, overflow="fold")
    for record in store.keys:
        table.add_row(
            record.label,
            record.key_id,
            "yes" if record.persistence else "no",
            " ".join(record.origins) or "(no browser)",
            record.api_key(auth_server),
        )
    console.print(table)
    return 0
