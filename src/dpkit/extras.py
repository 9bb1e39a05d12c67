"""dpkit's optional parts, and the error that names the one to install.

``pip install dpkit`` is the client SDK. ``dpkit[server]`` adds what ``dpkit serve`` needs (the
persona's voice), ``dpkit[audio]`` the microphone and speakers through PortAudio. Code that needs
an extra calls :func:`require_extra` before it starts, so a missing one is a sentence naming the
``pip install`` to run, not an ``ImportError`` from deep inside.
"""

from __future__ import annotations

import importlib.util

from dpkit.errors import ConfigurationError

EXTRAS = {
    "server": ("espeakng_loader",),
    "audio": ("sounddevice",),
}
"""Each extra and the modules it provides."""


class MissingExtra(ConfigurationError):
    """A part of dpkit needs an optional extra that is not installed."""

    name = "missingExtra"
    advice = "Install the extra the message names: pip install 'dpkit[EXTRA]'."

    def __init__(self, extra: str, needed_by: str, module: str) -> None:
        super().__init__(
            f"{needed_by} needs dpkit's {extra!r} extra (the {module} module is missing): "
            f"pip install 'dpkit[{extra}]'"
        )
        self.extra = extra


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require_extra(extra: str, needed_by: str) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extra`` can be imported."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(extra, needed_by, missing[0])
