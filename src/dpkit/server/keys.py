"""The server's API keys and signing secret, kept in ``<data_dir>/keys.json``.

On a fresh machine the file does not exist: :func:`load_or_create` creates the data directory, a
signing secret, the admin token, the webhook secret and one default API key, so ``dpkit serve``
runs with no configuration. Each key carries the browser origins that may use it
(:mod:`dpkit.server.origins`); the default key, the reference page's, allows only ``self``.

Commands that only read the keys (``dpkit keys list``, ``dpkit watch``) use :func:`KeyStore.load`,
which never creates or rewrites anything. A running server rereads the file when it changes
(``dpkit keys add`` and ``remove`` take effect at its next token request).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from dpkit.apikey import ApiKey
from dpkit.errors import ConfigurationError
from dpkit.server.origins import SELF, check_origin_entry
from dpkit.server.settings import DataDirNotWritable, NoDataDir

KEYS_FILE = "keys.json"
#: The label of the key made on first start: the reference page's own key.
DEFAULT_LABEL = "default"


@dataclass(frozen=True)
class KeyRecord:
    """One API key as the server stores it."""

    key_id: str
    secret: str
    label: str = "default"
    #: Sessions opened with this key may be resumed (session persistence).
    persistence: bool = False
    #: Browser origins that may use the key: origins, ``self`` or ``*``; empty: no browser.
    origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            checked = tuple(check_origin_entry(str(entry)) for entry in self.origins)
        except ValueError as exc:
            raise ConfigurationError(f"API key {self.key_id}: {exc}") from None
        object.__setattr__(self, "origins", checked)

    def api_key(self, auth_server: str) -> str:
        """The API key string a client uses, pointing at ``auth_server``."""
        return ApiKey(auth_server, self.key_id, self.secret).encode()


def option_safe_token(nbytes: int) -> str:
    """A URL-safe random token that does not start with '-': given on a command line after its
    option (``--admin-token TOKEN``), one that did would be taken for an option."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if not token.startswith("-"):
            return token


