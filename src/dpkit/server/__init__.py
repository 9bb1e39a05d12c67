"""dpkit's session server: hosts Digital Persons and speaks the Web SDK's protocol."""

from dpkit.server.app import create_app
from dpkit.server.runner import DpkitServer
from dpkit.server.settings import PersonaSettings, Settings

__all__ = ["DpkitServer", "PersonaSettings", "Settings", "create_app"]
