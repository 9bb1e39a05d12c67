"""The ``dpkit`` command: ``serve``, ``connect`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dpkit import __version__
from dpkit.cli import (
    connect,
    demo,
    devices,
    keys,
    orchestrator,
    permissions,
    serve,
    sessions,
    watch,
)

DESCRIPTION = """\
dpkit connects people to a Digital Person: a real-time, talking, animated persona.

  dpkit serve      run a server that hosts Digital Persons (the Web SDK connects to it too)
  dpkit connect    connect to a Digital Person and show the connection's progress
  dpkit demo       both at once: a server on a free port and a client connected to it
  dpkit sessions   list sessions, or show one's timeline, from the server's journal
  dpkit watch      follow every session's state changes on a server, live
  dpkit keys       list the server's API keys, or add one (with session persistence)
  dpkit orchestrator   a small reference orchestration server (answers from a rule table)
  dpkit permissions    the microphone and camera decisions remembered on this machine
  dpkit devices        the microphones, cameras and speakers this machine has

Run 'dpkit COMMAND --help' for a command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpkit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dpkit {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log to stderr (default: WARNING)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.add_parser(commands)
    connect.add_parser(commands)
    demo.add_parser(commands)
    sessions.add_parser(commands)
    watch.add_parser(commands)
    keys.add_parser(commands)
    orchestrator.add_parser(commands)
    permissions.add_parser(commands)
    devices.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
