"""The server's settings: one frozen object, from arguments, a TOML file or ``DPKIT_*`` variables.

Precedence, lowest first: built-in defaults (the embedded default that runs on a fresh machine),
the config file, ``DPKIT_*`` environment variables, then explicit arguments. Every field can be
set each way; the environment variable is the field's name in upper case with a ``DPKIT_`` prefix
(``DPKIT_PORT=8080``, ``DPKIT_ICE_ADDRESSES=127.0.0.1,::1``).

Every command reads a setting the same way: :meth:`Settings.load` for ``dpkit serve``, and
:func:`resolve` for one setting (``dpkit sessions``, ``watch`` and ``keys`` find the server's data
directory and admin token with it), both from the same sources in the same order
(:func:`_layers`). Read-only commands take the data directory from :func:`existing_data_dir`,
which never creates it; ``dpkit serve`` from :func:`prepare_data_dir`, which creates it and
proves it writable before anything is written to it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dpkit.errors import ConfigurationError
from dpkit.rtc import loopback_for, validate_addresses, validate_networks

#: A frame limit below this could refuse a browser's offer (Chromium 156: 14 KiB for 4 sections).
MIN_FRAME_BYTES = 24 * 1024


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/dpkit`` (``~/.local/share/dpkit``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dpkit"


class NoDataDir(ConfigurationError):
    """A command that only reads found no data directory (or no server's files in it)."""

    name = "noDataDir"
    advice = "Start 'dpkit serve' once with that data directory, or check the path."


class DataDirNotWritable(ConfigurationError):
    """``dpkit serve`` cannot create or write its data directory or a file in it."""

    name = "dataDirNotWritable"
    advice = (
        "Let the user running 'dpkit serve' write to the data directory, or choose another "
        "with --data-dir."
    )


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
    #: Listen to the user's microphone from connect (``startRecognize`` / ``stopRecognize``
    #: switch it), with this engine, taking an intent only at this confidence or above.
    recognition: bool = True
    recognition_engine: str = "pocketsphinx"
    recognition_threshold: float = 0.5
    #: Speech that starts while the persona speaks stops it (off: it is not heard at all).
    barge_in: bool = False
    #: The longest utterance heard as one (seconds); longer speech is cut there.
    max_recognition_s: float = 15.0

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
        if not 0.0 <= self.recognition_threshold <= 1.0:
            raise ConfigurationError(
                f"persona recognition_threshold must be in [0, 1], got {self.recognition_threshold}"
            )
        if not 0 < self.max_recognition_s <= 120:
            raise ConfigurationError(
                f"persona max_recognition_s must be in (0, 120], got {self.max_recognition_s}"
            )
        if self.recognition_engine not in ("pocketsphinx",):
            raise ConfigurationError(
                f"persona recognition_engine must be pocketsphinx, got "
                f"{self.recognition_engine[:40]!r}"
            )


_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


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
    #: How long the server waits for the client's offer, and for ICE to connect, in seconds. A
    #: socket that never offers holds a Digital Person until the first runs out, so it is short.
    offer_timeout_s: float = 10.0
    connect_timeout_s: float = 20.0
    #: ``established.settings.microphoneMuteDelay`` (-1: the client never mutes its microphone).
    microphone_mute_delay_ms: int = -1
    log_to_server: bool = False
    #: Routing id of this node (``accepted.server``), unique in a cluster.
    node_id: str = "node-1"
    #: The cluster's Redis (``redis://``, ``rediss://`` or ``unix://``); empty: one node alone.
    redis_url: str = ""
    #: How often a node renews its record in the cluster, and when a silent one is gone (s).
    cluster_heartbeat_s: float = 1.0
    cluster_expiry_s: float = 3.0
    persona: PersonaSettings = field(default_factory=PersonaSettings)
    #: URLs that receive every feed event as a signed POST (see server.webhooks).
    webhook_urls: tuple[str, ...] = ()
    #: The HMAC key for webhook signatures; empty: the one generated in keys.json.
    webhook_secret: str = ""
    #: The admin API's token; empty: the one generated in keys.json.
    admin_token: str = ""
    #: Serve the reference page at ``/`` (with ``/api/jwt`` and the default key for it).
    serve_page: bool = True
    #: A directory holding the page's Web SDK (``smwebsdk.js``); empty: the copy installed in the
    #: data directory, a checkout's ``node_modules/``, else fetched (see server.web_sdk).
    web_sdk_dir: Path | None = None
    #: The npm registry the page's Web SDK is fetched from; empty: ``npm_config_registry``, else
    #: https://registry.npmjs.org.
    npm_registry: str = ""

    # --- on a real network (docs/deployment.md, docs/security.md) ---
    #: A PEM certificate chain and its private key: serve https and wss (both or neither).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Addresses or networks of reverse proxies whose X-Forwarded-Proto/Host/For are believed.
    trusted_proxies: tuple[str, ...] = ()

    # --- limits: each refusal names the limit in its error or close reason ---
    #: The largest frame the session socket takes (bytes).
    max_frame_bytes: int = 32 * 1024
    #: The longest text of startSpeaking, conversationSend and userText (characters).
    max_text_chars: int = 1000
    #: The longest utterance the voice renders (seconds of speech); the rest is not spoken.
    max_utterance_s: float = 60.0
    #: Session sockets open at once with one API key, and from one client address.
    max_sockets_per_key: int = 64
    max_sockets_per_address: int = 8
    #: New session sockets and token requests per second from one client address (a burst of
    #: ``rate_burst`` is allowed).
    rate_per_address: float = 20.0
    rate_burst: int = 40
    #: Open HTTP connections in all, and from one address; beyond either: 503 and close.
    max_connections: int = 1000
    max_connections_per_address: int = 64
    #: How long a new connection may take to send its request headers, and how long an idle
    #: keep-alive connection stays open (seconds).
    http_header_timeout_s: float = 10.0
    http_keepalive_timeout_s: float = 15.0
    #: The session socket is pinged this often when quiet; no pong within half of it: the client
    #: is gone (seconds).
    socket_heartbeat_s: float = 3.0
    #: The admin event stream (``/api/events``) sends a comment after this much quiet, so proxies
    #: keep it open and a reader that left is noticed (seconds).
    feed_heartbeat_s: float = 15.0
    #: Client log bytes (``diagnostics/log``, only with log_to_server) one session may write.
    client_log_max_bytes: int = 64 * 1024
    #: The largest asset bundle manifest and the largest file in a bundle (bytes).
    max_manifest_bytes: int = 1024 * 1024
    max_asset_bytes: int = 256 * 1024 * 1024
    #: Ended sessions are kept in the journal this long, then pruned (days).
    journal_retention_days: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be in 0..65535, got {self.port}")
        if self.capacity < 1:
            raise ConfigurationError(f"capacity must be at least 1, got {self.capacity}")
        try:
            validate_addresses(self.ice_addresses)
        except ValueError as exc:
            raise ConfigurationError(f"ice_addresses: {exc}") from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("tls_cert and tls_key go together: give both or neither")
        try:
            validate_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigurationError(f"trusted_proxies: {exc}") from None
        if self.public_url and urlsplit(self.public_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"public_url must be an http(s) URL, got {self.public_url!r}")
        if self.npm_registry and not _is_http_url(self.npm_registry):
            raise ConfigurationError(
                f"npm_registry must be an http(s) URL, got {self.npm_registry[:200]!r}"
            )
        if self.redis_url and urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            # The URL may hold a password: only its scheme is repeated.
            raise ConfigurationError(
                "redis_url must be a redis://, rediss:// or unix:// URL, got one starting "
                f"{urlsplit(self.redis_url).scheme[:20]!r}"
            )
        if not _NODE_ID.fullmatch(self.node_id):
            raise ConfigurationError(
                f"node_id must be 1-64 letters, digits, '.', '_' or '-', got {self.node_id[:80]!r}"
            )
        if self.cluster_expiry_s < 2 * self.cluster_heartbeat_s:
            raise ConfigurationError(
                "cluster_expiry_s must be at least twice cluster_heartbeat_s, got "
                f"{self.cluster_expiry_s:g} and {self.cluster_heartbeat_s:g}"
            )
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
            "max_utterance_s",
            "rate_per_address",
            "http_header_timeout_s",
            "http_keepalive_timeout_s",
            "socket_heartbeat_s",
            "feed_heartbeat_s",
            "journal_retention_days",
            "cluster_heartbeat_s",
            "cluster_expiry_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        for name in (
            "max_frame_bytes",
            "max_text_chars",
            "max_sockets_per_key",
            "max_sockets_per_address",
            "rate_burst",
            "max_connections",
            "max_connections_per_address",
            "max_manifest_bytes",
            "max_asset_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.client_log_max_bytes < 0:
            raise ConfigurationError("client_log_max_bytes must not be negative")
        if self.max_frame_bytes < MIN_FRAME_BYTES:
            raise ConfigurationError(
                f"max_frame_bytes must be at least {MIN_FRAME_BYTES} (a browser's offer fits), "
                f"got {self.max_frame_bytes}"
            )

    @property
    def tls(self) -> bool:
        """Whether this server serves https and wss itself."""
        return self.tls_cert is not None

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
        for _source, layer in _layers(config_file, environ):
            values.update(layer)
        values.update({key: value for key, value in overrides.items() if value is not None})
        settings: Settings = _build(cls, values, "settings")
        return settings


@dataclass(frozen=True)
class Resolved:
    """One setting's value and where it came from (an option, a variable, a file, the default)."""

    value: Any
    source: str


def resolve(
    name: str,
    given: Any = None,
    *,
    given_as: str = "an argument",
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """One top-level setting exactly as :meth:`Settings.load` would resolve it.

    ``given`` (None: not given) wins, then ``DPKIT_<NAME>``, then the config file, then the
    default. Only this setting is read and converted, so a bad unrelated value elsewhere does not
    stop a command that needs just this one.
    """
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if name not in fields or name == "persona":
        raise ValueError(f"not a top-level setting: {name}")
    found = fields[name]
    if given is not None:
        return Resolved(_convert(name, found.type, given), given_as)
    for source, layer in reversed(_layers(config_file, environ)):
        if name in layer:
            return Resolved(_convert(name, found.type, layer[name]), source)
    if found.default_factory is not dataclasses.MISSING:
        return Resolved(found.default_factory(), "the default")
    return Resolved(found.default, "the default")


def resolve_data_dir(
    given: Path | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """The server's data directory as ``dpkit serve`` finds it (``--data-dir`` given)."""
    return resolve(
        "data_dir", given, given_as="--data-dir", config_file=config_file, environ=environ
    )


def existing_data_dir(
    given: Path | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    needs: str | None = None,
) -> Path:
    """The data directory for a command that reads it; it must exist (and hold ``needs``).

    Never creates anything: a missing directory is :class:`NoDataDir`, naming the path, where the
    path came from and the ``dpkit serve`` that would make it.
    """
    resolved = resolve_data_dir(given, config_file=config_file, environ=environ)
    path: Path = resolved.value
    if not path.is_dir():
        what = "not a directory" if path.exists() else "no dpkit data directory"
        raise NoDataDir(
            f"{what} at {path}; start `{serve_command(path)}` once, or check the path"
            + _came_from(resolved)
        )
    if needs is not None and not (path / needs).is_file():
        raise NoDataDir(
            f"no {needs} in {path}: it is not a dpkit data directory yet; start "
            f"`{serve_command(path)}` once, or check the path" + _came_from(resolved)
        )
    return path


def serve_command(data_dir: Path) -> str:
    """The ``dpkit serve`` that uses ``data_dir``, to paste into a shell."""
    if data_dir == default_data_dir():
        return "dpkit serve"
    return f"dpkit serve --data-dir {shlex.quote(str(data_dir))}"


def _came_from(resolved: Resolved) -> str:
    if resolved.source == "--data-dir":
        return ""
    if resolved.source == "the default":
        return " (the default data directory: pass the server's --data-dir if it has another)"
    return f" (the data directory comes from {resolved.source})"


def prepare_data_dir(path: Path) -> None:
    """Create ``dpkit serve``'s data directory if needed and prove it writable.

    Raises :class:`DataDirNotWritable` naming the directory and what is wrong, before a key file
    or the journal is touched: a directory that exists is not enough, a file must be writable in
    it (the permission bits say nothing about a read-only mount or an immutable directory).
    """
    if path.exists() and not path.is_dir():
        raise DataDirNotWritable(f"data directory {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirNotWritable(
            f"cannot create data directory {path}: {exc.strerror or exc}"
        ) from None
    probe = path / f".dpkit-write-check-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataDirNotWritable(
            f"data directory {path} is not writable: {exc.strerror or exc}"
        ) from None


def _layers(
    config_file: Path | None, environ: Mapping[str, str] | None
) -> list[tuple[str, dict[str, Any]]]:
    """The sources of setting values, lowest first, each named: the file, then the variables."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        layers.append((f"the config file {config_file}", _read_config_file(config_file)))
    variables = _read_environment(os.environ if environ is None else environ)
    for name, value in variables.items():
        # One layer per variable, so each is named as its source.
        layers.append((f"DPKIT_{name.upper()}", {name: value}))
    return layers


def _is_http_url(text: str) -> bool:
    try:
        parsed = urlsplit(text)
        return parsed.scheme in ("http", "https") and bool(parsed.hostname)
    except ValueError:
        return False


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