class KeyStore:
    """API keys by id, and the secret that signs session tokens."""

    def __init__(
        self,
        signing_secret: bytes,
        keys: list[KeyRecord],
        path: Path | None,
        admin_token: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.signing_secret = signing_secret
        #: The token that opens the admin API (``Authorization: Bearer <token>``).
        self.admin_token = admin_token or option_safe_token(24)
        #: The HMAC key of webhook signatures: its own secret, so a receiver holds no admin power.
        self.webhook_secret = webhook_secret or option_safe_token(32)
        self._keys = {key.key_id: key for key in keys}
        #: Keys other nodes of the cluster hold (checked after this node's own).
        self._cluster_keys: dict[str, KeyRecord] = {}
        self._path = path
        self._loaded = self._stamp()

    def _stamp(self) -> tuple[int, int, int]:
        """The file's identity: every save replaces it (a new inode), so a change always shows,
        however coarse the file system's clock."""
        try:
            if self._path is None:
                return (0, 0, 0)
            status = self._path.stat()
        except OSError:
            return (0, 0, 0)
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def _refresh(self) -> None:
        """Pick up keys added or removed by ``dpkit keys`` while the server runs."""
        stamp = self._stamp()
        if self._path is None or stamp == self._loaded:
            return
        try:
            data = json.loads(self._path.read_text())
            self._keys = {item["key_id"]: _record(item) for item in data["keys"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigurationError):
            return  # a half-written file: keep what we have, read it next time
        self._loaded = stamp

    @property
    def keys(self) -> list[KeyRecord]:
        return list(self._keys.values())

    def check(self, key_id: str | None, secret: str | None) -> KeyRecord | None:
        """The key record if ``key_id`` exists (here, else in the cluster) and ``secret``
        matches it, else None."""
        self._refresh()
        record = self._keys.get(key_id or "") or self._cluster_keys.get(key_id or "")
        if record is None or secret is None:
            return None
        if not hmac.compare_digest(record.secret.encode(), secret.encode()):
            return None
        return record

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id) or self._cluster_keys.get(key_id)

    def own_keys(self) -> list[KeyRecord]:
        """This node's keys (from its keys.json, reread if ``dpkit keys`` changed it)."""
        self._refresh()
        return list(self._keys.values())

    def set_cluster_keys(self, records: list[KeyRecord]) -> None:
        """The keys the cluster's other nodes hold, as Redis has them now."""
        self._cluster_keys = {record.key_id: record for record in records}

    @property
    def path(self) -> Path | None:
        return self._path

    def page_key(self) -> KeyRecord | None:
        """The key the reference page uses: the one labelled ``default``, else the first."""
        for record in self._keys.values():
            if record.label == DEFAULT_LABEL:
                return record
        return next(iter(self._keys.values()), None)

    def matching(self, key_id_prefix: str) -> list[KeyRecord]:
        """The key whose id is ``key_id_prefix``, else every key whose id starts with it."""
        exact = self._keys.get(key_id_prefix)
        if exact is not None:
            return [exact]
        return [key for key in self._keys.values() if key.key_id.startswith(key_id_prefix)]

    def remove(self, key_id: str) -> KeyRecord:
        """Delete the key ``key_id`` from the file; a running server stops accepting it."""
        record = self._keys.pop(key_id)
        try:
            self._save()
        except BaseException:
            self._keys[key_id] = record
            raise
        return record

    def add(
        self, label: str, *, persistence: bool = False, origins: tuple[str, ...] = ()
    ) -> KeyRecord:
        record = KeyRecord(
            secrets.token_hex(6), secrets.token_urlsafe(24), label, persistence, origins
        )
        self._keys[record.key_id] = record
        try:
            self._save()
        except BaseException:
            del self._keys[record.key_id]
            raise
        return record

    def adopt(self, signing_secret: bytes, admin_token: str, webhook_secret: str) -> bool:
        """Take the cluster's secrets (the first node's) in place of this node's own, and keep
        them in ``keys.json``, so ``dpkit`` commands on this node use them too. Whether anything
        changed."""
        if (self.signing_secret, self.admin_token, self.webhook_secret) == (
            signing_secret,
            admin_token,
            webhook_secret,
        ):
            return False
        self.signing_secret = signing_secret
        self.admin_token = admin_token
        self.webhook_secret = webhook_secret
        self._save()
        return True

    def _save(self) -> None:
        if self._path is None:
            return
        data = {
            "signingSecret": self.signing_secret.hex(),
            "adminToken": self.admin_token,
            "webhookSecret": self.webhook_secret,
            "keys": [asdict(key) for key in self._keys.values()],
        }
        tmp = self._path.with_suffix(".tmp")
        try:
            # Created private: the file holds the signing secret and the admin token.
            descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                os.fchmod(handle.fileno(), 0o600)  # a leftover .tmp keeps its mode otherwise
                handle.write(json.dumps(data, indent=2))
            os.replace(tmp, self._path)
        except OSError as exc:
            raise DataDirNotWritable(
                f"cannot write {self._path}: {exc.strerror or exc} (is the data directory "
                f"{self._path.parent} writable?)"
            ) from None
        self._loaded = self._stamp()

    @classmethod
    def load(cls, data_dir: Path) -> KeyStore:
        """Read ``keys.json`` from ``data_dir``; never creates or rewrites anything.

        A missing directory or file is :class:`~dpkit.server.settings.NoDataDir`.
        """
        path = data_dir / KEYS_FILE
        if not data_dir.is_dir():
            raise NoDataDir(f"no dpkit data directory at {data_dir}")
        if not path.is_file():
            raise NoDataDir(f"no {KEYS_FILE} in {data_dir}: it is not a dpkit data directory yet")
        store, _complete = cls._read(path)
        return store

    @classmethod
    def _read(cls, path: Path) -> tuple[KeyStore, bool]:
        """The store in ``path``, and whether the file has every secret this version keeps."""
        try:
            data = json.loads(path.read_text())
            keys = [_record(item) for item in data["keys"]]
            store = cls(
                bytes.fromhex(data["signingSecret"]),
                keys,
                path,
                data.get("adminToken"),
                data.get("webhookSecret"),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(f"{path} is not a valid key file: {exc}") from None
        return store, "adminToken" in data and "webhookSecret" in data

    @classmethod
    def load_or_create(cls, data_dir: Path) -> KeyStore:
        """Read ``keys.json`` from ``data_dir``, creating both with a default key when missing."""
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirNotWritable(
                f"cannot create data directory {data_dir}: {exc.strerror or exc}"
            ) from None
        path = data_dir / KEYS_FILE
        if not path.exists():
            store = cls(secrets.token_bytes(32), [], path)
            store.add(DEFAULT_LABEL, origins=(SELF,))
            return store
        store, complete = cls._read(path)
        if not complete:
            store._save()  # a key file from before these secrets: keep the new ones
        return store


def key_to_json(record: KeyRecord) -> str:
    """A key as the cluster shares it (in Redis, which only the cluster's nodes reach)."""
    return json.dumps(asdict(record), separators=(",", ":"))


def key_from_json(raw: bytes | str) -> KeyRecord:
    """A key shared by another node; ValueError for anything that is not one."""
    if len(raw) > 8192:
        raise ValueError("a shared key is longer than 8192 bytes")
    try:
        item = json.loads(raw)
        if not isinstance(item, dict):
            raise ValueError("a shared key is not a JSON object")
        for name in ("key_id", "secret", "label"):
            if not isinstance(item.get(name), str) or not 0 < len(item[name]) <= 256:
                raise ValueError(f"a shared key's {name} is not a short string")
        if not isinstance(item.get("persistence", False), bool):
            raise ValueError("a shared key's persistence is not true or false")
        return _record(item)
    except (TypeError, KeyError, ConfigurationError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a shared key: {exc}") from None


def _record(item: dict[str, object]) -> KeyRecord:
    """A key record from keys.json; a key from before origin lists gets the safe default."""
    if "origins" not in item:
        # The reference page's key serves its own origin; any other key, no browser until an
        # operator says which origins may use it (dpkit keys add --origin).
        item = {**item, "origins": [SELF] if item.get("label") == DEFAULT_LABEL else []}
    origins = item["origins"]
    if not isinstance(origins, list):
        raise ValueError("a key's origins must be a list")
    return KeyRecord(**{**item, "origins": tuple(str(entry) for entry in origins)})  # type: ignore[arg-type]
