"""How a request reached this server: its scheme, host and client address, proxies considered.

Behind a TLS-terminating reverse proxy the request aiohttp sees is plain http from the proxy's
address. The proxy says what the client used in ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and
``X-Forwarded-For``; those headers are believed only from an address in ``trusted_proxies``
(anyone else could send them), and ``public_url`` wins over both when it is set.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from aiohttp import web

from dpkit.server.settings import Settings

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ClientView:
    """The request as its client made it."""

    scheme: str
    host: str
    address: str

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"


@lru_cache(maxsize=32)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def is_trusted(address: str | None, proxies: Sequence[str]) -> bool:
    """Whether ``address`` is one of the trusted proxies."""
    if not address or not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(proxies)))


def _first(value: str) -> str:
    return value.split(",", 1)[0].strip()


def _forwarded_for(header: str, proxies: Sequence[str], peer: str) -> str:
    """The client address: the nearest hop in X-Forwarded-For that is not a trusted proxy."""
    hops = [hop.strip() for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a hop that is not an address: believe nothing further out
        if not is_trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


def client_view(request: web.Request, settings: Settings) -> ClientView:
    """Scheme, host and client address of ``request``, as the client sees this server."""
    peer = request.remote or ""
    scheme, host, address = request.scheme, request.host, peer
    if is_trusted(peer, settings.trusted_proxies):
        proto = _first(request.headers.get("X-Forwarded-Proto", ""))
        if proto in ("http", "https"):
            scheme = proto
        forwarded_host = _first(request.headers.get("X-Forwarded-Host", ""))
        if forwarded_host and _HOST.match(forwarded_host):
            host = forwarded_host
        address = _forwarded_for(
            request.headers.get("X-Forwarded-For", ""), settings.trusted_proxies, peer
        )
    if settings.public_url:
        public = urlsplit(settings.public_url)
        scheme, host = public.scheme, public.netloc
    return ClientView(scheme, host, address)
