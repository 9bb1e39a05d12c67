"""dpkit: connect people to a Digital Person from Python.

The client SDK is the Python counterpart of the Web SDK's ``Scene``; the server (``dpkit serve``)
speaks the same protocol, so the unmodified browser SDK connects to it too.
"""

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
from dpkit.protocol.states import ConnectionStateData, ConnectionStateName, QueueInfo

__version__ = "0.1.0"

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
