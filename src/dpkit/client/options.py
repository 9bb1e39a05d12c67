"""Connect options with the Web SDK's defaults: media devices and retries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dpkit.errors import ConfigurationError

DEFAULT_MAX_RETRIES = 50
DEFAULT_DELAY_MS = 200


@dataclass(frozen=True)
class RetryOptions:
    """How ``connect()`` retries ``noScene``: ``max_retries`` counts all attempts."""

    max_retries: int = DEFAULT_MAX_RETRIES
    delay_ms: int = DEFAULT_DELAY_MS

    def __post_init__(self) -> None:
        # As in the Web SDK, 0 means "the default".
        if self.max_retries < 0 or self.delay_ms < 0:
            raise ConfigurationError("retry options must not be negative")
        if self.max_retries == 0:
            object.__setattr__(self, "max_retries", DEFAULT_MAX_RETRIES)
        if self.delay_ms == 0:
            object.__setattr__(self, "delay_ms", DEFAULT_DELAY_MS)


@dataclass(frozen=True)
class MediaDevices:
    """Which of the user's devices: ``{"microphone": True}`` in the Web SDK."""

    microphone: bool = False
    camera: bool = False

    @classmethod
    def of(cls, value: MediaDevices | Mapping[str, bool] | None) -> MediaDevices:
        if value is None:
            return cls()
        if isinstance(value, MediaDevices):
            return value
        unknown = set(value) - {"microphone", "camera"}
        if unknown:
            raise ConfigurationError(f"unknown media devices: {', '.join(sorted(unknown))}")
        return cls(bool(value.get("microphone")), bool(value.get("camera")))

    def __or__(self, other: MediaDevices) -> MediaDevices:
        return MediaDevices(self.microphone or other.microphone, self.camera or other.camera)

    @property
    def any(self) -> bool:
        return self.microphone or self.camera


DEFAULT_REQUESTED = MediaDevices(microphone=True, camera=True)
DEFAULT_REQUIRED = MediaDevices(microphone=True)
