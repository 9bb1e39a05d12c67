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


#: The schemes of a server URL dpkit's client can connect to.
URL_SCHEMES = ("http", "https", "ws", "wss")
KEY_ADVICE = (
    "Pass the API key `dpkit serve` printed (`dpkit keys list` on the server prints it again), "
    "an http(s):// server URL, or a ws(s):// session URL with an access token."
)


def decode_api_key(text: str) -> ApiKey:
    """Decode an API key; raise :class:`ConfigurationError` saying what is wrong with it.

    The message never repeats the key: the server puts it in a reply to whoever sent it.
    """
    cleaned = text.strip()
    scheme = url_scheme(cleaned)
    if scheme is not None:
        if scheme in URL_SCHEMES:
            raise ConfigurationError(f"it is a {scheme}:// URL, not an API key", advice=KEY_ADVICE)
        raise ConfigurationError(
            f"it is a URL whose scheme {scheme!r} is not http(s) or ws(s), not an API key",
            advice=f"dpkit connects to http(s):// and ws(s):// URLs only, not {scheme}://. "
            + KEY_ADVICE,
        )
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, ValueError):
        raise ConfigurationError(
            "the API key is not base64-encoded JSON (broken API key)", advice=KEY_ADVICE
        ) from None
    if not isinstance(data, dict):
        raise ConfigurationError("the API key does not hold a JSON object", advice=KEY_ADVICE)
    auth_server = data.get("authServer")
    if not isinstance(auth_server, str):
        raise ConfigurationError("the API key has no http(s) 'authServer' URL", advice=KEY_ADVICE)
    auth_scheme = urlsplit(auth_server).scheme.lower()
    if auth_scheme not in ("http", "https"):
        raise ConfigurationError(
            f"the API key has no http(s) 'authServer' URL (its scheme is {auth_scheme[:20]!r})",
            advice="The key's token endpoint must be an http:// or https:// URL: " + KEY_ADVICE,
        )
    key_id = data.get("keyId")
    secret = data.get("secret")
    return ApiKey(
        auth_server,
        key_id if isinstance(key_id, str) else None,
        secret if isinstance(secret, str) else None,
    )


def url_scheme(text: str) -> str | None:
    """The lower-cased scheme of ``text`` if it is written as a URL (``scheme://...``), else None.

    Bounded, so a hostile string cannot put a long "scheme" into a message.
    """
    head, sep, _rest = text.partition("://")
    if not sep or not head or len(head) > 20:
        return None
    if not (head[0].isascii() and head[0].isalpha()):
        return None
    if not all(c.isascii() and (c.isalnum() or c in "+-.") for c in head):
        return None
    return head.lower()
