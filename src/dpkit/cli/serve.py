"""``dpkit serve``: run the session server until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from rich.console import Console

from dpkit.cli.parsers import command_parser
from dpkit.errors import ConfigurationError
from dpkit.rtc import is_loopback_host
from dpkit.server import DpkitServer, Settings
from dpkit.server.connections import raise_open_file_limit

HELP = "run a server that hosts Digital Persons"
DESCRIPTION = """\
Run the Digital Person session server. With no options it runs the embedded default: one built-in
persona, a data directory it creates (~/.local/share/dpkit), and an API key it generates and
prints. Settings come, lowest first, from defaults, --config FILE (TOML), DPKIT_* environment
variables (DPKIT_PORT, DPKIT_CAPACITY, DPKIT_ICE_ADDRESSES, DPKIT_PERSONA_VIDEO_FPS ...) and the
options below. On a network, serve https (--tls-cert, --tls-key) or run behind a TLS proxy
(--trusted-proxy): see docs/deployment.md; every limit is a setting (docs/security.md).
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "serve", HELP, DESCRIPTION)
    add_server_options(parser)
    parser.set_defaults(run=run)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="a TOML settings file")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port to listen on; 0 picks a free one (default 8080)"
    )
    parser.add_argument("--data-dir", type=Path, help="where keys and state live")
    parser.add_argument("--capacity", type=int, help="Digital Persons run at once (default 4)")
    parser.add_argument(
        "--ice-address",
        action="append",
        dest="ice_addresses",
        metavar="ADDRESS",
        help="gather ICE candidates only on this address (repeatable; default: loopback when "
        "serving on loopback, else every interface)",
    )
    parser.add_argument(
        "--public-url",
        help="the URL clients use to reach this server (wins over the Host and X-Forwarded-* "
        "headers)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve https and wss with this PEM certificate",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the certificate's private key"
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        dest="trusted_proxies",
        metavar="ADDRESS",
        help="a reverse proxy (address or network) whose X-Forwarded-Proto/Host/For are "
        "believed (repeatable)",
    )


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "data_dir": args.data_dir,
        "capacity": args.capacity,
        "public_url": args.public_url,
        "ice_addresses": tuple(args.ice_addresses) if args.ice_addresses else None,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "trusted_proxies": tuple(args.trusted_proxies) if args.trusted_proxies else None,
    }
    values.update(overrides)
    return Settings.load(args.config, **values)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        settings = settings_from(args)
    except ConfigurationError as exc:
        console.print(f"[red]{exc.name}[/red]: {exc.message}")
        return 2
    return asyncio.run(serve(settings, console))


async def serve(settings: Settings, console: Console) -> int:
    # Each connection and each session's sockets are file descriptors: take what the system
    # allows, and the connection limit is kept under it (dpkit.server.connections).
    raise_open_file_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with DpkitServer(settings) as server:
            print_banner(server, console)
            await stop.wait()
            console.print("shutting down: ending live sessions ...")
    except ConfigurationError as exc:
        console.print(f"[red]{exc.name}[/red]: {exc.message}")
        return 2
    except OSError as exc:
        console.print(f"[red]cannot listen on {settings.host}:{settings.port}[/red]: {exc}")
        return 1
    return 0


def network_warnings(settings: Settings) -> list[str]:
    """What an operator should know before clients reach this server over a network."""
    warnings = []
    if not is_loopback_host(settings.host) and not settings.tls and not settings.trusted_proxies:
        warnings.append(
            "serving plain http on a network address: browsers give a page the microphone and "
            "camera only over https (and the Web SDK fetches telemetry only over wss). Use "
            "--tls-cert/--tls-key, or a TLS proxy in front with --trusted-proxy "
            "(docs/deployment.md)."
        )
    return warnings


def print_banner(server: DpkitServer, console: Console) -> None:
    settings = server.settings
    console.print(f"[bold]dpkit serve[/bold] on {server.url}")
    for warning in network_warnings(settings):
        console.print(f"  [yellow]warning[/yellow]: {warning}")
    console.print(
        f"  Digital Persons: {settings.capacity} x {settings.persona.name} "
        f"({settings.persona.video_width}x{settings.persona.video_height} "
        f"@ {settings.persona.video_fps:g} fps)"
    )
    console.print(f"  data directory:  {settings.data_dir}")
    console.print(f"  ICE addresses:   {', '.join(settings.effective_ice_addresses or ('all',))}")
    if console.is_terminal:
        console.print(f"  API key:         {server.api_key()}", soft_wrap=True)
        console.print(f"  admin token:     {server.admin_token}")
    else:
        # Not a terminal: this text is going to a file or a log; keep the secrets out of it.
        keys_file = settings.data_dir / "keys.json"
        console.print(
            f"  API key:         dpkit keys list --data-dir {settings.data_dir} --url {server.url}",
            soft_wrap=True,
        )
        console.print(f"  admin token:     in {keys_file} (adminToken)")
    console.print(f"  connect with:    dpkit connect {server.url}")
    console.print(f"  watch with:      dpkit watch {server.url}")
