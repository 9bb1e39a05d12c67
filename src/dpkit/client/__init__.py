"""dpkit's asyncio client SDK: ``Scene`` and what it needs."""

from dpkit.client.devices import DeviceProvider, NoDevices, SyntheticDevices, UserMedia
from dpkit.client.options import MediaDevices, RetryOptions
from dpkit.client.persona import Persona
from dpkit.client.scene import ConnectionStateView, Scene, TokenServer

__all__ = [
    "ConnectionStateView",
    "DeviceProvider",
    "MediaDevices",
    "NoDevices",
    "Persona",
    "RetryOptions",
    "Scene",
    "SyntheticDevices",
    "TokenServer",
    "UserMedia",
]
