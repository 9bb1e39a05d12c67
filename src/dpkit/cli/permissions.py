"""``dpkit permissions list | reset | revoke``: the microphone and camera consent kept here."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpkit.cli.parsers import columns, command_parser, origin_url, shown

if TYPE_CHECKING:
    from dpkit.client.consent import FileConsentStore, Permission

#: The devices a decision is about (dpkit.client.consent.DEVICES; a test holds them equal).
DEVICES = ("microphone", "camera")

HELP = "list, reset or revoke the microphone and camera permissions you gave servers"
DESCRIPTION = """\
The Python client remembers, per server origin, whether you allowed it to use your microphone
and camera (permissions.json in your state directory). A grant lasts until you reset or revoke
it; an origin refused three times is blocked and connect fails at once until you reset it.

  dpkit permissions list                                  every remembered decision
  dpkit permissions reset --origin http://127.0.0.1:8080  ask again next time (unblocks)
  dpkit permissions reset                                 forget every decision
  dpkit permissions revoke --origin http://127.0.0.1:8080 --device camera

'list --json' prints one document: [{"origin": ORIGIN, "device": "microphone" or "camera",
"decision": "granted", "denied", "blocked" or "undecided", "refusals": N, "updatedAt": UNIX
SECONDS}, ...]. Origins are printed whole, never cut short.
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "permissions", HELP, DESCRIPTION)
    parser.add_argument("action", choices=["list", "reset", "revoke"], help="what to do")
    parser.add_argument(
        "--origin",
        type=origin_url,
        help="the server's origin or URL, e.g. http://127.0.0.1:8080",
    )
    parser.add_argument("--device", choices=DEVICES, help="only this device")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where permissions.json lives (default: $XDG_STATE_HOME/dpkit)",
    )
    parser.add_argument(
        "--json", action="store_true", help="'list' prints JSON, not a table (see above)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dpkit.client.consent import PERMISSIONS_FILE, FileConsentStore, origin_of
    from dpkit.client.persistence import default_state_dir

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
        print("usage: dpkit permissions revoke --origin O --device D", file=sys.stderr)
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
    print(shown(f"permissions in {store.path}"))
    rows = [("origin", "device", "decision", "refusals", "updated")]
    for p in permissions:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.updated_at))
        rows.append((p.origin, p.device, p.decision.value, str(p.refusals), updated))
    for line in columns(rows):
        print(line)
    return 0


def _as_dict(permission: Permission) -> dict[str, Any]:
    return {
        "origin": permission.origin,
        "device": permission.device,
        "decision": permission.decision.value,
        "refusals": permission.refusals,
        "updatedAt": permission.updated_at,
    }
