"""One way to declare a ``dpkit`` subcommand, so every one gets full help text alike, and the
argparse types that validate its options (a bad value is a usage error naming the option).

Light on purpose: the parser of every command is built from this module and the command's own,
before any heavy import.
"""

from __future__ import annotations

import argparse
import re
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def command_parser(
    commands: Any, name: str, help: str, description: str
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` with a one-line ``help`` and a preformatted ``description``.

    Every command takes ``--log-level`` after its name too (``dpkit serve --log-level DEBUG``);
    given nowhere, the one before the command (or its default) stands.
    """
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=LOG_LEVELS,
        help="how much to log to stderr (default: WARNING)",
    )
    return parser


def _number(text: str, kind: type[int] | type[float], what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value != value or value in (float("inf"), float("-inf")):  # NaN and infinities
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number of seconds greater than zero."""
    value = _number(text, float, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number zero or greater."""
    value = _number(text, float, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number greater than zero."""
    value = int(_number(text, int, "a whole number"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number zero or greater."""
    value = int(_number(text, int, "a whole number"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (pick a free one) to 65535."""
    value = int(_number(text, int, "a port number"))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0 to 65535)")
    return value


def http_url(text: str) -> str:
    """An argparse type: an absolute http:// or https:// URL with a host, without a trailing /."""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL with a host (e.g. https://dp.example.com)"
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} has a bad port") from None
    return text.rstrip("/")


def redis_url(text: str) -> str:
    """An argparse type: a redis://, rediss:// or unix:// URL (never echoed: it may hold a
    password)."""
    if urllib.parse.urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise argparse.ArgumentTypeError(
            "not a redis://, rediss:// or unix:// URL (e.g. redis://127.0.0.1:6379/0)"
        )
    return text


def node_id(text: str) -> str:
    """An argparse type: a node id, 1-64 letters, digits, '.', '_' or '-'."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not a node id (1-64 letters, digits, '.', '_' or '-')"
        )
    return text


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = int(_number(text, int, "a whole number"))
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not from {low} to {high}")
        return value

    return parse


#: The longest key label, id or id prefix the commands take (the real ones are far shorter).
MAX_NAME_CHARS = 128


def _printable(text: str, what: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError(f"{what} must not be empty")
    if len(text) > MAX_NAME_CHARS:
        raise argparse.ArgumentTypeError(f"{what} is longer than {MAX_NAME_CHARS} characters")
    if not text.isprintable():
        raise argparse.ArgumentTypeError(f"{what} {text!r} has control characters")
    return text


def key_label(text: str) -> str:
    """An argparse type: a key's label, printable, 1 to 128 characters."""
    return _printable(text, "a label")


def identifier(text: str) -> str:
    """An argparse type: an id or the start of one (printable, no spaces, 1 to 128 characters)."""
    checked = _printable(text, "an id")
    if any(character.isspace() for character in checked):
        raise argparse.ArgumentTypeError(f"an id has no spaces: {text!r}")
    return checked


DATA_DIR_HELP = (
    "the server's data directory (default: found as 'dpkit serve' finds it: DPKIT_DATA_DIR, "
    "else data_dir in --config FILE, else ~/.local/share/dpkit)"
)


def add_data_dir_options(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--config``: where a command finds the local server's files."""
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help=DATA_DIR_HELP)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the TOML settings file the server runs with (for its data_dir and admin_token)",
    )


def origin_url(text: str) -> str:
    """An argparse type: a server's URL or origin (http, https, ws or wss, with a host)."""
    parsed = urllib.parse.urlsplit(text.strip())
    if parsed.scheme not in ("http", "https", "ws", "wss") or not parsed.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a server's origin (e.g. http://127.0.0.1:8080)"
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} has a bad port") from None
    return text.strip()


def shown(text: object) -> str:
    """``text`` safe to print as it is: control characters (a terminal's escapes) made visible."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` (the first is the header) as lines of aligned columns, no value ever cut.

    A line wider than the terminal wraps on screen as a whole, so copying a value gives all of
    it: ids, keys and origins are never truncated, folded or broken over lines here.
    """
    cells = [tuple(shown(value) for value in row) for row in rows]
    widths = [max(len(row[index]) for row in cells) for index in range(len(cells[0]))]
    return [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
