"""Why a server could not be reached, as ``serverConnectionFailed`` with advice for the cause.

The seed has one name for every way a connection fails; what the user should do differs by
cause, so each error carries its own advice: nothing listening (is ``dpkit serve`` running at
that address?), a host name that does not resolve, a certificate this client does not trust, a
server that did not answer in time. aiohttp's exceptions stop here (``raise ... from None``): the
public API never leaks them.
"""

from __future__ import annotations

import errno
import ssl
from urllib.parse import urlsplit

import aiohttp

from dpkit.apikey import URL_SCHEMES, url_scheme
from dpkit.errors import ServerConnectionFailed

_REFUSED_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET})
_UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, with the scheme's default port spelled out."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme in ("https", "wss") else 80
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}"


#: The HTTP scheme a WebSocket scheme's connection is made with.
_TRANSPORT_SCHEME = {"ws": "http", "wss": "https"}


def same_server(first: str, second: str) -> bool:
    """Whether two URLs (http(s) or ws(s)) reach the same host and port over the same
    transport, so one kept-alive connection can carry both (``ws://h:1`` is ``http://h:1``)."""

    def transport(url: str) -> str:
        scheme, rest = origin(url).split("://", 1)
        return f"{_TRANSPORT_SCHEME.get(scheme, scheme)}://{rest}"

    return bool(first and second) and transport(first) == transport(second)


def unreachable(what: str, url: str, exc: BaseException) -> ServerConnectionFailed:
    """``what`` (e.g. "the token endpoint") at ``url`` failed with ``exc``: the error to raise."""
    message = f"cannot reach {what} {url}: {exc}" if str(exc) else f"cannot reach {what} {url}"
    return ServerConnectionFailed(message, advice=advice_for(url, exc))


def advice_for(url: str, exc: BaseException) -> str:
    """What to do about ``exc``, naming ``url``; the class's general advice if the cause is new."""
    where = origin(url)
    host = urlsplit(url).hostname or where
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return (
            f"The TLS certificate of {where} is not trusted here: pass Scene(ssl=context) with "
            "a context that trusts its CA (or set SSL_CERT_FILE), or check the address."
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return (
            f"The TLS handshake with {where} failed: check that the server speaks https there "
            "(an http:// server answers plain HTTP), or use http:// / ws://."
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"The host name {host!r} does not resolve: check the server address in {url}."
    os_error = _os_error(exc)
    if os_error is not None and os_error.errno in _REFUSED_ERRNOS:
        return (
            f"Nothing accepted the connection at {where}: is `dpkit serve` running there? "
            "Start it, or check the host and port (of the API key's authServer, or of the URL)."
        )
    if os_error is not None and os_error.errno in _UNREACHABLE_ERRNOS:
        return (
            f"There is no route to {where} from this machine: check the address, the network "
            "and any firewall in between."
        )
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return (
            f"{where} did not answer in time: check that the server is running and reachable "
            "from here (a firewall may drop the connection)."
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return (
            f"{where} closed the connection without answering: check that it is a dpkit server "
            "(and not, say, an https port reached with http://)."
        )
    return ServerConnectionFailed.advice


def check_url(what: str, url: str, schemes: tuple[str, ...] = URL_SCHEMES) -> None:
    """Refuse ``url`` unless its scheme is one of ``schemes``, naming the scheme it has."""
    scheme = url_scheme(url)
    if scheme in schemes:
        return
    allowed = " or ".join(f"{s}://" for s in schemes)
    if scheme is None:
        raise ServerConnectionFailed(
            f"{what} {url[:200]!r} is not a URL",
            advice=f"Give {what} as an absolute URL starting with {allowed}.",
        )
    raise ServerConnectionFailed(
        f"{what} {url[:200]!r} has the scheme {scheme!r}, which is not one of {allowed}",
        advice=f"Use a URL starting with {allowed}: dpkit does not speak {scheme}://.",
    )


def _os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return exc
    cause = exc.__cause__ or exc.__context__
    return cause if isinstance(cause, OSError) else None
