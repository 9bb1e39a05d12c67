"""``dpkit serve``: run the session server until interrupted.

The banner's hints (``dpkit connect URL``, ``dpkit watch URL``, ``dpkit keys list``) carry the
options that make them find this server's data directory and admin token exactly as printed.
The server itself is imported in :func:`run`, so ``dpkit serve --help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpkit.cli.parsers import (
    command_parser,
    http_url,
    node_id,
    port_number,
    positive_int,
    redis_url,
)

if TYPE_CHECKING:
    from rich.console import Console

    from dpkit.server import DpkitServer, Settings

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
    parser.add_argument("--config", type=Path, metavar="FILE", help="a TOML settings file")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=port_number,
        help="port to listen on, 0 to 65535; 0 picks a free one (default 8080)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where keys and state live; created if missing, must be writable (default "
        "DPKIT_DATA_DIR, else data_dir in --config, else ~/.local/share/dpkit)",
    )
    parser.add_argument(
        "--capacity", type=positive_int, help="Digital Persons run at once, 1 or more (default 4)"
    )
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
        type=http_url,
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
        "--web-sdk-dir",
        type=Path,
        metavar="DIR",
        help="serve the page's Web SDK from this copy of its bundles directory (holding "
        "smwebsdk.js) instead of fetching it from the npm registry",
    )
    parser.add_argument(
        "--redis-url",
        type=redis_url,
        metavar="URL",
        help="join the cluster on this Redis (redis://, rediss:// or unix://; default: none, "
        "one node alone)",
    )
    parser.add_argument(
        "--node-id",
        type=node_id,
        help="this node's id in the cluster, unique (default node-1)",
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
    from dpkit.server.settings import Settings

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
        "web_sdk_dir": args.web_sdk_dir,
        "redis_url": args.redis_url,
        "node_id": args.node_id,
    }
    values.update(overrides)
    return Settings.load(args.config, **values)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from dpkit.errors import ConfigurationError
    from dpkit.extras import require_extra
    from dpkit.server.settings import prepare_data_dir

    console = Console(stderr=True, soft_wrap=True)  # a path or a key stays whole
    try:
        require_extra("server", "dpkit serve")
        settings = settings_from(args)
        # Before any key or journal is written: a data directory that cannot be written is
        # one named error, not a traceback from sqlite or a misleading listen error.
        prepare_data_dir(settings.data_dir)
    except ConfigurationError as exc:
        say(console, f"[red]{exc.name}[/red]: {escape(exc.message)}")
        return 2
    return asyncio.run(serve(settings, console, config_file=args.config))


async def serve(settings: Settings, console: Console, *, config_file: Path | None = None) -> int:
    from rich.markup import escape

    from dpkit.errors import ConfigurationError
    from dpkit.server import DpkitServer
    from dpkit.server.connections import raise_open_file_limit
    from dpkit.server.state import STATE

    # Each connection and each session's sockets are file descriptors: take what the system
    # allows, and the connection limit is kept under it (dpkit.server.connections).
    raise_open_file_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server: DpkitServer | None = None
    listening = False
    try:
        server = DpkitServer(settings)
        async with server:
            listening = True
            print_banner(server, console, config_file=config_file)
            await stop.wait()
            console.print("shutting down: ending live sessions ...")
    except ConfigurationError as exc:
        say(console, f"[red]{exc.name}[/red]: {escape(exc.message)}")
        return 2
    except OSError as exc:
        if listening:
            say(console, f"[red]dpkit serve failed[/red]: {escape(str(exc))}")
        elif server is not None and STATE in server.app:
            # The lifespan ran (keys, journal, state) and the socket did not bind: only this
            # is a listen failure.
            where = f"{settings.host}:{settings.port}"
            say(console, f"[red]cannot listen on {escape(where)}[/red]: {escape(str(exc))}")
        else:
            say(console, f"[red]cannot start the server[/red]: {escape(str(exc))}")
        return 1
    return 0


def say(console: Console, markup: str) -> None:
    """One message, never wrapped by rich (a path or a command in it stays whole)."""
    console.print(markup, highlight=False, soft_wrap=True)


def network_warnings(settings: Settings) -> list[str]:
    """What an operator should know before clients reach this server over a network."""
    from dpkit.rtc import is_loopback_host

    warnings = []
    if not is_loopback_host(settings.host) and not settings.tls and not settings.trusted_proxies:
        warnings.append(
            "serving plain http on a network address: browsers give a page the microphone and "
            "camera only over https (and the Web SDK fetches telemetry only over wss). Use "
            "--tls-cert/--tls-key, or a TLS proxy in front with --trusted-proxy "
            "(docs/deployment.md)."
        )
    return warnings


def hint_options(server: DpkitServer, config_file: Path | None = None) -> dict[str, str]:
    """What each banner hint must add to find this server's files as printed, by command.

    ``--data-dir`` when the data directory is not the built-in default; for ``watch``, also
    ``--config`` when the admin token is the config file's (a ``DPKIT_*`` variable is seen by a
    command run in the same environment, as it is by this one).
    """
    from dpkit.server.settings import default_data_dir

    settings = server.settings
    data_dir = ""
    if settings.data_dir.absolute() != default_data_dir().absolute():
        data_dir = f" --data-dir {shlex.quote(str(settings.data_dir.absolute()))}"
    watch = data_dir
    # serve takes no --admin-token, and DPKIT_ADMIN_TOKEN wins over the file: with neither, a
    # token in the settings is the config file's.
    if settings.admin_token and config_file is not None and "DPKIT_ADMIN_TOKEN" not in os.environ:
        watch += f" --config {shlex.quote(str(config_file.absolute()))}"
    return {"connect": data_dir, "watch": watch, "keys": data_dir}


def print_banner(server: DpkitServer, console: Console, *, config_file: Path | None = None) -> None:
    settings = server.settings
    hints = hint_options(server, config_file)
    url = shlex.quote(server.url)
    console.print(f"[bold]dpkit serve[/bold] on {server.url}")
    for warning in network_warnings(settings):
        console.print(f"  [yellow]warning[/yellow]: {warning}")
    console.print(
        f"  Digital Persons: {settings.capacity} x {settings.persona.name} "
        f"({settings.persona.video_width}x{settings.persona.video_height} "
        f"@ {settings.persona.video_fps:g} fps)"
    )
    console.print(f"  data directory:  {settings.data_dir}", markup=False, soft_wrap=True)
    console.print(f"  ICE addresses:   {', '.join(settings.effective_ice_addresses or ('all',))}")
    console.print(
        f"  page Web SDK:    {server.state.web_sdk.describe()}", markup=False, soft_wrap=True
    )
    membership = server.state.membership
    if membership is not None:
        from dpkit.server.cluster.membership import redacted

        joined = (
            "joined" if membership.status == "up" else "Redis unreachable: serving alone for now"
        )
        console.print(
            f"  cluster:         node {settings.node_id} on {redacted(settings.redis_url)} "
            f"({joined})",
            markup=False,
            soft_wrap=True,
        )

    # The hints are printed as they are (no markup, never wrapped mid-command), to be pasted.
    def line(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    page_key = server.state.keys.page_key()
    keys_list = f"dpkit keys list{hints['keys']} --url {url}"
    if page_key is None:
        line(f"  API key:         none: add one with dpkit keys add{hints['keys']} --url {url}")
    elif console.is_terminal:
        from dpkit.server.endpoints import TOKEN_PATH

        line(f"  API key:         {page_key.api_key(server.url + TOKEN_PATH)}")
    else:
        # Not a terminal: this text is going to a file or a log; keep the secrets out of it.
        line(f"  API key:         {keys_list}")
    if console.is_terminal:
        line(f"  admin token:     {server.admin_token}")
    elif settings.admin_token:
        line("  admin token:     the admin_token setting")
    else:
        line(f"  admin token:     in {settings.data_dir / 'keys.json'} (adminToken)")
    line(f"  connect with:    dpkit connect {url}{hints['connect']}")
    line(f"  watch with:      dpkit watch {url}{hints['watch']}")
