"""A data directory that cannot be written: ``dpkit serve`` names it and what is wrong, with no
traceback, and "cannot listen" is said only when listening failed.

Tests run as root here, and root writes through permission bits, so a directory (or file) is
made unwritable with ``chattr +i`` (immutable: not even root may create, rename or change what
it holds), and made writable again after the test. As another user, ``chmod`` does the same.
Where neither works, the tests are skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpkit.server.journal import SqliteJournal
from dpkit.server.keys import KeyStore
from tests.cli.helpers import environment, run_dpkit


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


@contextlib.contextmanager
def unwritable(*paths: Path) -> Iterator[None]:
    """``paths`` cannot be written, even by root, for the block (skip the test where unable)."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in paths}
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    done: list[Path] = []
    try:
        for path in paths:
            if not _chattr("+i", path):
                pytest.skip(f"chattr +i does not work on {path} here")
            done.append(path)
        probe = paths[0] / "probe" if paths[0].is_dir() else paths[0]
        try:
            probe.open("a").close()
        except OSError:
            pass
        else:
            pytest.skip("an immutable path is still writable here")
        yield
    finally:
        for path in done:
            _chattr("-i", path)


def served_once(data_dir: Path) -> None:
    """A data directory with what a server leaves: keys.json and a journal."""
    KeyStore.load_or_create(data_dir)
    journal = SqliteJournal.in_data_dir(data_dir)
    journal.opened("s1", key_id="k", client_kind="python", node="node-1", persona="Ava", at=1.0)
    journal.close()


async def serve(data_dir: Path, home: Path, *args: str) -> tuple[int, str]:
    code, _out, err = await run_dpkit(
        "serve", "--data-dir", str(data_dir), "--port", "0", *args, environ=environment(home)
    )
    return code, err


@pytest.mark.parametrize("holds_data", [False, True])
async def test_serve_names_a_data_dir_it_cannot_write(tmp_path: Path, holds_data: bool) -> None:
    """Empty or holding keys and a journal, an unwritable data dir: one named error, exit 2."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if holds_data:
        served_once(data_dir)
    with unwritable(data_dir):
        code, err = await serve(data_dir, tmp_path)
    assert code == 2, err
    assert f"dataDirNotWritable: data directory {data_dir} is not writable" in err
    assert "Traceback" not in err
    assert "cannot listen" not in err


async def test_demo_names_a_data_dir_it_cannot_write(tmp_path: Path) -> None:
    """dpkit demo runs a server too: the same named error, exit 2, no traceback."""
    data_dir = tmp_path / "data"
    served_once(data_dir)
    with unwritable(data_dir):
        code, _out, err = await run_dpkit(
            "demo", "--data-dir", str(data_dir), environ=environment(tmp_path)
        )
    assert code == 2, err
    assert f"dataDirNotWritable: data directory {data_dir} is not writable" in err
    assert "Traceback" not in err


async def test_serve_names_a_journal_it_cannot_write(tmp_path: Path) -> None:
    """A writable directory whose journal file is not: the error names the journal."""
    data_dir = tmp_path / "data"
    served_once(data_dir)
    journal = data_dir / "journal.sqlite3"
    with unwritable(journal):
        code, err = await serve(data_dir, tmp_path)
    assert code == 2, err
    assert f"dataDirNotWritable: cannot write the session journal {journal}" in err
    assert "Traceback" not in err
    assert "cannot listen" not in err


async def test_reading_commands_work_on_a_data_dir_they_cannot_write(tmp_path: Path) -> None:
    """keys list and sessions list read an unwritable data dir and create nothing in it."""
    data_dir = tmp_path / "data"
    served_once(data_dir)
    where = ("--data-dir", str(data_dir))
    with unwritable(data_dir):
        listed = await run_dpkit("keys", "list", *where, environ=environment(tmp_path))
        sessions = await run_dpkit("sessions", "list", *where, environ=environment(tmp_path))
        added = await run_dpkit("keys", "add", *where, environ=environment(tmp_path))
    assert listed[0] == 0, listed[2]
    assert sessions[0] == 0, sessions[2]
    assert "s1 (socket)" in sessions[1]
    assert added[0] == 2
    assert f"dataDirNotWritable: cannot write {data_dir / 'keys.json'}" in added[2]
    assert "Traceback" not in added[2]


async def test_cannot_listen_is_said_only_for_a_port_in_use(tmp_path: Path) -> None:
    """A port another socket holds: 'cannot listen on 127.0.0.1:PORT', exit 1, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _out, err = await run_dpkit(
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
            environ=environment(tmp_path),
        )
    assert code == 1, err
    assert f"cannot listen on 127.0.0.1:{port}: " in err
    assert "address already in use" in err
    assert "Traceback" not in err
