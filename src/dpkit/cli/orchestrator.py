"""``dpkit orchestrator``: run the reference orchestration server."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpkit.cli.parsers import command_parser, port_number

if TYPE_CHECKING:
    from rich.console import Console

    from dpkit.orchestrator import Orchestrator

HELP = "run a small reference orchestration server (answers from a rule table)"
DESCRIPTION = """\
Run the reference orchestration server. Point a persona at it with the persona setting
control_url (DPKIT_PERSONA_CONTROL_URL=ws://127.0.0.1:8090/control): the session's client then
relays every conversation to it. It answers from a rule table (--rules FILE, JSON:
[{"match": ["bye"], "answer": "Bye!", "end": true}, ...]); a rule with "end" ends the
conversation, which the session server reports as conversationEnded.
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "orchestrator", HELP, DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port",
        type=port_number,
        default=8090,
        help="port to listen on, 0 to 65535; 0 picks a free one (%(default)s)",
    )
    parser.add_argument(
        "--rules", type=Path, help="a JSON rule table (default: a small built-in one)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dpkit.errors import ConfigurationError
    from dpkit.orchestrator import DEFAULT_RULES, Orchestrator, load_rules

    console = Console(stderr=True, soft_wrap=True)  # a path or a key stays whole
    try:
        rules = load_rules(args.rules) if args.rules else DEFAULT_RULES
    except ConfigurationError as exc:
        console.print(f"[red]{exc.name}[/red]: {exc.message}")
        return 2
    return asyncio.run(serve(args.host, args.port, Orchestrator(rules), console))


async def serve(host: str, port: int, orchestrator: Orchestrator, console: Console) -> int:
    from aiohttp import web

    from dpkit.orchestrator import CONTROL_PATH, create_orchestrator_app

    runner = web.AppRunner(create_orchestrator_app(orchestrator), handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        console.print(f"[red]cannot listen on {host}:{port}[/red]: {exc}")
        await runner.cleanup()
        return 1
    bound = runner.addresses[0][1]
    console.print(f"[bold]dpkit orchestrator[/bold] at ws://{host}:{bound}{CONTROL_PATH}")
    console.print(f"  {len(orchestrator.rules)} rules; Ctrl-C to stop")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
