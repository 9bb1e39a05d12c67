"""Getting a session token: from the API key's token endpoint, or given by the application."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from ssl import SSLContext

import aiohttp

from dpkit.apikey import decode_api_key
from dpkit.client.reach import check_url, unreachable
from dpkit.errors import ConfigurationError, ServerConnectionFailed

#: The most of a token endpoint's answer that is read (an answer is a few hundred bytes).
MAX_TOKEN_ANSWER_BYTES = 64 * 1024
#: What a session socket URL may start with (aiohttp opens a WebSocket over any of them).
SOCKET_SCHEMES = ("ws", "wss", "http", "https")


@dataclass(frozen=True)
class SessionToken:
    """Where the session socket is and the token that opens it."""

    url: str
    jwt: str


async def fetch_token(
    api_key: str,
    *,
    session_id: str | None = None,
    ssl: SSLContext | None = None,
    http: aiohttp.ClientSession | None = None,
) -> SessionToken:
    """Ask the API key's ``authServer`` for a token; raise ``serverConnectionFailed`` clearly.

    ``ssl`` is the context an https token endpoint is verified with (None: the system's CAs).
    ``http`` is the HTTP session to ask with, left open (its kept-alive connection can then
    carry the session socket, when that is at the same host); None: one of its own, closed here.
    """
    try:
        key = decode_api_key(api_key)
    except ConfigurationError as exc:
        raise ServerConnectionFailed(f"Invalid API key: {exc.message}", advice=exc.advice) from None
    params = {"sessionId": session_id} if session_id else None
    try:
        async with contextlib.AsyncExitStack() as stack:
            if http is None:
                http = await stack.enter_async_context(aiohttp.ClientSession())
            response = await stack.enter_async_context(
                http.get(
                    key.auth_server,
                    headers={"key": api_key},
                    params=params,
                    ssl=ssl if ssl is not None else True,
                )
            )
            # Bounded: a token answer is a few hundred bytes; a hostile endpoint may send more.
            raw = await response.content.read(MAX_TOKEN_ANSWER_BYTES + 1)
            status = response.status
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise unreachable("the token endpoint", key.auth_server, exc) from None
    if len(raw) > MAX_TOKEN_ANSWER_BYTES:
        raise ServerConnectionFailed(
            f"the token endpoint {key.auth_server} answered more than "
            f"{MAX_TOKEN_ANSWER_BYTES} bytes (MAX_TOKEN_ANSWER_BYTES)",
            advice=f"{key.auth_server} is not a dpkit token endpoint: check the API key's "
            "authServer.",
        )
    return parse_token_answer(key.auth_server, raw.decode("utf-8", "replace"), status)


def parse_token_answer(where: str, text: str, status: int = 200) -> SessionToken:
    """Read ``{url, jwt}``; anything else is ``serverConnectionFailed`` saying why."""
    not_dpkit = (
        f"{where} does not answer as a dpkit token endpoint: check the API key's authServer "
        "(dpkit serve's is <its URL>/api/token)."
    )
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ServerConnectionFailed(
            f"the token endpoint {where} did not answer JSON", advice=not_dpkit
        ) from None
    if not isinstance(data, dict):
        raise ServerConnectionFailed(
            f"the token endpoint {where} did not answer a JSON object", advice=not_dpkit
        )
    url, jwt = data.get("url"), data.get("jwt")
    if isinstance(url, str) and url and isinstance(jwt, str) and jwt:
        check_url("the socket URL the token endpoint gave", url, SOCKET_SCHEMES)
        return SessionToken(url, jwt)
    error = data.get("error")
    if isinstance(error, str):
        raise ServerConnectionFailed(
            f"the token endpoint refused: {error[:500]}", advice=_refusal_advice(where, status)
        )
    raise ServerConnectionFailed(
        f"the token endpoint {where} answered without 'url' and 'jwt'", advice=not_dpkit
    )


def _refusal_advice(where: str, status: int) -> str:
    if status == 401:
        return (
            f"{where} does not accept this API key: use a key that server issued (`dpkit keys "
            "list` on it prints them with its URL)."
        )
    if status == 403:
        return (
            "This API key may not be used from here: add this origin to the key's allowed "
            "origins (`dpkit keys add --origin`), or use a key without origins."
        )
    if status == 429:
        return "Too many token requests from this address: wait a moment, then connect again."
    return ServerConnectionFailed.advice
