"""Values can be copied: ids, keys and origins printed whole at 80 columns, id prefixes, --json
on every listing, and ``dpkit keys remove``."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dpkit.cli import main
from dpkit.client.consent import Decision, FileConsentStore, Permission
from dpkit.server import DpkitServer
from dpkit.server.journal import SqliteJournal
from dpkit.server.keys import KeyStore
from tests.cli.helpers import environment, run_dpkit

ORIGIN = "https://a-rather-long-subdomain.shop.example.com:8443"


def seeded_journal(data_dir: Path) -> list[str]:
    """A journal with three sessions and one socket that never got a session; their ids."""
    data_dir.mkdir(parents=True)
    journal = SqliteJournal.in_data_dir(data_dir)
    ids = []
    for index in range(4):
        socket_id = secrets.token_hex(8)
        journal.opened(
            socket_id,
            key_id="k",
            client_kind="browser",
            node="node-1",
            persona="Ava",
            at=1_700_000_000.0 + index,
        )
        if index < 3:
            session_id = f"node-1-{secrets.token_hex(8)}"
            journal.update(socket_id, session_id=session_id)
            ids.append(session_id)
        else:
            ids.append(socket_id)
        journal.ended(socket_id, "sessionTimeout" if index else "conversationEnded", 1.7e9 + 9)
    journal.close()
    return ids


async def test_sessions_list_prints_whole_ids_at_80_columns(tmp_path: Path) -> None:
    """At COLUMNS=80 every session (and socket) id is on one line, whole, never cut or wrapped."""
    data_dir = tmp_path / "data"
    ids = seeded_journal(data_dir)
    code, out, err = await run_dpkit(
        "sessions", "list", "--data-dir", str(data_dir), environ=environment(tmp_path), columns=80
    )
    assert code == 0, err
    lines = out.splitlines()
    for full in ids:
        assert sum(line.split()[0] == full for line in lines if line.strip()) == 1, out
    assert "…" not in out


def test_sessions_show_takes_a_unique_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A unique prefix shows that session; an ambiguous one lists the matches; none: an error."""
    data_dir = tmp_path / "data"
    first, second, third, socket_only = seeded_journal(data_dir)
    where = ["--data-dir", str(data_dir)]

    assert main(["sessions", "show", first[:12], "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out)["session_id"] == first
    assert main(["sessions", "show", socket_only[:6], *where]) == 0
    assert f"(socket {socket_only})" in capsys.readouterr().out

    assert main(["sessions", "show", "node-1-", *where]) == 1
    err = capsys.readouterr().err
    assert "'node-1-' is the start of more than one session id" in err
    assert all(session_id in err for session_id in (first, second, third))

    assert main(["sessions", "show", "zz-none", *where]) == 1
    assert f"no session 'zz-none' in {data_dir / 'journal.sqlite3'}" in capsys.readouterr().err


def test_sessions_list_json_is_one_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sessions list --json: {"sessions": [...]} with the admin API's fields, newest first."""
    data_dir = tmp_path / "data"
    ids = seeded_journal(data_dir)
    assert main(["sessions", "list", "--json", "--data-dir", str(data_dir)]) == 0
    document = json.loads(capsys.readouterr().out)
    rows = document["sessions"]
    assert [row["session_id"] or row["socket_id"] for row in rows] == ids[::-1]
    assert set(rows[0]) == {
        "socket_id",
        "session_id",
        "key_id",
        "client_kind",
        "node",
        "persona",
        "opened_at",
        "ended_at",
        "ending",
        "queue_wait_s",
        "microphone",
        "camera",
        "events",
    }


def keys_dir(tmp_path: Path) -> tuple[Path, KeyStore]:
    """A data directory as `dpkit serve` leaves it, with a second key for a long origin."""
    data_dir = tmp_path / "data"
    store = KeyStore.load_or_create(data_dir)
    store.add("shop", origins=(ORIGIN, "https://another.example.org"))
    return data_dir, store


async def test_keys_list_prints_whole_keys_and_origins_at_80_columns(tmp_path: Path) -> None:
    """At COLUMNS=80 each API key and each origin is on one line, whole."""
    data_dir, store = keys_dir(tmp_path)
    url = "https://dp.example.com"
    code, out, err = await run_dpkit(
        "keys", "list", "--data-dir", str(data_dir), "--url", url, environ=environment(tmp_path)
    )
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    for record in store.keys:
        assert f"API key:      {record.api_key(url + '/api/token')}" in lines
        assert f"key id:       {record.key_id}" in lines
    assert f"origins:      {ORIGIN} https://another.example.org" in lines


def test_keys_list_json_is_one_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys list --json: the file, the URL and each key with the fields the help names."""
    data_dir, store = keys_dir(tmp_path)
    assert main(["keys", "list", "--json", "--data-dir", str(data_dir)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["keysFile"] == str(data_dir / "keys.json")
    assert document["url"] == "http://127.0.0.1:8080"
    default, shop = store.keys
    assert document["keys"] == [
        {
            "keyId": record.key_id,
            "label": record.label,
            "persistence": False,
            "origins": list(record.origins),
            "page": record is default,
            "apiKey": record.api_key("http://127.0.0.1:8080/api/token"),
        }
        for record in (default, shop)
    ]


def test_permissions_and_devices_list_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """permissions list --json and devices --json each print one document with their fields."""
    FileConsentStore(tmp_path / "permissions.json").set(
        Permission(ORIGIN, "camera", Decision.GRANTED, 0, 5.0)
    )
    assert main(["permissions", "list", "--json", "--state-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {
            "origin": ORIGIN,
            "device": "camera",
            "decision": "granted",
            "refusals": 0,
            "updatedAt": 5.0,
        }
    ]
    assert main(["permissions", "list", "--state-dir", str(tmp_path)]) == 0
    assert any(line.split()[0] == ORIGIN for line in capsys.readouterr().out.splitlines()[1:])

    assert main(["devices", "--json"]) == 0
    devices: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert set(devices) == {"microphones", "cameras", "speakers", "problems"}
    for device in devices["microphones"] + devices["cameras"] + devices["speakers"]:
        assert set(device) == {"kind", "name", "id", "backend", "default"}


async def token_status(server: DpkitServer, api_key: str) -> int:
    """The token endpoint's answer to a non-browser client with ``api_key``."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url + "/api/token", headers={"key": api_key}) as reply,
    ):
        return reply.status


async def test_keys_remove_takes_effect_on_the_running_server(
    server: DpkitServer, tmp_path: Path
) -> None:
    """remove PREFIX says what it removed, and the running server gives that key no token."""
    data_dir = server.settings.data_dir
    where = ("--data-dir", str(data_dir))
    environ = environment(tmp_path)
    code, out, err = await run_dpkit("keys", "add", "--label", "kiosk", *where, "--url", server.url)
    assert code == 0, err
    kiosk_key = out.strip()
    assert await token_status(server, kiosk_key) == 200
    kiosk = next(record for record in KeyStore.load(data_dir).keys if record.label == "kiosk")

    code, out, err = await run_dpkit("keys", "remove", kiosk.key_id[:5], *where, environ=environ)
    assert code == 0, err
    assert f"removed key {kiosk.key_id} (kiosk) from {data_dir / 'keys.json'}" in out
    assert await token_status(server, kiosk_key) == 401
    assert await token_status(server, server.api_key()) == 200


def test_keys_remove_refuses_the_page_key_and_the_last_key_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page's key and the only key stay unless --force; an ambiguous prefix names both."""
    data_dir, store = keys_dir(tmp_path)
    default, shop = store.keys
    where = ["--data-dir", str(data_dir)]
    assert main(["keys", "remove", default.key_id, *where]) == 1
    assert "it is the reference page's key" in capsys.readouterr().err
    assert main(["keys", "remove", "nope", *where]) == 1
    assert "no key with an id starting 'nope'" in capsys.readouterr().err

    assert main(["keys", "remove", shop.key_id, *where]) == 0
    assert main(["keys", "remove", default.key_id, *where]) == 1
    assert "it is the only key" in capsys.readouterr().err
    assert [record.key_id for record in KeyStore.load(data_dir).keys] == [default.key_id]
    assert main(["keys", "remove", default.key_id, "--force", *where]) == 0
    assert KeyStore.load(data_dir).keys == []


def test_an_ambiguous_key_prefix_lists_the_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keys remove with the start of two ids names both and removes neither."""
    data_dir, store = keys_dir(tmp_path)
    while True:  # two ids that share a first character
        extra = store.add("extra")
        if any(record.key_id[0] == extra.key_id[0] for record in store.keys if record is not extra):
            break
    matching = [record for record in store.keys if record.key_id[0] == extra.key_id[0]]
    before = len(store.keys)
    assert main(["keys", "remove", extra.key_id[0], "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert f"matches {len(matching)} keys" in err
    assert all(record.key_id in err for record in matching)
    assert len(KeyStore.load(data_dir).keys) == before


def test_journal_text_is_printed_with_control_characters_visible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal value holding a terminal escape is printed escaped, in list and in show."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    journal = SqliteJournal.in_data_dir(data_dir)
    journal.opened("sock", key_id="k", client_kind="py\x1b[2Jthon", node="n", persona="A", at=1.0)
    journal.event("sock", "state", "Con\x07nected", 2.0)
    journal.close()
    assert main(["sessions", "list", "--data-dir", str(data_dir)]) == 0
    assert main(["sessions", "show", "sock", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "py\\x1b[2Jthon" in out
    assert "Con\\x07nected" in out
    assert "\x1b" not in out
    assert "\x07" not in out
