"""dpkit: connect people to a Digital Person from Python.

The client SDK is the Python counterpart of the Web SDK's ``Scene``; the server (``dpkit serve``)
speaks the same protocol, so the unmodified browser SDK connects to it too.

``import dpkit`` is cheap: the errors are loaded at once (they are plain Python), and the client's
classes, which need aiortc, are loaded the first time one of them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dpkit.errors import (
    ConnectionError_,
    ControlFailed,
    DpkitError,
    MediaStreamFailed,
    NoScene,
    NoSessionToResume,
    NotSupported,
    NoUserMedia,
    ProtocolError,
    ServerConnectionFailed,
    SessionTimeout,
)

if TYPE_CHECKING:
    from dpkit.client import (
        DeviceProvider,
        MediaDevices,
        NoDevices,
        Persona,
        RetryOptions,
        Scene,
        SyntheticDevices,
        TokenServer,
    )
    from dpkit.protocol.states import ConnectionStateData, ConnectionStateName, QueueInfo

__version__ = "0.1.0"

# Each lazily loaded name, and the module it comes from.
_LAZY = {
    "DeviceProvider": "dpkit.client",
    "MediaDevices": "dpkit.client",
    "NoDevices": "dpkit.client",
    "Persona": "dpkit.client",
    "RetryOptions": "dpkit.client",
    "Scene": "dpkit.client",
    "SyntheticDevices": "dpkit.client",
    "TokenServer": "dpkit.client",
    "ConnectionStateData": "dpkit.protocol.states",
    "ConnectionStateName": "dpkit.protocol.states",
    "QueueInfo": "dpkit.protocol.states",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dpkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ConnectionError_",
    "ConnectionStateData",
    "ConnectionStateName",
    "ControlFailed",
    "DeviceProvider",
    "DpkitError",
    "MediaDevices",
    "MediaStreamFailed",
    "NoDevices",
    "NoScene",
    "NoSessionToResume",
    "NoUserMedia",
    "NotSupported",
    "Persona",
    "ProtocolError",
    "QueueInfo",
    "RetryOptions",
    "Scene",
    "ServerConnectionFailed",
    "SessionTimeout",
    "SyntheticDevices",
    "TokenServer",
    "__version__",
]
