"""``dpkit keys list | add | remove``: the API keys of a server on this machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from dpkit.cli.parsers import (
    add_data_dir_options,
    command_parser,
    http_url,
    identifier,
    key_label,
    redis_url,
    shown,
)

if TYPE_CHECKING:
    from dpkit.cli.cluster_keys import ClusterKeys, SharedKeys
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
  dpkit keys list --redis-url redis://10.0.0.5:6379/0
  dpkit keys remove KEY_ID --redis-url redis://10.0.0.5:6379/0

A running server rereads keys.json at its next token request: an added key works at once, and
a removed key gets no new token. Sessions already open, and tokens already issued (valid for
token_ttl_s, 5 minutes by default), are not ended. 'remove' refuses the reference page's key
(label 'default') and the last key unless --force is given.

The key's authServer points at --url, the server's address as clients reach it. A browser page
may use a key only from an origin the key allows (--origin, repeatable; '*' for any origin,
'self' for the server's own pages); a key with no origin is for clients that are not browsers.

In a cluster ('dpkit serve --redis-url'), every node shares its keys.json keys in the cluster's
Redis, and a key of any node works at every node. With --redis-url URL (default: the
environment variable DPKIT_REDIS_URL, if set), 'list' also shows the keys of other nodes found
there (at most 10,000 entries read; damaged ones are skipped and counted), and 'remove' also
deletes the key from Redis at once. A key that is in no keys.json here but in Redis is removed
from Redis only: the node that has it in its own keys.json writes it back at its next heartbeat,
so remove it on that node. Redis is reached first; if it cannot be, the command changes nothing
and fails with clusterUnreachable (exit 1). The URL's password is never printed.

'list --json' prints one document:
  {"keysFile": PATH, "url": URL, "keys": [{"keyId": ID, "label": LABEL, "persistence": BOOL,
   "origins": [ORIGIN, ...], "page": BOOL (the reference page's key), "apiKey": KEY}, ...]}
with --redis-url, also "redis": URL (without its password), "cluster": [the other nodes' keys,
alike, "page" false] and "damaged": COUNT (entries skipped).
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
    for action in (listing, removing):
        action.add_argument(
            "--redis-url",
            type=redis_url,
            metavar="URL",
            default=os.environ.get("DPKIT_REDIS_URL") or None,
            help="the cluster's Redis, to list or remove the keys shared there too "
            "(redis://, rediss:// or unix://; default: DPKIT_REDIS_URL if set, else none)",
        )
    for action in (listing, adding):
        action.add_argument(
            "--url",
            type=http_url,
            default="http://127.0.0.1:8080",
            help="the server's URL as clients reach it (default %(default)s)",
        )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dpkit.cli.cluster_keys import ClusterKeys, ClusterUnreachable
    from dpkit.errors import ConfigurationError
    from dpkit.server.endpoints import TOKEN_PATH
    from dpkit.server.keys import KEYS_FILE, KeyStore
    from dpkit.server.settings import existing_data_dir

    try:
        data_dir = existing_data_dir(args.data_dir, config_file=args.config, needs=KEYS_FILE)
        store = KeyStore.load(data_dir)
        url = getattr(args, "redis_url", None)
        cluster = ClusterKeys(url) if url else None
        if args.action == "remove":
            return _remove(store, args.key_id, force=args.force, cluster=cluster)
        auth_server = args.url + TOKEN_PATH
        if args.action == "add":
            record = store.add(
                args.label, persistence=args.persistence, origins=tuple(args.origins or ())
            )
            print(record.api_key(auth_server))
            return 0
        shared = cluster.read() if cluster else None
    except ConfigurationError as exc:
        return _fail(f"{exc.name}: {exc.message}", 2)
    except ClusterUnreachable as exc:
        return _fail(f"clusterUnreachable: {exc.message}", 1)
    _list(store, args.url, auth_server, shared, as_json=args.json)
    return 0


def _fail(message: str, status: int) -> int:
    print(shown(message), file=sys.stderr)
    return status


def _list(
    store: KeyStore, url: str, auth_server: str, shared: SharedKeys | None, *, as_json: bool
) -> None:
    others = _others(store, shared)
    if as_json:
        print(json.dumps(_document(store, url, auth_server, shared, others), indent=2))
        return
    # One value a line, printed as it is: a terminal may wrap a long line on screen, but copying
    # it gives the whole key (nothing here cuts, folds or breaks a value).
    print(shown(f"API keys in {store.path}, as clients of {url} use them:"))
    page = store.page_key()
    for record in store.keys:
        _print_key(record, auth_server, page=record is page)
    if not store.keys:
        print("  none: add one with dpkit keys add")
    if shared is not None:
        _print_shared(shared, others, auth_server)


def _others(store: KeyStore, shared: SharedKeys | None) -> list[KeyRecord]:
    """The keys in the cluster's Redis that are not in this keys.json."""
    if shared is None:
        return []
    own = {record.key_id for record in store.keys}
    return [record for record in shared.records if record.key_id not in own]


