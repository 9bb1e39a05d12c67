"""Session tokens: compact HS256 JSON Web Tokens signed with the server's secret.

The token is opaque to clients (the Web SDK appends it to the socket URL and sends it as a Bearer
token to the telemetry endpoints); only this server reads it. ``typ`` keeps a telemetry token from
opening a session socket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any


class InvalidToken(Exception):
    """The token is malformed, forged, expired or of the wrong type; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        #: Secrets replaced by :meth:`rekey`: tokens they signed stay valid until they expire.
        self._previous: list[bytes] = []

    def rekey(self, secret: bytes) -> None:
        """Sign with ``secret`` from now on (a node joining its cluster takes the cluster's);
        tokens signed before still verify."""
        if secret != self._secret:
            self._previous = [self._secret, *self._previous][:4]
            self._secret = secret

    def issue(self, claims: dict[str, Any], *, typ: str, now: float, ttl_s: float) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = {**claims, "typ": typ, "iat": int(now), "exp": int(now + ttl_s)}
        body["jti"] = secrets.token_hex(8)
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        signature = _b64(self._sign(f"{header}.{payload}"))
        return f"{header}.{payload}.{signature}"

    def verify(self, token: str, *, typ: str, now: float) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("the token is not a JWT")
        header, payload, signature = parts
        try:
            given = _unb64(signature)
            claims = json.loads(_unb64(payload))
        except (ValueError, json.JSONDecodeError):
            raise InvalidToken("the token is malformed") from None
        signed = f"{header}.{payload}"
        if not any(
            hmac.compare_digest(given, self._sign(signed, secret))
            for secret in (self._secret, *self._previous)
        ):
            raise InvalidToken("the token's signature is not valid for this server")
        if not isinstance(claims, dict) or claims.get("typ") != typ:
            raise InvalidToken(f"the token is not a {typ} token")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp < now:
            raise InvalidToken("the token has expired: fetch a new one")
        return claims

    def _sign(self, text: str, secret: bytes | None = None) -> bytes:
        key = self._secret if secret is None else secret
        return hmac.new(key, text.encode(), hashlib.sha256).digest()
