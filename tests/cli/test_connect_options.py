"""``dpkit connect`` and ``dpkit demo`` options: validated where they enter, with their defaults."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from dpkit.cli import build_parser, main
from dpkit.server import DpkitServer
from tests.support import NO_MEDIA_ARGS, spawn_dpkit

BAD_NUMBERS = [
    ("--duration", "-1", "must be greater than 0"),
    ("--duration", "0", "must be greater than 0"),
    ("--duration", "nan", "is not a number"),
    ("--duration", "inf", "is not a number"),
    ("--timeout", "-1", "must be greater than 0"),
    ("--timeout", "0", "must be greater than 0"),
    ("--timeout", "NaN", "is not a number"),
    ("--timeout", "-inf", "is not a number"),
    ("--retries", "-1", "must be 0 or more"),
    ("--retries", "1.5", "is not a whole number"),
    ("--retries", "inf", "is not a whole number"),
    ("--retry-delay", "-5", "must be 0 or more"),
    ("--retry-delay", "nan", "is not a whole number"),
]


@pytest.mark.parametrize("command", ["connect", "demo"])
@pytest.mark.parametrize(("option", "value", "says"), BAD_NUMBERS)
def test_bad_numbers_are_usage_errors(
    command: str, option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A negative, zero, NaN or infinite value exits 2 with a message naming the option."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, f"{option}={value}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err
    assert says in err


@pytest.mark.parametrize("command", ["connect", "demo"])
def test_good_numbers_are_accepted(command: str) -> None:
    """Positive durations and zero retries (the Web SDK's "use the default") pass."""
    args = build_parser().parse_args(
        [command, "--duration", "0.5", "--timeout", "2", "--retries", "0", "--retry-delay", "0"]
    )
    assert (args.duration, args.timeout, args.retries, args.retry_delay) == (0.5, 2.0, 0, 0)


def test_connect_uses_real_devices_and_demo_synthetic_ones_by_default() -> None:
    """connect defaults to this machine's devices; demo, which runs anywhere, to synthetic ones."""
    parser = build_parser()
    assert parser.parse_args(["connect"]).devices == "system"
    assert parser.parse_args(["demo"]).devices == "synthetic"
    assert parser.parse_args(["connect", "--devices", "synthetic"]).devices == "synthetic"


@pytest.mark.parametrize(("command", "default"), [("connect", "system"), ("demo", "synthetic")])
def test_the_help_names_the_device_default(
    command: str, default: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command's --help says which devices it uses when --devices is not given."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {default})" in help_text


async def test_without_a_terminal_the_default_devices_are_declined_before_any_socket(
    server: DpkitServer, tmp_path: Path
) -> None:
    """The real-device default with no terminal to ask on fails before any socket opens."""
    process = await spawn_dpkit(
        "connect",
        server.api_key(),
        "--json",
        environ={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1, err.decode()
    (event,) = [json.loads(line) for line in out.decode().splitlines()]
    # Synthetic devices would have connected. Real ones: on a machine with a microphone nobody
    # could be asked, so it is not permitted; on one without (a test machine), not available.
    assert event["event"] == "error"
    assert event["name"] in ("noUserMedia", "notSupported")
    assert list(server.state.ended) == []
    assert list(server.state.sessions) == []


@pytest.mark.parametrize("command", ["connect", "demo"])
def test_a_missing_media_file_is_named_before_connecting(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--media-file that does not exist: exit 2 naming the file, and no server started or asked."""
    missing = tmp_path / "nonexistent.mp4"
    assert main([command, "--media-file", str(missing), "--data-dir", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--media-file: no such file {missing}" in err
    assert not (tmp_path / "keys.json").exists()


def test_a_media_file_that_is_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--media-file naming a directory is a usage error that says so."""
    assert main(["connect", "key", "--media-file", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--media-file: {tmp_path} is not a file" in err


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/x", "file:///tmp/key", "htp://host:8080"])
def test_a_target_url_of_another_scheme_is_a_usage_error(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TARGET URL that is neither http(s) nor ws(s) exits 2 naming the schemes, not "API key"."""
    assert main(["connect", target]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"TARGET {target}" in err
    assert "http://, https://, ws:// or wss://" in err
    assert "base64" not in err


def test_a_missing_data_dir_is_named_and_never_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An http:// TARGET with --data-dir /typo: exit 2 naming the directory; nothing created."""
    typo = tmp_path / "typo"
    assert main(["connect", "http://127.0.0.1:8080", "--data-dir", str(typo)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"no API key for http://127.0.0.1:8080: no dpkit data directory at {typo}" in err
    assert "What to do:" in err
    assert not typo.exists()


async def test_the_data_dir_is_found_as_serve_finds_it(server: DpkitServer, tmp_path: Path) -> None:
    """connect http://... reads the key from DPKIT_DATA_DIR, as dpkit serve would use it."""
    home = tmp_path / "home"  # empty: the default data directory does not exist
    environ = {
        **{key: value for key, value in os.environ.items() if not key.startswith("DPKIT_")},
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"),
        "DPKIT_DATA_DIR": str(server.settings.data_dir),
    }
    process = await spawn_dpkit(
        "connect", server.url, "--duration", "0.5", *NO_MEDIA_ARGS, environ=environ
    )
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert len(server.state.ended) == 1
    assert not (home / "data").exists()
