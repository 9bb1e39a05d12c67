"""``dpkit keys list | add | remove``: the API keys of a server on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from dpkit.cli.parsers import (
    add_data_dir_options,
    command_parser,
    http_url,
    identifier,
    key_label,
    shown,
)

if TYPE_CHECKING:
    from dpkit.server.keys import KeyRecord, KeyStore

HELP = "list, add or remove the server's API keys (add: with persistence)"
DESCRIPTION = """\
Manage the API keys kept in the server's data directory (keys.json), found as 'dpkit serve'
finds it (--data-dir, DPKIT_DATA_DIR, data_dir in --config FILE, ~/.local/share/dpkit); the
directory must exist (start 'dpkit serve' once). 'list' changes nothing.

  dpkit keys list [--json]
  dpkit keys add --label kiosk --persistence --url https://dp.example.com
  dpkit keys add --label web --origin https://shop.example.com --url https://dp.example.com
  dpkit keys remove KEY_ID            (the key id, or the start of one that matches one key)

A running server rereads keys.json at its next token request: an added key works at once, and
a removed key gets no new token. Sessions already open, and tokens already issued (valid for
token_ttl_s, 5 minutes by default), are not ended. 'remove' refuses the reference page's key
(label 'default') and the last key unless --force is given.

The key's authServer points at --url, the server's address as clients reach it. A browser page
may use a key only from an origin the key allows (--origin, repeatable; '*' for any origin,
'self' for the server's own pages); a key with no origin is for clients that are not browsers.

'list --json' prints one document:
  {"keysFile": PATH, "url": URL, "keys": [{"keyId": ID, "label": LABEL, "persistence": BOOL,
   "origins": [ORIGIN, ...], "page": BOOL (the reference page's key), "apiKey": KEY}, ...]}
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "keys", HELP, DESCRIPTION)
    # One parser per action, so options may come before or after KEY_ID.
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = command_parser(
        actions, "list", "every key, with the API key clients use", DESCRIPTION
    )
    listing.add_argument("--json", action="store_true", help="print JSON (see above)")
    adding = command_parser(actions, "add", "add a key and print its API key", DESCRIPTION)
    adding.add_argument(
        "--label", type=key_label, default="key", help="a name for the new key (default 'key')"
    )
    adding.add_argument(
        "--persistence", action="store_true", help="sessions opened with the key can be resumed"
    )
    adding.add_argument(
        "--origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="a browser origin that may use the new key, like https://app.example.com "
        "(repeatable; '*' any origin, 'self' the server's own pages; default: none)",
    )
    removing = command_parser(actions, "remove", "remove a key", DESCRIPTION)
    removing.add_argument(
        "key_id",
        type=identifier,
        metavar="KEY_ID",
        help="the key's id ('dpkit keys list' shows it), or the start of one that matches one key",
    )
    removing.add_argument(
        "--force",
        action="store_true",
        help="remove the reference page's key, or the last key, all the same",
    )
    for action in (listing, adding, removing):
        add_data_dir_options(action)
    for action in (listing, adding):
        action.add_argument(
            "--url",
            type=http_url,
            default="http://127.0.0.1:8080",
            help="the server's URL as clients reach it (default %(default)s)",
        )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dpkit.errors import ConfigurationError
    from dpkit.server.endpoints import TOKEN_PATH
    from dpkit.server.keys import KEYS_FILE, KeyStore
    from dpkit.server.settings import existing_data_dir

    try:
        data_dir = existing_data_dir(args.data_dir, config_file=args.config, needs=KEYS_FILE)
        store = KeyStore.load(data_dir)
        if args.action == "remove":
            return _remove(store, args.key_id, force=args.force)
        auth_server = args.url + TOKEN_PATH
        if args.action == "add":
            record = store.add(
                args.label, persistence=args.persistence, origins=tuple(args.origins or ())
            )
            print(record.api_key(auth_server))
            return 0
    except ConfigurationError as exc:
        return _fail(f"{exc.name}: {exc.message}", 2)
    _list(store, args.url, auth_server, as_json=args.json)
    return 0


def _fail(message: str, status: int) -> int:
    print(shown(message), file=sys.stderr)
    return status


def _list(store: KeyStore, url: str, auth_server: str, *, as_json: bool) -> None:
    page = store.page_key()
    if as_json:
        document = {
            "keysFile": str(store.path),
            "url": url,
            "keys": [_as_dict(record, auth_server, record is page) for record in store.keys],
        }
        print(json.dumps(document, indent=2))
        return
    # One value a line, printed as it is: a terminal may wrap a long line on screen, but copying
    # it gives the whole key (nothing here cuts, folds or breaks a value).
    print(shown(f"API keys in {store.path}, as clients of {url} use them:"))
    for record in store.keys:
        print()
        print(shown(record.label) + (" (the reference page's key)" if record is page else ""))
        print(f"  key id:       {shown(record.key_id)}")
        print(f"  persistence:  {'yes' if record.persistence else 'no'}")
        print(f"  origins:      {shown(' '.join(record.origins)) or 'none (no browser)'}")
        print(f"  API key:      {record.api_key(auth_server)}")
    if not store.keys:
        print("  none: add one with dpkit keys add")


def _as_dict(record: KeyRecord, auth_server: str, page: bool) -> dict[str, Any]:
    return {
        "keyId": record.key_id,
        "label": record.label,
        "persistence": record.persistence,
        "origins": list(record.origins),
        "page": page,
        "apiKey": record.api_key(auth_server),
    }


def _remove(store: KeyStore, key_id: str, *, force: bool) -> int:
    found = store.matching(key_id)
    if not found:
        return _fail(f"no key with an id starting {key_id!r} in {store.path}", 1)
    if len(found) > 1:
        ids = ", ".join(f"{record.key_id} ({record.label})" for record in found)
        return _fail(f"{key_id!r} matches {len(found)} keys: {ids}; give more of the id", 1)
    (record,) = found
    if not force:
        if len(store.keys) == 1:
            return _fail(
                f"not removing {record.key_id} ({record.label}): it is the only key, and no "
                "client could connect without one; add another first, or pass --force",
                1,
            )
        if record is store.page_key():
            return _fail(
                f"not removing {record.key_id} ({record.label}): it is the reference page's "
                "key, and the page at / could not connect without it; pass --force to remove "
                "it all the same",
                1,
            )
    store.remove(record.key_id)
    print(
        shown(
            f"removed key {record.key_id} ({record.label}) from {store.path}; a running server "
            "gives it no new token from now on"
        )
    )
    return 0
