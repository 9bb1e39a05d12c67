"""TLS for ``dpkit serve``: an SSL context from the operator's certificate and key.

Browsers give a page the microphone and camera only in a secure context, and the Web SDK fetches
its telemetry token only over ``wss://``; so a server reached at anything but localhost needs
https and wss, served here or by a proxy in front (docs/deployment.md).
"""

from __future__ import annotations

import ssl

from dpkit.errors import ConfigurationError
from dpkit.server.settings import Settings


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The context for ``tls_cert`` and ``tls_key``, or None when TLS is off."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    # OpenSSL's FileNotFoundError carries no file name: say which one is missing ourselves.
    for what, path in (("tls_cert", settings.tls_cert), ("tls_key", settings.tls_key)):
        if not path.exists():
            raise ConfigurationError(f"TLS: {what}: no such file: {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"TLS: cannot use certificate {settings.tls_cert} with key {settings.tls_key}: "
            f"{getattr(exc, 'reason', None) or exc}"
        ) from None
    return context
