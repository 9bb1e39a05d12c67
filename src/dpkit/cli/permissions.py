"""``dpkit permissions list | reset | revoke``: the microphone and camera consent kept here."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dpkit.cli.parsers import command_parser
from dpkit.client.consent import (
    DEVICES,
    PERMISSIONS_FILE,
    FileConsentStore,
    Permission,
    origin_of,
)
from dpkit.client.persistence import default_state_dir

HELP = "list, reset or revoke the microphone and camera permissions you gave servers"
DESCRIPTION = """\
The Python client remembers, per server origin, whether you allowed it to use your microphone
and camera (permissions.json in your state directory). A grant lasts until you reset or revoke
it; an origin refused three times is blocked and connect fails at once until you reset it.

  dpkit permissions list                                  every remembered decision
  dpkit permissions reset --origin http://127.0.0.1:8080  ask again next time (unblocks)
  dpkit permissions reset                                 forget every decision
  dpkit permissions revoke --origin http://127.0.0.1:8080 --device camera
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "permissions", HELP, DESCRIPTION)
    parser.add_argument("action", choices=["list", "reset", "revoke"], help="what to do")
    parser.add_argument("--origin", help="the server's origin, e.g. http://127.0.0.1:8080")
    parser.add_argument("--device", choices=DEVICES, help="only this device")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where permissions.json lives (default: $XDG_STATE_HOME/dpkit)",
    )
    parser.add_argument("--json", action="store_true", help="'list' prints JSON, not a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = FileConsentStore((args.state_dir or default_state_dir()) / PERMISSIONS_FILE)
    origin = None if args.origin is None else origin_of(args.origin)
    if args.action == "list":
        return _list(store, origin, args.device, args.json)
    if args.action == "reset":
        count = store.reset(origin, args.device)
        what = f"{args.device} permission" if args.device else "permission"
        where = f" for {origin}" if origin else ""
        print(f"reset {count} {what}{'s' if count != 1 else ''}{where}")
        return 0
    if origin is None or args.device is None:
        Console(stderr=True).print(
            "[red]usage[/red]: dpkit permissions revoke --origin O --device D"
        )
        return 2
    store.revoke(origin, args.device)
    decision = store.get(origin, args.device).decision.value
    print(f"{args.device} for {origin} is now {decision}")
    return 0


def _list(store: FileConsentStore, origin: str | None, device: str | None, as_json: bool) -> int:
    permissions = [
        p
        for p in store.list()
        if (origin is None or p.origin == origin) and (device is None or p.device == device)
    ]
    if as_json:
        print(json.dumps([_as_dict(p) for p in permissions], indent=2))
        return 0
    if not permissions:
        print(f"no permissions remembered in {store.path}")
        return 0
    table = Table(title=f"permissions in {escape(str(store.path))}")
    for column in ("origin", "device", "decision", "refusals", "updated"):
        table.add_column(column, overflow="fold")
    for p in permissions:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.updated_at))
        table.add_row(escape(p.origin), p.device, p.decision.value, str(p.refusals), updated)
    Console().print(table)
    return 0


def _as_dict(permission: Permission) -> dict[str, Any]:
    return {
        "origin": permission.origin,
        "device": permission.device,
        "decision": permission.decision.value,
        "refusals": permission.refusals,
        "updatedAt": permission.updated_at,
    }
