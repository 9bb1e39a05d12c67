"""The ``dpkit`` entry point: --log-level on either side of the command, bare ``dpkit`` shows the
help, and --version, --help and a command's --help import nothing heavy."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from dpkit.cli import COMMANDS, build_parser, chosen_command
from tests.support import UNIT

#: What a --help must not import: the transport, the media stack and the server.
HEAVY = ("aiohttp", "aiortc", "av", "numpy", "dpkit.server", "dpkit.client", "dpkit.media")

#: Commands whose modules keep every heavy import in run(), so their --help is quick too.
LIGHT_COMMANDS = ("serve", "sessions", "watch", "keys", "orchestrator", "permissions", "devices")


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["serve"], "WARNING"),
        (["--log-level", "DEBUG", "serve"], "DEBUG"),
        (["serve", "--log-level", "DEBUG"], "DEBUG"),
        (["--log-level", "ERROR", "serve", "--log-level", "INFO"], "INFO"),
        (["sessions", "show", "abc", "--log-level", "INFO"], "INFO"),
        (["keys", "list", "--log-level", "ERROR"], "ERROR"),
        (["watch", "http://127.0.0.1:1", "--log-level", "DEBUG"], "DEBUG"),
        (["connect", "--log-level", "INFO"], "INFO"),
        (["--log", "INFO", "devices"], "INFO"),
    ],
)
def test_log_level_goes_before_or_after_the_command(argv: list[str], level: str) -> None:
    """--log-level is taken before the command and after it (the later one wins)."""
    parser = build_parser(only=(chosen_command(argv) or "",))
    assert parser.parse_args(argv).log_level == level


def test_bare_dpkit_prints_the_command_list() -> None:
    """`dpkit` with no arguments prints the help with every command and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "dpkit"], capture_output=True, text=True, timeout=60 * UNIT
    )
    assert done.returncode == 0, done.stderr
    for name in COMMANDS:
        assert f"dpkit {name}" in done.stdout
    assert "usage: dpkit" in done.stdout


def loaded_after(argv: list[str]) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after ``dpkit ARGV`` (which exits)."""
    script = (
        "import contextlib, io, json, sys\n"
        "from dpkit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "    or any(m == h or m.startswith(h + '.') for h in heavy))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60 * UNIT
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], [], *[[name, "--help"] for name in LIGHT_COMMANDS]]
)
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    """--version, --help, bare dpkit and each light command's --help load no aiohttp, aiortc,
    PyAV, numpy, server, client or media module."""
    assert loaded_after(argv) == []


def test_the_command_table_matches_each_module() -> None:
    """Each command's line in `dpkit --help` is its module's HELP, and its parser is its own."""
    parser = build_parser()
    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)
        assert command.help == module.HELP, name
        assert parser.parse_args([name, *_minimal(name)]).run.__module__ == command.module


def _minimal(name: str) -> list[str]:
    """The fewest arguments that make ``name`` parse."""
    return {"sessions": ["list"], "keys": ["list"], "permissions": ["list"]}.get(
        name, ["install"] if name == "web-sdk" else []
    )


def test_permissions_devices_are_the_consent_stores() -> None:
    """The permissions command's --device choices are the consent store's devices."""
    from dpkit.cli.permissions import DEVICES
    from dpkit.client.consent import DEVICES as CONSENT_DEVICES

    assert tuple(DEVICES) == tuple(CONSENT_DEVICES)
