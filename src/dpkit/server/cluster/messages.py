"""Reading what a Redis pub/sub subscription hands a node: bounded, and never trusted."""

from __future__ import annotations

import json
from typing import Any


def channel_of(message: dict[str, Any]) -> str | None:
    """The channel of a published message; None for anything else (subscribe confirmations)."""
    if message.get("type") != "message":
        return None
    channel = message.get("channel")
    return channel.decode(errors="replace") if isinstance(channel, bytes) else str(channel)


def json_body(message: dict[str, Any], max_bytes: int) -> dict[str, Any] | None:
    """The message's data as a JSON object of at most ``max_bytes``; None if it is not one."""
    data = message.get("data")
    if not isinstance(data, bytes | str) or len(data) > max_bytes:
        return None
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
