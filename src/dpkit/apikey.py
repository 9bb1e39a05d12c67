"""API keys: base64 of a JSON object whose ``authServer`` is the token endpoint's URL.

The Web SDK reads only ``authServer``; dpkit's server adds ``keyId`` and ``secret`` to look the key
up. Both the server (to issue keys) and the client (to find the token endpoint) use this module.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from dpkit.errors import ConfigurationError


@dataclass(frozen=True)
class ApiKey:
    """A decoded API key."""

    auth_server: str
    key_id: str | None = None
    secret: str | None = None

    def encode(self) -> str:
        body = {"authServer": self.auth_server, "keyId": self.key_id, "secret": self.secret}
        text = json.dumps({k: v for k, v in body.items() if v is not None}, separators=(",", ":"))
        return base64.b64encode(text.encode()).decode()


def decode_api_key(text: str) -> ApiKey:
    """Decode an API key; raise :class:`ConfigurationError` saying what is wrong with it."""
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, ValueError):
        raise ConfigurationError(
            "the API key is not base64-encoded JSON (broken API key)"
        ) from None
    if not isinstance(data, dict):
        raise ConfigurationError("the API key does not hold a JSON object")
    auth_server = data.get("authServer")
    if not isinstance(auth_server, str) or urlsplit(auth_server).scheme not in ("http", "https"):
        raise ConfigurationError("the API key has no http(s) 'authServer' URL")
    key_id = data.get("keyId")
    secret = data.get("secret")
    return ApiKey(
        auth_server,
        key_id if isinstance(key_id, str) else None,
        secret if isinstance(secret, str) else None,
    )
