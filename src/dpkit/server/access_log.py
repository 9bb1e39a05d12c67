"""The HTTP access log, with every secret taken out of what it prints.

The Web SDK puts its session token in the socket URL (``?access_token=``) and an
``EventSource`` can only pass the admin token in the query (``?token=``), so the request line
aiohttp logs would carry both. :class:`RedactingAccessLogger` writes the same facts with the
values of secret query parameters replaced, and never logs request headers but the user agent.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

#: Query parameters whose values are credentials somewhere in dpkit or the Web SDK.
SECRET_PARAMETERS = frozenset(
    {"access_token", "token", "jwt", "key", "apikey", "api_key", "secret", "password"}
)
REDACTED = "REDACTED"


def redact_url(url: str) -> str:
    """``url`` (a path with a query, or a whole URL) with secret query values replaced."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(
        f"{quote(name, safe='')}="
        + (REDACTED if name.lower() in SECRET_PARAMETERS else quote(value, safe=""))
        for name, value in pairs
    )
    return parts._replace(query=query).geturl()


class RedactingAccessLogger(AbstractAccessLogger):
    """One INFO line per request: client, request line (redacted), status, size, time, agent."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = f"{request.version.major}.{request.version.minor}"
        agent = request.headers.get("User-Agent", "-")
        self.logger.info(
            '%s "%s %s HTTP/%s" %d %d %.3fs "%s"',
            request.remote or "-",
            request.method,
            redact_url(request.path_qs),
            version,
            response.status,
            response.body_length,
            time,
            agent[:200],
        )
