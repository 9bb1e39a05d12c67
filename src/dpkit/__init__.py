"""dpkit: connect people to a Digital Person from Python.

The client SDK is the Python counterpart of the Web SDK's ``Scene``; the server (``dpkit serve``)
speaks the same protocol, so the unmodified browser SDK connects to it too.

``import dpkit`` is cheap: the errors are loaded at once (they are plain Python), and the client's
classes, which need aiortc, are loaded the first time one of them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpkit.errors import (
    AssetsFailed,
    ConfigurationError,
    ConnectionError_,
    ControlFailed,
    DpkitError,
    FrameTooLarge,
    InvalidStateError,
    MediaStreamFailed,
    NoScene,
    NoSession,
    NoSessionToResume,
    NotSupported,
    NoUserMedia,
    ProtocolError,
    ProtocolRejected,
    RequestFailed,
    SceneResponseError,
    ServerConnectionFailed,
    SessionTimeout,
    TooManySockets,
    UnknownConnectionError,
)
from dpkit.lazy import lazy_exports

if TYPE_CHECKING:
    from dpkit.client import (
        BackendMissing,
        ConnectionAttempt,
        ConnectionResult,
        Conversation,
        ConversationStateName,
        DeviceError,
        DeviceFailure,
        DeviceProvider,
        FrameCounts,
        FrameStream,
        MediaDevices,
        NoDevices,
        Persona,
        RecognizeAlternative,
        RecognizeResult,
        RecognizeResults,
        RetryOptions,
        Scene,
        SpeechMarker,
        SyntheticDevices,
        SystemDevices,
        TokenServer,
    )
    from dpkit.extras import MissingExtra
    from dpkit.media.files import MediaFileDevices
    from dpkit.protocol.states import ConnectionStateData, ConnectionStateName, QueueInfo

__version__ = "0.1.0"

# Each lazily loaded name, and the module it comes from.
_LAZY = {
    "BackendMissing": "dpkit.client",
    "ConnectionAttempt": "dpkit.client",
    "ConnectionResult": "dpkit.client",
    "Conversation": "dpkit.client",
    "ConversationStateName": "dpkit.client",
    "DeviceError": "dpkit.client",
    "DeviceFailure": "dpkit.client",
    "DeviceProvider": "dpkit.client",
    "FrameCounts": "dpkit.client",
    "FrameStream": "dpkit.client",
    "MediaDevices": "dpkit.client",
    "NoDevices": "dpkit.client",
    "Persona": "dpkit.client",
    "RecognizeAlternative": "dpkit.client",
    "RecognizeResult": "dpkit.client",
    "RecognizeResults": "dpkit.client",
    "RetryOptions": "dpkit.client",
    "Scene": "dpkit.client",
    "SpeechMarker": "dpkit.client",
    "SyntheticDevices": "dpkit.client",
    "SystemDevices": "dpkit.client",
    "TokenServer": "dpkit.client",
    "MediaFileDevices": "dpkit.media.files",
    "MissingExtra": "dpkit.extras",
    "ConnectionStateData": "dpkit.protocol.states",
    "ConnectionStateName": "dpkit.protocol.states",
    "QueueInfo": "dpkit.protocol.states",
}


__all__ = [
    "AssetsFailed",
    "BackendMissing",
    "ConfigurationError",
    "ConnectionAttempt",
    "ConnectionError_",
    "ConnectionResult",
    "ConnectionStateData",
    "ConnectionStateName",
    "ControlFailed",
    "Conversation",
    "ConversationStateName",
    "DeviceError",
    "DeviceFailure",
    "DeviceProvider",
    "DpkitError",
    "FrameCounts",
    "FrameStream",
    "FrameTooLarge",
    "InvalidStateError",
    "MediaDevices",
    "MediaFileDevices",
    "MediaStreamFailed",
    "MissingExtra",
    "NoDevices",
    "NoScene",
    "NoSession",
    "NoSessionToResume",
    "NoUserMedia",
    "NotSupported",
    "Persona",
    "ProtocolError",
    "ProtocolRejected",
    "QueueInfo",
    "RecognizeAlternative",
    "RecognizeResult",
    "RecognizeResults",
    "RequestFailed",
    "RetryOptions",
    "Scene",
    "SceneResponseError",
    "ServerConnectionFailed",
    "SessionTimeout",
    "SpeechMarker",
    "SyntheticDevices",
    "SystemDevices",
    "TokenServer",
    "TooManySockets",
    "UnknownConnectionError",
    "__version__",
]

__getattr__, __dir__ = lazy_exports("dpkit", _LAZY, globals(), __all__)
