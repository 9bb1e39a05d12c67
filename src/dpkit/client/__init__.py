"""dpkit's asyncio client SDK: ``Scene`` and what it needs.

The names below load on first use, so that importing one part of the client (say
``dpkit.client.devices``, which ``dpkit.media.capture`` builds on) does not load all of it:
``Scene`` imports the capture module, and an eager import here would make that a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpkit.lazy import lazy_exports

if TYPE_CHECKING:
    from dpkit.client.conversation import (
        Conversation,
        ConversationStateName,
        RecognizeAlternative,
        RecognizeResult,
        RecognizeResults,
        SpeechMarker,
    )
    from dpkit.client.devices import (
        DeviceError,
        DeviceFailure,
        DeviceProvider,
        NoDevices,
        SyntheticDevices,
        UserMedia,
    )
    from dpkit.client.frames import FrameCounts, FrameStream
    from dpkit.client.history import ConnectionAttempt, ConnectionResult
    from dpkit.client.options import MediaDevices, RetryOptions
    from dpkit.client.persona import Persona
    from dpkit.client.scene import ConnectionStateView, Scene, TokenServer
    from dpkit.media.capture import BackendMissing, SystemDevices

# Each name, and the module it comes from.
_LAZY = {
    "BackendMissing": "dpkit.media.capture",
    "ConnectionAttempt": "dpkit.client.history",
    "ConnectionResult": "dpkit.client.history",
    "ConnectionStateView": "dpkit.client.scene",
    "Conversation": "dpkit.client.conversation",
    "ConversationStateName": "dpkit.client.conversation",
    "DeviceError": "dpkit.client.devices",
    "DeviceFailure": "dpkit.client.devices",
    "DeviceProvider": "dpkit.client.devices",
    "FrameCounts": "dpkit.client.frames",
    "FrameStream": "dpkit.client.frames",
    "MediaDevices": "dpkit.client.options",
    "NoDevices": "dpkit.client.devices",
    "Persona": "dpkit.client.persona",
    "RecognizeAlternative": "dpkit.client.conversation",
    "RecognizeResult": "dpkit.client.conversation",
    "RecognizeResults": "dpkit.client.conversation",
    "RetryOptions": "dpkit.client.options",
    "Scene": "dpkit.client.scene",
    "SpeechMarker": "dpkit.client.conversation",
    "SyntheticDevices": "dpkit.client.devices",
    "SystemDevices": "dpkit.media.capture",
    "TokenServer": "dpkit.client.scene",
    "UserMedia": "dpkit.client.devices",
}


__all__ = [
    "BackendMissing",
    "ConnectionAttempt",
    "ConnectionResult",
    "ConnectionStateView",
    "Conversation",
    "ConversationStateName",
    "DeviceError",
    "DeviceFailure",
    "DeviceProvider",
    "FrameCounts",
    "FrameStream",
    "MediaDevices",
    "NoDevices",
    "Persona",
    "RecognizeAlternative",
    "RecognizeResult",
    "RecognizeResults",
    "RetryOptions",
    "Scene",
    "SpeechMarker",
    "SyntheticDevices",
    "SystemDevices",
    "TokenServer",
    "UserMedia",
]

__getattr__, __dir__ = lazy_exports("dpkit.client", _LAZY, globals(), __all__)
