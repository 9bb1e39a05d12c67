"""One way to declare a ``dpkit`` subcommand, so every one gets full help text alike."""

from __future__ import annotations

import argparse
from typing import Any


def command_parser(
    commands: Any, name: str, help: str, description: str
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` with a one-line ``help`` and a preformatted ``description``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
