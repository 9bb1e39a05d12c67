"""The ``dpkit`` command: one subcommand per module in this package.

``dpkit --version``, ``dpkit --help`` and bare ``dpkit`` import no subcommand at all: the command
table below has each one's module and one-line help, and only the module of the command being
run is imported (and builds its parser). A command's heavy imports (aiohttp, aiortc, the server)
happen in its ``run``, so its ``--help`` is quick too.

To add a command: a module with ``HELP``, ``add_parser(commands)`` and a ``run(args)`` set as the
parser's default, and a row in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from dpkit import __version__
from dpkit.cli.parsers import LOG_LEVELS

DESCRIPTION = """\
dpkit connects people to a Digital Person: a real-time, talking, animated persona.

  dpkit serve      run a server that hosts Digital Persons (the Web SDK connects to it too)
  dpkit connect    connect to a Digital Person and show the connection's progress
  dpkit demo       both at once: a server on a free port and a client connected to it
  dpkit sessions   list sessions, or show one's timeline, from the server's journal
  dpkit watch      follow every session's state changes on a server, live
  dpkit keys       list the server's API keys, add one (with session persistence) or remove one
  dpkit orchestrator   a small reference orchestration server (answers from a rule table)
  dpkit permissions    the microphone and camera decisions remembered on this machine
  dpkit devices        the microphones, cameras and speakers this machine has
  dpkit web-sdk        fetch the page's Web SDK from the npm registry ahead of time

Run 'dpkit COMMAND --help' for a command's options. --log-level goes before or after COMMAND.
"""


@dataclass(frozen=True)
class Command:
    """A subcommand: the module that defines it, and its one line in ``dpkit --help``."""

    module: str
    help: str


#: Every subcommand, in the order ``dpkit --help`` lists them. Each ``help`` is its module's
#: ``HELP`` (a test holds them equal), so the list needs no import.
COMMANDS: dict[str, Command] = {
    "serve": Command("dpkit.cli.serve", "run a server that hosts Digital Persons"),
    "connect": Command(
        "dpkit.cli.connect", "connect to a Digital Person and show the connection's progress"
    ),
    "demo": Command(
        "dpkit.cli.demo", "run a server and connect a client to it, showing the progress"
    ),
    "sessions": Command(
        "dpkit.cli.sessions",
        "list sessions, or show one session's timeline, from the server's journal",
    ),
    "watch": Command("dpkit.cli.watch", "follow every session's state changes on a server, live"),
    "keys": Command(
        "dpkit.cli.keys", "list, add or remove the server's API keys (add: with persistence)"
    ),
    "orchestrator": Command(
        "dpkit.cli.orchestrator",
        "run a small reference orchestration server (answers from a rule table)",
    ),
    "permissions": Command(
        "dpkit.cli.permissions",
        "list, reset or revoke the microphone and camera permissions you gave servers",
    ),
    "devices": Command(
        "dpkit.cli.devices",
        "list the microphones, cameras and speakers dpkit can use on this machine",
    ),
    "web-sdk": Command(
        "dpkit.cli.web_sdk", "fetch the page's Web SDK from the npm registry ahead of time"
    ),
}


def build_parser(only: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``dpkit`` parser; ``only``: the commands to build in full (default: every one).

    The others are listed with their help line but have no options, and their modules are not
    imported.
    """
    parser = argparse.ArgumentParser(
        prog="dpkit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dpkit {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=LOG_LEVELS,
        help="how much to log to stderr (default: WARNING); also accepted after COMMAND",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        if only is not None and name not in only:
            commands.add_parser(name, help=command.help, add_help=False)
            continue
        # Its parser takes --log-level too (dpkit.cli.parsers.command_parser).
        importlib.import_module(command.module).add_parser(commands)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, found as argparse will find it, or None."""
    takes_value = False
    for token in argv:
        if takes_value:
            takes_value = False
        elif token == "--":
            return None
        elif token.startswith("-"):
            # --log-level takes a value, also abbreviated (argparse allows --log, --log-l ...).
            takes_value = len(token) > 2 and "--log-level".startswith(token)
        else:
            return token if token in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = chosen_command(arguments)
    parser = build_parser(only=() if command is None else (command,))
    args = parser.parse_args(arguments)
    if args.command is None:
        # Bare `dpkit` (or only --log-level): the command list, not just a usage error.
        parser.print_help()
        return 0
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        # asyncio.run has cancelled the command, whose cleanup has run: just say so.
        print("interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
