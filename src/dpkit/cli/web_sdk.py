"""``dpkit web-sdk install``: fetch the reference page's Web SDK ahead of time."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TextIO

from dpkit.cli.parsers import command_parser
from dpkit.errors import ConfigurationError
from dpkit.server.settings import resolve, resolve_data_dir
from dpkit.server.web_sdk import (
    PACKAGE,
    PINNED_VERSION,
    WebSdkError,
    install_web_sdk,
    progress_line,
    registry_url,
    validate_version,
)

HELP = "fetch the page's Web SDK from the npm registry ahead of time"
DESCRIPTION = f"""\
Fetch the browser Web SDK ({PACKAGE}) that the reference page at / loads, check its npm
integrity hash, and install it in the server's data directory (<data_dir>/web-sdk/<version>/),
where dpkit serve finds it. Without it, dpkit serve fetches it the first time the page asks.
Safe to run twice. The data directory is found as dpkit serve finds it (--data-dir, --config,
DPKIT_DATA_DIR, else ~/.local/share/dpkit); the registry is the npm_registry setting
(DPKIT_NPM_REGISTRY), else npm_config_registry, else https://registry.npmjs.org.

  dpkit web-sdk install
  dpkit web-sdk install --data-dir /srv/dpkit

A machine with no registry access can use a copy: run this where the registry is reachable and
copy <data_dir>/web-sdk/ over, or start dpkit serve with --web-sdk-dir DIR.
"""


def add_parser(commands: Any) -> None:
    parser = command_parser(commands, "web-sdk", HELP, DESCRIPTION)
    parser.add_argument("action", choices=["install"], help="what to do")
    parser.add_argument(
        "--version",
        default=PINNED_VERSION,
        help="the Web SDK version (default %(default)s, the one dpkit serve uses; another is "
        "checked against the registry's own integrity for it)",
    )
    parser.add_argument("--data-dir", type=Path, help="the server's data directory")
    parser.add_argument("--config", type=Path, help="the server's TOML settings file")
    parser.add_argument("--registry", help="the npm registry URL (default: as described above)")
    parser.set_defaults(run=run)


class TerminalProgress:
    """One line, rewritten in place on a terminal; a line at each quarter elsewhere."""

    def __init__(self, stream: TextIO, what: str) -> None:
        self._stream = stream
        self._what = what
        self._terminal = stream.isatty()
        self._quarter = -1
        self.drawn = False

    def __call__(self, received: int, total: int | None) -> None:
        line = f"{self._what}: {progress_line(received, total)}"
        if self._terminal:
            self._stream.write(f"\r\x1b[2K{line}")
            self._stream.flush()
            self.drawn = True
            return
        quarter = 4 * received // total if total else -1
        if quarter > self._quarter or (total is None and received == 0):
            self._quarter = quarter
            self._stream.write(line + "\n")
            self._stream.flush()

    def end(self) -> None:
        if self.drawn:
            self._stream.write("\n")
            self._stream.flush()
            self.drawn = False


def run(args: argparse.Namespace) -> int:
    try:
        version = validate_version(args.version)
        # The data directory and the registry exactly as dpkit serve resolves them.
        data_dir: Path = resolve_data_dir(args.data_dir, config_file=args.config).value
        setting = resolve(
            "npm_registry", args.registry, given_as="--registry", config_file=args.config
        )
        registry = registry_url(str(setting.value))
    except ConfigurationError as exc:
        print(f"{exc.name}: {exc.message}", file=sys.stderr)
        return 2
    progress = TerminalProgress(sys.stderr, f"downloading {PACKAGE} {version} from {registry}")
    try:
        result = asyncio.run(
            install_web_sdk(data_dir, version=version, registry=registry, progress=progress)
        )
    except WebSdkError as exc:
        progress.end()
        print(f"{exc.name}: {exc.message}", file=sys.stderr)
        print(f"  {exc.advice}", file=sys.stderr)
        return 1
    progress.end()
    if result.already:
        print(f"{PACKAGE} {version} is already installed in {result.directory}")
    else:
        print(f"installed {PACKAGE} {version} in {result.directory}")
    if version != PINNED_VERSION:
        print(
            f"note: dpkit serve uses {PINNED_VERSION}; to serve this one, start it with "
            f"--web-sdk-dir {result.directory}"
        )
    return 0
