"""Getting a session token: from the API key's token endpoint, or given by the application."""

from __future__ import annotations

import json
from dataclasses import dataclass
from ssl import SSLContext

import aiohttp

from dpkit.apikey import decode_api_key
from dpkit.errors import ConfigurationError, ServerConnectionFailed


@dataclass(frozen=True)
class SessionToken:
    """Where the session socket is and the token that opens it."""

    url: str
    jwt: str


async def fetch_token(
    api_key: str, *, session_id: str | None = None, ssl: SSLContext | None = None
) -> SessionToken:
    """Ask the API key's ``authServer`` for a token; raise ``serverConnectionFailed`` clearly.

    ``ssl`` is the context an https token endpoint is verified with (None: the system's CAs).
    """
    try:
        key = decode_api_key(api_key)
    except ConfigurationError as exc:
        raise ServerConnectionFailed(f"Invalid API key: {exc.message}") from None
    params = {"sessionId": session_id} if session_id else None
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                key.auth_server,
                headers={"key": api_key},
                params=params,
                ssl=ssl if ssl is not None else True,
            ) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, OSError) as exc:
        raise ServerConnectionFailed(
            f"cannot reach the token endpoint {key.auth_server}: {exc}"
        ) from None
    return parse_token_answer(key.auth_server, text)


def parse_token_answer(where: str, text: str) -> SessionToken:
    """Read ``{url, jwt}``; anything else is ``serverConnectionFailed`` saying why."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ServerConnectionFailed(f"the token endpoint {where} did not answer JSON") from None
    if not isinstance(data, dict):
        raise ServerConnectionFailed(f"the token endpoint {where} did not answer a JSON object")
    url, jwt = data.get("url"), data.get("jwt")
    if isinstance(url, str) and url and isinstance(jwt, str) and jwt:
        return SessionToken(url, jwt)
    error = data.get("error")
    if isinstance(error, str):
        raise ServerConnectionFailed(f"the token endpoint refused: {error}")
    raise ServerConnectionFailed(f"the token endpoint {where} answered without 'url' and 'jwt'")
