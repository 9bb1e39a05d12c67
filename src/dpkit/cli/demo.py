"""``dpkit demo``: the main job on the embedded default, a server and a client in one command."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from dpkit.cli.connect import (
    ClientOptions,
    Target,
    add_client_options,
    client_options,
    connect_and_show,
    print_usage_error,
)
from dpkit.cli.parsers import command_parser
from dpkit.cli.serve import add_server_options, print_banner, settings_from
from dpkit.errors import ConfigurationError

if TYPE_CHECKING:
    from rich.console import Console

    from dpkit.server.settings import Settings

HELP = "run a server and connect a client to it, showing the progress"
DESCRIPTION = """\
Start 'dpkit serve' on its embedded default (on a free loopback port unless --port is given),
connect a client to it exactly as 'dpkit connect' does, show the progress through the five
connection states and the media arriving, then disconnect and stop the server.

The client's microphone and camera are synthetic (a tone and a test pattern) unless --devices
says otherwise, so the demo runs the same on a machine with no devices; --devices system uses
this machine's own, after asking you.
"""

#: How long the demo stays connected unless --duration says otherwise (seconds).
DEFAULT_DURATION_S = 5.0


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "demo", HELP, DESCRIPTION)
    add_server_options(parser)
    add_client_options(parser, default_devices="synthetic", default_duration=DEFAULT_DURATION_S)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dpkit.extras import require_extra
    from dpkit.server.settings import prepare_data_dir

    console = Console(stderr=True, soft_wrap=True)  # a path or a key stays whole
    try:
        require_extra("server", "dpkit demo")
        # The client's options first: a bad one stops the demo before a server starts.
        options = client_options(args)
        settings = settings_from(args, port=args.port if args.port is not None else 0)
        prepare_data_dir(settings.data_dir)
    except ConfigurationError as exc:
        print_usage_error(console, exc)
        return 2
    return asyncio.run(demo(settings, options, console))


async def demo(settings: Settings, options: ClientOptions, console: Console) -> int:
    from rich.markup import escape

    from dpkit.server import DpkitServer

    try:
        async with DpkitServer(settings) as server:
            if not options.json:
                print_banner(server, console)
                console.print()
            return await connect_and_show(Target(api_key=server.api_key()), options)
    except ConfigurationError as exc:
        print_usage_error(console, exc)
        return 2
    except OSError as exc:
        console.print(f"[red]cannot start the server[/red]: {escape(str(exc))}")
        return 1
