"""``dpkit permissions``: list, reset and revoke the remembered decisions in a state directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from dpkit.cli import permissions
from dpkit.client.consent import Decision, FileConsentStore, Permission

ORIGIN = "http://127.0.0.1:8080"
OTHER = "http://127.0.0.1:9090"


def run(*argv: str) -> int:
    """Parse through the command's own add_parser, without depending on its registration."""
    commands = argparse.ArgumentParser(prog="dpkit").add_subparsers()
    permissions.add_parser(commands)
    args = commands.choices["permissions"].parse_args(argv)
    result: int = args.run(args)
    return result


@pytest.fixture
def store(tmp_path: Path) -> FileConsentStore:
    """A state dir with a grant and a block for ORIGIN and a grant for OTHER."""
    store = FileConsentStore(tmp_path / "permissions.json")
    store.set(Permission(ORIGIN, "microphone", Decision.GRANTED, 0, 1.0))
    store.set(Permission(ORIGIN, "camera", Decision.BLOCKED, 3, 2.0))
    store.set(Permission(OTHER, "camera", Decision.GRANTED, 0, 3.0))
    return store


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert run("list", "--json", *argv) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_list_json_shows_every_decision(
    store: FileConsentStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """list --json prints each decision with refusals and time; --origin/--device filter it."""
    assert listed(capsys, "--state-dir", str(tmp_path)) == [
        {
            "origin": ORIGIN,
            "device": "microphone",
            "decision": "granted",
            "refusals": 0,
            "updatedAt": 1.0,
        },
        {
            "origin": ORIGIN,
            "device": "camera",
            "decision": "blocked",
            "refusals": 3,
            "updatedAt": 2.0,
        },
        {
            "origin": OTHER,
            "device": "camera",
            "decision": "granted",
            "refusals": 0,
            "updatedAt": 3.0,
        },
    ]
    rows = listed(
        capsys, "--state-dir", str(tmp_path), "--origin", ORIGIN + "/", "--device", "camera"
    )
    assert [(row["origin"], row["device"]) for row in rows] == [(ORIGIN, "camera")]


def test_list_table_and_the_empty_case(
    store: FileConsentStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """list without --json draws a table; an empty state dir says nothing is remembered."""
    assert run("list", "--state-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "blocked" in out
    assert "granted" in out
    empty = tmp_path / "empty"
    assert run("list", "--state-dir", str(empty)) == 0
    assert "no permissions remembered" in capsys.readouterr().out


def test_the_state_dir_defaults_to_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --state-dir the command reads $XDG_STATE_HOME/dpkit/permissions.json."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    FileConsentStore().set(Permission(ORIGIN, "camera", Decision.DENIED, 1, 1.0))
    assert [row["decision"] for row in listed(capsys)] == ["denied"]


def test_reset_an_origin_unblocks_it(
    store: FileConsentStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """reset --origin forgets that origin's decisions, says how many, and leaves others alone."""
    assert run("reset", "--state-dir", str(tmp_path), "--origin", ORIGIN) == 0
    assert capsys.readouterr().out.strip() == f"reset 2 permissions for {ORIGIN}"
    assert store.get(ORIGIN, "camera").decision is Decision.UNDECIDED
    assert [(p.origin, p.device) for p in store.list()] == [(OTHER, "camera")]


def test_reset_without_an_origin_resets_everything(
    store: FileConsentStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """reset alone forgets every decision and says how many it forgot."""
    assert run("reset", "--state-dir", str(tmp_path)) == 0
    assert capsys.readouterr().out.strip() == "reset 3 permissions"
    assert store.list() == []


def test_reset_one_device(
    store: FileConsentStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """reset --device forgets that device for every origin."""
    assert run("reset", "--state-dir", str(tmp_path), "--device", "camera") == 0
    assert capsys.readouterr().out.strip() == "reset 2 camera permissions"
    assert [(p.origin, p.device) for p in store.list()] == [(ORIGIN, "microphone")]


def test_revoke_blocks_the_device(
    store: FileConsentStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """revoke --origin --device blocks the device and says so."""
    assert (
        run("revoke", "--state-dir", str(tmp_path), "--origin", ORIGIN, "--device", "microphone")
        == 0
    )
    assert capsys.readouterr().out.strip() == f"microphone for {ORIGIN} is now blocked"
    assert store.get(ORIGIN, "microphone").decision is Decision.BLOCKED
    assert store.get(ORIGIN, "microphone").refusals == 0


@pytest.mark.parametrize("missing", [["--origin", ORIGIN], ["--device", "camera"], []])
def test_revoke_needs_an_origin_and_a_device(
    missing: list[str],
    store: FileConsentStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """revoke without both --origin and --device is a usage error that changes nothing."""
    before = store.list()
    assert run("revoke", "--state-dir", str(tmp_path), *missing) == 2
    assert "usage" in capsys.readouterr().err
    assert store.list() == before


def test_help_describes_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """permissions --help names each action and option with its help text."""
    with pytest.raises(SystemExit) as exited:
        run("--help")
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for word in ("list", "reset", "revoke", "--origin", "--device", "--state-dir", "--json"):
        assert word in text
