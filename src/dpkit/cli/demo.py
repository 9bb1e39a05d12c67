"""``dpkit demo``: the main job on the embedded default, a server and a client in one command."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.console import Console

from dpkit.cli.connect import Target, add_client_options, client_options, connect_and_show
from dpkit.cli.parsers import command_parser
from dpkit.cli.serve import add_server_options, print_banner, settings_from
from dpkit.errors import ConfigurationError
from dpkit.server import DpkitServer
from dpkit.server.settings import Settings

HELP = "run a server and connect a client to it, showing the progress"
DESCRIPTION = """\
Start 'dpkit serve' on its embedded default (on a free loopback port unless --port is given),
connect a client to it exactly as 'dpkit connect' does, show the progress through the five
connection states and the media arriving, then disconnect and stop the server.
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "demo", HELP, DESCRIPTION)
    add_server_options(parser)
    add_client_options(parser)
    parser.set_defaults(run=run, duration=5.0)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        settings = settings_from(args, port=args.port if args.port is not None else 0)
        options = client_options(args)
    except ConfigurationError as exc:
        console.print(f"[red]{exc.name}[/red]: {exc.message}")
        return 2
    return asyncio.run(demo(settings, options, console))


async def demo(settings: Settings, options: Any, console: Console) -> int:
    async with DpkitServer(settings) as server:
        if not options.json:
            print_banner(server, console)
            console.print()
        return await connect_and_show(Target(api_key=server.api_key()), options)
