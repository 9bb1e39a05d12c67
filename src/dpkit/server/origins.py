"""Which browser origins may use an API key.

A browser says where a page comes from in the ``Origin`` header of every cross-origin request, and
a page cannot forge it; so a key limited to some origins cannot be lifted into another site's page.
A client that is not a browser sends no ``Origin`` (and could send any), so the list restricts
browsers only; the key's secret is what restricts everyone else.

An entry is an origin (``https://kiosk.example.com``), ``self`` (the origin this server is reached
at, for the reference page's own key) or ``*`` (any origin).
"""

from __future__ import annotations

from urllib.parse import urlsplit

SELF = "self"
ANY = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without a default port; ValueError if not one."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def check_origin_entry(entry: str) -> str:
    """An allowed-origins entry, normalised; ValueError naming a bad one."""
    if entry in (SELF, ANY):
        return entry
    return normalise_origin(entry)


def origin_allowed(origin: str | None, allowed: tuple[str, ...], own_origin: str) -> bool:
    """Whether a request with this ``Origin`` header may use a key allowing ``allowed``."""
    if origin is None:
        return True
    if ANY in allowed:
        return True
    try:
        given = normalise_origin(origin)
    except ValueError:
        return False  # "null" (a sandboxed frame, a file) and anything else odd
    if SELF in allowed and given == normalise_origin(own_origin):
        return True
    return given in allowed