def _document(
    store: KeyStore,
    url: str,
    auth_server: str,
    shared: SharedKeys | None,
    others: list[KeyRecord],
) -> dict[str, Any]:
    page = store.page_key()
    document: dict[str, Any] = {
        "keysFile": str(store.path),
        "url": url,
        "keys": [_as_dict(record, auth_server, record is page) for record in store.keys],
    }
    if shared is not None:
        document["redis"] = shared.shown_url
        document["cluster"] = [_as_dict(record, auth_server, False) for record in others]
        document["damaged"] = shared.damaged
    return document


def _print_shared(shared: SharedKeys, others: list[KeyRecord], auth_server: str) -> None:
    print()
    print(shown(f"Keys of other nodes, in the cluster's Redis at {shared.shown_url}:"))
    for record in others:
        _print_key(record, auth_server, page=False)
    if not others:
        print("  none")
    if shared.damaged:
        print(f"  ({shared.damaged} damaged entries skipped)")
    if not shared.complete:
        print(f"  (only the first {len(shared.records) + shared.damaged} entries read)")


def _print_key(record: KeyRecord, auth_server: str, *, page: bool) -> None:
    print()
    print(shown(record.label) + (" (the reference page's key)" if page else ""))
    print(f"  key id:       {shown(record.key_id)}")
    print(f"  persistence:  {'yes' if record.persistence else 'no'}")
    print(f"  origins:      {shown(' '.join(record.origins)) or 'none (no browser)'}")
    print(f"  API key:      {record.api_key(auth_server)}")


def _as_dict(record: KeyRecord, auth_server: str, page: bool) -> dict[str, Any]:
    return {
        "keyId": record.key_id,
        "label": record.label,
        "persistence": record.persistence,
        "origins": list(record.origins),
        "page": page,
        "apiKey": record.api_key(auth_server),
    }


def _remove(store: KeyStore, key_id: str, *, force: bool, cluster: ClusterKeys | None) -> int:
    found = store.matching(key_id)
    # Redis first: when it cannot be reached, keys.json stays as it is.
    shared = cluster.read() if cluster else None
    if not found and cluster is not None and shared is not None:
        return _remove_shared(store, cluster, shared, key_id)
    refusal = _refusal(store, found, key_id, force=force)
    if refusal:
        return _fail(refusal, 1)
    (record,) = found
    store.remove(record.key_id)
    print(
        shown(
            f"removed key {record.key_id} ({record.label}) from {store.path}; a running server "
            "gives it no new token from now on"
        )
    )
    if cluster:
        cluster.delete(record.key_id)
        print(shown(f"removed it from the cluster's Redis at {cluster.shown_url} too"))
    return 0


def _refusal(store: KeyStore, found: list[KeyRecord], key_id: str, *, force: bool) -> str:
    """Why the one key ``found`` may not be removed ('' if it may)."""
    if not found:
        return f"no key with an id starting {key_id!r} in {store.path}"
    if len(found) > 1:
        return _ambiguous(key_id, found)
    (record,) = found
    if force:
        return ""
    if len(store.keys) == 1:
        return (
            f"not removing {record.key_id} ({record.label}): it is the only key, and no "
            "client could connect without one; add another first, or pass --force"
        )
    if record is store.page_key():
        return (
            f"not removing {record.key_id} ({record.label}): it is the reference page's "
            "key, and the page at / could not connect without it; pass --force to remove "
            "it all the same"
        )
    return ""


def _ambiguous(key_id: str, found: list[KeyRecord], where: str = "") -> str:
    ids = ", ".join(f"{record.key_id} ({record.label})" for record in found)
    return f"{key_id!r} matches {len(found)} keys{where}: {ids}; give more of the id"


def _remove_shared(store: KeyStore, cluster: ClusterKeys, shared: SharedKeys, key_id: str) -> int:
    """Remove a key that only Redis holds (another node's)."""
    where = f" in the cluster's Redis at {cluster.shown_url}"
    found = shared.matching(key_id)
    if not found:
        return _fail(f"no key with an id starting {key_id!r} in {store.path} or{where}", 1)
    if len(found) > 1:
        return _fail(_ambiguous(key_id, found, where), 1)
    (record,) = found
    cluster.delete(record.key_id)
    print(
        shown(
            f"removed key {record.key_id} ({record.label}) from the cluster's Redis at "
            f"{cluster.shown_url}; it is in no keys.json here, and a node that still has it in "
            "its own keys.json writes it back: remove it on that node too"
        )
    )
    return 0
