"""aiortc plumbing shared by the server and the client: which local addresses ICE may use, and
how soon a silent peer counts as gone.

aioice gathers a host candidate on every non-loopback interface and never on loopback. dpkit
needs both the other way round: tests, benchmarks and a server bound to 127.0.0.1 must keep media
on loopback, and a deployment may want to pin one interface. :func:`ice_addresses` limits the host
candidates gathered by peer connections set up inside it (a context variable, so a server and a
client in one process can each have their own).
"""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import aioice.ice

_limit: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "dpkit_ice_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses

#: ICE consent freshness (RFC 7675): a check every second, and four unanswered in a row end the
#: connection, so a peer that froze or vanished is noticed in about 5 s, not aioice's 30 s (its
#: default is a check every 5 s, six failures). The RFC's 30 s is an upper bound.
CONSENT_INTERVAL_S = 1
CONSENT_FAILURES = 4


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    limit = _limit.get()
    if limit is None:
        addresses: list[str] = _original_get_host_addresses(use_ipv4, use_ipv6)
        return addresses
    return [
        address
        for address in limit
        if (use_ipv4 and ipaddress.ip_address(address).version == 4)
        or (use_ipv6 and ipaddress.ip_address(address).version == 6)
    ]


def _install() -> None:
    # aioice looks the function up in its module at gather time, so replacing it there is enough.
    ice_module: Any = aioice.ice
    ice_module.get_host_addresses = _get_host_addresses
    ice_module.CONSENT_INTERVAL = CONSENT_INTERVAL_S
    ice_module.CONSENT_FAILURES = CONSENT_FAILURES


_install()


def validate_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """Check that each entry is an IP address; raise ValueError naming the bad one."""
    checked = []
    for address in addresses:
        try:
            checked.append(str(ipaddress.ip_address(address.strip())))
        except ValueError:
            raise ValueError(f"not an IP address: {address!r}") from None
    return tuple(checked)


def validate_networks(networks: Sequence[str]) -> tuple[str, ...]:
    """Check that each entry is an IP address or network; raise ValueError naming the bad one."""
    checked = []
    for network in networks:
        try:
            checked.append(str(ipaddress.ip_network(network.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"not an IP address or network: {network!r}") from None
    return tuple(checked)


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_for(host: str) -> tuple[str, ...] | None:
    """The ICE addresses to use by default when talking to or serving on ``host``."""
    if not is_loopback_host(host):
        return None
    return ("::1",) if host.strip("[]") == "::1" else ("127.0.0.1",)


@contextmanager
def ice_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Gather host candidates only on ``addresses`` (None: aioice's default) inside the block."""
    token = _limit.set(tuple(addresses) if addresses is not None else None)
    try:
        yield
    finally:
        _limit.reset(token)
