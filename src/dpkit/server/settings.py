"""The server's settings: one frozen object, from arguments, a TOML file or ``DPKIT_*`` variables.

Precedence, lowest first: built-in defaults (the embedded default that runs on a fresh machine),
the config file, ``DPKIT_*`` environment variables, then explicit arguments. Every field can be
set each way; the environment variable is the field's name in upper case with a ``DPKIT_`` prefix
(``DPKIT_PORT=8080``, ``DPKIT_ICE_ADDRESSES=127.0.0.1,::1``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpkit.errors import ConfigurationError
from dpkit.rtc import loopback_for, validate_addresses


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/dpkit`` (``~/.local/share/dpkit``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dpkit"


@dataclass(frozen=True)
class PersonaSettings:
    """How one Digital Person looks and sounds."""

    name: str = "Ava"
    video_width: int = 640
    video_height: int = 480
    video_fps: float = 15.0
    #: An orchestration server's socket URL (``accepted.controlUrl``); empty: none.
    control_url: str = ""
    #: The asset bundle: a directory or an http(s) URL holding manifest.json; empty: built in.
    assets: str = ""
    #: Greet with the corpus's WELCOME_MESSAGE once the client's video plays (``videoStarted``),
    #: or after ``greet_wait_s`` at the latest; off: the app asks with an ``init`` request.
    greet_at_start: bool = True
    greet_wait_s: float = 30.0
    #: A session with no interaction for this long ends with sessionTimeout (seconds).
    idle_timeout_s: float = 300.0
    #: How long before that the client is warned (``dpkit/idleWarning``); 0: no warning.
    idle_warning_s: float = 30.0

    def __post_init__(self) -> None:
        if self.video_width < 16 or self.video_height < 16:
            raise ConfigurationError("persona video size must be at least 16x16")
        if self.video_width % 2 or self.video_height % 2:
            raise ConfigurationError(
                f"persona video size must be even, got {self.video_width}x{self.video_height}"
            )
        if not 0 < self.video_fps <= 60:
            raise ConfigurationError(f"persona video_fps must be in (0, 60], got {self.video_fps}")
        if self.idle_timeout_s <= 0 or not 0 <= self.idle_warning_s <= self.idle_timeout_s:
            raise ConfigurationError(
                "persona idle_timeout_s must be positive and idle_warning_s within it, got "
                f"{self.idle_timeout_s} and {self.idle_warning_s}"
            )


@dataclass(frozen=True)
class Settings:
    """Everything ``dpkit serve`` needs; the defaults are the embedded default."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: The URL clients use to reach this server; derived from host and port when empty.
    public_url: str = ""
    data_dir: Path = field(default_factory=default_data_dir)
    #: How many Digital Persons this node runs at once.
    capacity: int = 4
    #: How many clients may wait for a Digital Person, and for how long (seconds), before noScene.
    queue_max_length: int = 16
    queue_max_wait_s: float = 120.0
    #: How long a persistent session whose client vanished stays resumable (seconds).
    resume_window_s: float = 10.0
    #: Local addresses ICE may gather on; empty: loopback for a loopback host, else every one.
    ice_addresses: tuple[str, ...] = ()
    #: ``turn:``/``stun:`` URLs sent to clients in ``established.iceServers``.
    ice_servers: tuple[str, ...] = ()
    #: How long a token from the token endpoint is valid, in seconds.
    token_ttl_s: float = 300.0
    #: How long the server waits for the client's offer, and for ICE to connect, in seconds.
    offer_timeout_s: float = 30.0
    connect_timeout_s: float = 30.0
    #: ``established.settings.microphoneMuteDelay`` (-1: the client never mutes its microphone).
    microphone_mute_delay_ms: int = -1
    log_to_server: bool = False
    #: Routing id of this node (``accepted.server``).
    node_id: str = "node-1"
    persona: PersonaSettings = field(default_factory=PersonaSettings)
    #: URLs that receive every feed event as a signed POST (see server.webhooks).
    webhook_urls: tuple[str, ...] = ()
    #: The HMAC key for webhook signatures; empty: the admin token.
    webhook_secret: str = ""
    #: The admin API's token; empty: the one generated in keys.json.
    admin_token: str = ""
    #: Serve the reference page at ``/`` (with ``/api/jwt`` and the default key for it).
    serve_page: bool = True
    #: Where the Web SDK's bundle is; empty: found under ``node_modules/`` (see server.page).
    web_sdk_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be in 0..65535, got {self.port}")
        if self.capacity < 1:
            raise ConfigurationError(f"capacity must be at least 1, got {self.capacity}")
        try:
            validate_addresses(self.ice_addresses)
        except ValueError as exc:
            raise ConfigurationError(f"ice_addresses: {exc}") from None
        if self.queue_max_length < 0:
            raise ConfigurationError(
                f"queue_max_length must not be negative, got {self.queue_max_length}"
            )
        for name in (
            "token_ttl_s",
            "offer_timeout_s",
            "connect_timeout_s",
            "queue_max_wait_s",
            "resume_window_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")

    @property
    def effective_ice_addresses(self) -> tuple[str, ...] | None:
        """The addresses ICE gathers on (None: every non-loopback interface)."""
        if self.ice_addresses:
            return self.ice_addresses
        return loopback_for(self.host)

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from defaults, a TOML file, ``DPKIT_*`` variables and overrides."""
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_read_config_file(config_file))
        values.update(_read_environment(os.environ if environ is None else environ))
        values.update({key: value for key, value in overrides.items() if value is not None})
        settings: Settings = _build(cls, values, "settings")
        return settings


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    # A file may keep the server's settings under [server] or at its top level.
    section = data.get("server", data)
    if not isinstance(section, dict):
        raise ConfigurationError(f"config file {path}: [server] must be a table")
    return dict(section)


def _read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    persona: dict[str, Any] = {}
    persona_fields = {f.name for f in dataclasses.fields(PersonaSettings)}
    for f in dataclasses.fields(Settings):
        if f.name == "persona":
            continue
        raw = environ.get(f"DPKIT_{f.name.upper()}")
        if raw is not None:
            values[f.name] = raw
    for name in persona_fields:
        raw = environ.get(f"DPKIT_PERSONA_{name.upper()}")
        if raw is not None:
            persona[name] = raw
    if persona:
        values["persona"] = persona
    return values


def _convert(name: str, kind: Any, raw: Any) -> Any:
    """Turn a value from TOML or the environment into the field's type."""
    if kind in ("str", str):
        return str(raw)
    if kind in ("Path", Path, "Path | None"):
        return Path(raw).expanduser()
    if kind in ("bool", bool):
        if isinstance(raw, bool):
            return raw
        lowered = str(raw).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"{name} must be true or false, got {raw!r}")
    if kind in ("int", int, "float", float):
        number_type, what = (int, "an integer") if kind in ("int", int) else (float, "a number")
        try:
            return number_type(raw)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{name} must be {what}, got {raw!r}") from None
    if kind == "tuple[str, ...]":
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(str(item).strip() for item in items if str(item).strip())
    raise ConfigurationError(f"{name}: unsupported setting type {kind}")


def _build(cls: Any, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigurationError(f"unknown {where}: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        if name == "persona" and cls is Settings:
            if isinstance(raw, PersonaSettings):
                kwargs[name] = raw
            elif isinstance(raw, Mapping):
                kwargs[name] = _build(PersonaSettings, raw, "persona settings")
            else:
                raise ConfigurationError("persona must be a table of persona settings")
            continue
        kwargs[name] = _convert(name, known[name].type, raw)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"bad {where}: {exc}") from None
