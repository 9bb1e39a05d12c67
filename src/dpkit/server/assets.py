"""Persona asset bundles: fetched into a content-addressed cache and verified, with progress.

A bundle is a folder (a directory, or the same files under an http(s) URL) holding
``manifest.json``::

    {"name": "Ava", "version": "1",
     "files": {"look.json": {"sha256": "<hex>", "size": 132}, "voice.json": ..., ...}}

The manifest comes from elsewhere, so all of it is checked before anything it names is fetched or
opened. It is read with a cap of ``max_manifest_bytes`` (the read stops there); it names at most
:data:`MAX_FILES` files, each named ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``; each ``sha256`` is
exactly 64 lowercase hex digits, because the digest names the file in the cache and anything else
could name a path outside it; each ``size`` is an integer from 0 to ``max_asset_bytes``.

Fetching a bundle then reads each file the cache does not already hold: a file is streamed into a
temporary name in the cache, hashed on the way, and only renamed to its digest when the digest and
the size match. A failure or a cancellation deletes the temporary file, so the cache never holds a
partial or unverified file.

A cached file is trusted only once this process has verified it: when it wrote it, or by hashing
it again (in a worker thread) the first time a fetch needs it after a restart, since anything may
have changed the disk in between. A file that no longer matches is deleted and fetched again.

The manifest of an http(s) bundle is kept too, once its bundle verified, in
``manifests/<sha256 of the bundle URL>.json`` with its ETag and Last-Modified. Each fetch asks for
it again conditionally (a 304 keeps the cached one), so a new bundle version is seen on the next
connect. When the host is unreachable (the connection fails or times out, or it answers 5xx) and
every file of the cached manifest is in the cache and verifies, the bundle is served from the
cache with one WARNING, so an outage of the bundle host does not fail every connect; otherwise the
fetch fails with :class:`AssetError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

logger = logging.getLogger("dpkit.server.assets")

MANIFEST = "manifest.json"
#: The folder of the cache holding the manifests of http(s) bundles.
MANIFESTS = "manifests"
CHUNK = 64 * 1024
#: Reads of local files (bundle directories, re-hashing the cache) go by this much at a time.
LOCAL_CHUNK = 1024 * 1024
REQUEST_TIMEOUT_S = 30.0
#: The defaults of ``Settings.max_manifest_bytes`` and ``Settings.max_asset_bytes``.
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_ASSET_BYTES = 256 * 1024 * 1024
#: The most files one manifest may name: a persona is a handful of files, and each costs a request.
MAX_FILES = 1000
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: A validator (ETag, Last-Modified) longer than this, or not printable ASCII, is not kept.
MAX_VALIDATOR_CHARS = 1024
BUILTIN_BUNDLE = Path(__file__).resolve().parent.parent / "personas" / "ava"


class AssetError(Exception):
    """A bundle could not be fetched or did not verify; the message names the file and why."""


class _Unreachable(AssetError):
    """The bundle host did not answer usefully: the connection failed or timed out, or a 5xx."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class AssetFile:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: every name, digest and size in it is safe to use."""

    name: str
    version: str
    files: tuple[AssetFile, ...]

    def to_json(self) -> dict[str, Any]:
        files = {file.name: {"sha256": file.sha256, "size": file.size} for file in self.files}
        return {"name": self.name, "version": self.version, "files": files}


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: each file's path in the cache."""

    name: str
    version: str
    paths: dict[str, Path]

    def json(self, name: str) -> Any:
        return json.loads(self.paths[name].read_text())


@dataclass(frozen=True)
class AssetProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    from_cache: int


ProgressCallback = Callable[[AssetProgress], Awaitable[None]]
Chunks = AsyncGenerator[bytes, None]


def decode_manifest(source: str, raw: bytes) -> Any:
    """The JSON of a manifest; a deeply nested one is refused, not a crash of the parser."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise AssetError(f"{source}: {MANIFEST} is not valid JSON ({exc})") from None


def parse_manifest(source: str, data: Any, max_asset_bytes: int) -> Manifest:
    """Check a decoded manifest whole, before anything it names is fetched or opened."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise AssetError(f"{source}: {MANIFEST} is not a valid manifest (no 'files' object)")
    entries: dict[str, Any] = data["files"]
    if len(entries) > MAX_FILES:
        raise AssetError(
            f"{source}: {MANIFEST} names {len(entries)} files, over the limit of {MAX_FILES}"
        )
    files = tuple(
        _parse_entry(source, name, entry, max_asset_bytes) for name, entry in entries.items()
    )
    return Manifest(str(data.get("name", "")), str(data.get("version", "")), files)


def _parse_entry(source: str, name: str, entry: Any, max_asset_bytes: int) -> AssetFile:
    if not FILE_NAME.fullmatch(name):
        raise AssetError(
            f"{source}: manifest names a file not allowed in a bundle: {name!r:.140} (a name is "
            "1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)"
        )
    if not isinstance(entry, dict):
        raise AssetError(f"{source}: {name}: the manifest's entry is not an object")
    sha256, size = entry.get("sha256"), entry.get("size")
    # Not lower-cased: the digest names the file in the cache, so it must be exactly one form.
    if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
        raise AssetError(
            f"{source}: {name}: sha256 is not a SHA-256 digest (64 lowercase hex digits): "
            f"{sha256!r:.80}"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise AssetError(f"{source}: {name}: size is not a non-negative integer: {size!r:.40}")
    if size > max_asset_bytes:
        raise AssetError(
            f"{source}: {name} is {size} bytes, over max_asset_bytes ({max_asset_bytes} bytes)"
        )
    return AssetFile(name, sha256, size)


def _too_large(source: str, limit: int) -> AssetError:
    return AssetError(f"{source}: {MANIFEST} is over max_manifest_bytes ({limit} bytes)")


def write_manifest(directory: Path, name: str, version: str) -> dict[str, Any]:
    """Write ``manifest.json`` for the files in ``directory`` (publishing a bundle)."""
    files = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name != MANIFEST and not path.name.startswith("."):
            data = path.read_bytes()
            files[path.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = {"name": name, "version": version, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


class AssetCache:
    """Content-addressed files under ``directory``, each named by its SHA-256, and the manifests
    of http(s) bundles under ``directory/manifests``."""

    def __init__(
        self,
        directory: Path,
        *,
        max_manifest_bytes: int = MAX_MANIFEST_BYTES,
        max_asset_bytes: int = MAX_ASSET_BYTES,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.directory = directory
        self.max_manifest_bytes = max_manifest_bytes
        self.max_asset_bytes = max_asset_bytes
        self.request_timeout_s = request_timeout_s
        directory.mkdir(parents=True, exist_ok=True)
        self.downloads = 0
        self._manifests = _ManifestStore(directory / MANIFESTS, max_manifest_bytes, max_asset_bytes)
        # Digests whose file this process wrote or hashed: only these are trusted without hashing.
        self._verified: set[str] = set()
        # One lock per digest (as many as the verified set), so that two sessions fetching the
        # same file neither download it twice nor delete the copy the other just verified.
        self._locks: dict[str, asyncio.Lock] = {}
        # Directory bundles' manifests as last read, with the file's identity then: read again
        # only when it changed, so a connect does not hop to a worker thread to re-read it.
        self._directory_manifests: dict[str, tuple[tuple[int, int, int], Manifest]] = {}

    def path(self, sha256: str) -> Path:
        if not SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 digest: {sha256!r:.80}")
        return self.directory / sha256

    async def fetch(self, source: str, progress: ProgressCallback | None = None) -> Bundle:
        """Fetch and verify the bundle at ``source`` (a directory or an http(s) URL)."""
        if urlsplit(source).scheme in ("http", "https"):
            return await self._fetch_http(source, progress)
        manifest = await self._directory_manifest(source)
        return await self._fill(source, manifest, lambda name: _stream_file(source, name), progress)

    async def _directory_manifest(self, source: str) -> Manifest:
        """A directory bundle's manifest: the one read before if the file is unchanged since."""
        before = _identity(Path(source) / MANIFEST)
        kept = self._directory_manifests.get(source)
        if kept is not None and before is not None and kept[0] == before:
            return kept[1]
        raw = await _read_capped(source, MANIFEST, self.max_manifest_bytes)
        manifest = parse_manifest(source, decode_manifest(source, raw), self.max_asset_bytes)
        # Kept only if the file did not change while it was read.
        if before is not None and _identity(Path(source) / MANIFEST) == before:
            self._directory_manifests[source] = (before, manifest)
        return manifest

    async def _fetch_http(self, source: str, progress: ProgressCallback | None) -> Bundle:
        reader = _HttpReader(source, self.request_timeout_s)
        try:
            cached = await self._manifests.load(reader.base)
            try:
                answer = await reader.manifest(cached, self.max_manifest_bytes)
            except _Unreachable as outage:
                return await self._serve_cached(source, cached, outage, progress)
            if answer is None:
                assert cached is not None  # a 304 without a cached manifest is refused above
                return await self._fill(source, cached.manifest, reader.stream, progress)
            data = decode_manifest(answer.url, answer.body)
            manifest = parse_manifest(answer.url, data, self.max_asset_bytes)
            bundle = await self._fill(source, manifest, reader.stream, progress)
            # Kept only now: a cached manifest is one whose whole bundle verified.
            await self._manifests.save(reader.base, _CachedManifest(manifest, *answer.validators))
            return bundle
        finally:
            await reader.close()

    async def _serve_cached(
        self,
        source: str,
        cached: _CachedManifest | None,
        outage: _Unreachable,
        progress: ProgressCallback | None,
    ) -> Bundle:
        """Stand in for an unreachable host with the cached manifest, if all of it is here."""
        if cached is None:
            raise outage
        for file in cached.manifest.files:
            async with self._lock(file.sha256):
                if not await self._in_cache(file):
                    raise AssetError(
                        f"{source}: the bundle host is unreachable ({outage.reason}) and "
                        f"{file.name} of the cached manifest is not in the cache"
                    )
        logger.warning(
            "%s: serving the cached manifest (%s version %s): the bundle host is unreachable: %s",
            source,
            cached.manifest.name,
            cached.manifest.version,
            outage.reason,
        )
        return await self._fill(source, cached.manifest, None, progress)

    async def _fill(
        self,
        source: str,
        manifest: Manifest,
        stream: Callable[[str], Chunks] | None,
        progress: ProgressCallback | None,
    ) -> Bundle:
        """Make sure the cache holds every file of ``manifest``, verified; fetch the others."""
        total = sum(file.size for file in manifest.files)
        done = cached = 0
        for index, file in enumerate(manifest.files):
            async with self._lock(file.sha256):
                if await self._in_cache(file):
                    cached += 1
                elif stream is None:
                    raise AssetError(f"{source}: {file.name} is not in the cache")
                else:
                    await self._store(source, file, stream(file.name))
                    self.downloads += 1
            done += file.size
            if progress is not None:
                await progress(AssetProgress(index + 1, len(manifest.files), done, total, cached))
        paths = {file.name: self.path(file.sha256) for file in manifest.files}
        return Bundle(manifest.name, manifest.version, paths)

    def _lock(self, sha256: str) -> asyncio.Lock:
        return self._locks.setdefault(sha256, asyncio.Lock())

    async def _in_cache(self, file: AssetFile) -> bool:
        """Whether the cache holds ``file`` verified; one this process has not hashed is hashed
        now, and deleted if it does not match (a later store replaces it)."""
        path = self.path(file.sha256)
        try:
            info = path.stat()
        except OSError:
            self._verified.discard(file.sha256)
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        if info.st_size == file.size and file.sha256 in self._verified:
            return True
        self._verified.discard(file.sha256)
        if info.st_size == file.size and await asyncio.to_thread(_hash_file, path) == file.sha256:
            self._verified.add(file.sha256)
            return True
        logger.warning(
            "asset cache: the cached %s (%s) does not match its sha256: deleted, to fetch again",
            file.name,
            path,
        )
        path.unlink(missing_ok=True)
        return False

    async def _store(self, source: str, file: AssetFile, chunks: Chunks) -> None:
        partial = self.directory / f".part-{file.sha256[:16]}-{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        size = 0
        try:
            async with aclosing(chunks):
                with partial.open("wb") as out:
                    async for chunk in chunks:
                        size += len(chunk)
                        if size > file.size:
                            raise AssetError(
                                f"{source}: {file.name} is larger than the manifest says"
                            )
                        digest.update(chunk)
                        out.write(chunk)
            if size != file.size:
                raise AssetError(
                    f"{source}: {file.name} has {size} bytes, the manifest says {file.size}"
                )
            if digest.hexdigest() != file.sha256:
                raise AssetError(f"{source}: {file.name} does not match its sha256 in the manifest")
            os.replace(partial, self.path(file.sha256))
            self._verified.add(file.sha256)
        except OSError as exc:
            raise AssetError(
                f"{source}: {file.name}: cannot write to the cache: {exc.strerror or exc}"
            ) from None
        finally:
            partial.unlink(missing_ok=True)


def _hash_file(path: Path) -> str | None:
    """The SHA-256 of a file read in chunks (run in a worker thread); None if it is unreadable."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(LOCAL_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _identity(path: Path) -> tuple[int, int, int] | None:
    """What tells a file's versions apart (one ``stat``, as quick as the cache's own checks)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


async def _read_capped(directory: str, name: str, limit: int) -> bytes:
    """A directory bundle's manifest, read no further than one byte past ``limit``."""

    def read() -> bytes:
        with (Path(directory) / name).open("rb") as handle:
            return handle.read(limit + 1)

    try:
        raw = await asyncio.to_thread(read)
    except OSError as exc:
        raise AssetError(f"{directory}: cannot read {name}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise _too_large(directory, limit)
    return raw


async def _stream_file(directory: str, name: str) -> Chunks:
    try:
        with (Path(directory) / name).open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, LOCAL_CHUNK):
                yield chunk
    except OSError as exc:
        raise AssetError(f"{directory}: cannot read {name}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class _CachedManifest:
    manifest: Manifest
    etag: str | None
    last_modified: str | None

    def conditions(self) -> dict[str, str]:
        """The headers that make the request for the manifest conditional on a change."""
        headers = {}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        if self.last_modified is not None:
            headers["If-Modified-Since"] = self.last_modified
        return headers


def _validator(value: Any) -> str | None:
    """A header value worth keeping and sending back, or None: it is the host's, so bounded."""
    if isinstance(value, str) and value.isascii() and value.isprintable():
        return value if 0 < len(value) <= MAX_VALIDATOR_CHARS else None
    return None


class _ManifestStore:
    """The manifests of http(s) bundles that verified, with their validators: a file per URL."""

    def __init__(self, directory: Path, max_manifest_bytes: int, max_asset_bytes: int) -> None:
        self.directory = directory
        self._max_asset_bytes = max_asset_bytes
        # The stored form holds only the checked fields, plus at most two validators.
        self._max_bytes = max_manifest_bytes + 4 * MAX_VALIDATOR_CHARS

    def _path(self, url: str) -> Path:
        return self.directory / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    async def load(self, url: str) -> _CachedManifest | None:
        """The cached manifest of ``url``, checked again like a fetched one; None if none."""
        path = self._path(url)
        if not path.exists():
            return None
        try:
            raw = await _read_capped(str(path.parent), path.name, self._max_bytes)
            stored = decode_manifest(str(path), raw)
            if not isinstance(stored, dict) or stored.get("url") != url:
                raise AssetError(f"{path}: not the cached manifest of {url}")
            manifest = parse_manifest(str(path), stored.get("manifest"), self._max_asset_bytes)
        except AssetError as exc:
            logger.warning("asset cache: ignoring a cached manifest: %s", exc)
            return None
        return _CachedManifest(
            manifest, _validator(stored.get("etag")), _validator(stored.get("last_modified"))
        )

    async def save(self, url: str, cached: _CachedManifest) -> None:
        """Keep ``cached`` for ``url``, atomically; failing to is logged, not an error."""
        stored = {
            "url": url,
            "etag": cached.etag,
            "last_modified": cached.last_modified,
            "manifest": cached.manifest.to_json(),
        }
        path = self._path(url)
        partial = path.with_name(f".part-{path.stem[:16]}-{secrets.token_hex(4)}")

        def write() -> None:
            self.directory.mkdir(exist_ok=True)
            try:
                partial.write_text(json.dumps(stored))
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            logger.warning("asset cache: cannot keep the manifest of %s: %s", url, exc)


@dataclass(frozen=True)
class _ManifestAnswer:
    url: str
    body: bytes
    validators: tuple[str | None, str | None]


class _HttpReader:
    """Files of a bundle published under an http(s) URL."""

    def __init__(self, base: str, timeout_s: float) -> None:
        self.base = base if base.endswith("/") else base + "/"
        self._timeout_s = timeout_s
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def manifest(self, cached: _CachedManifest | None, limit: int) -> _ManifestAnswer | None:
        """The manifest, read no further than ``limit``; None: not modified since ``cached``."""
        url = urljoin(self.base, MANIFEST)
        headers = cached.conditions() if cached is not None else {}
        try:
            async with self._http.get(url, headers=headers) as response:
                if response.status == 304 and cached is not None:
                    return None
                self._check_status(url, response.status)
                if response.content_length is not None and response.content_length > limit:
                    raise _too_large(url, limit)
                body = await self._read_capped(url, response.content, limit)
                validators = (
                    _validator(response.headers.get("ETag")),
                    _validator(response.headers.get("Last-Modified")),
                )
                return _ManifestAnswer(url, body, validators)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._translate(url, exc) from None

    @staticmethod
    async def _read_capped(url: str, content: aiohttp.StreamReader, limit: int) -> bytes:
        body = bytearray()
        while chunk := await content.read(min(CHUNK, limit + 1 - len(body))):
            body += chunk
            if len(body) > limit:
                raise _too_large(url, limit)
        return bytes(body)

    async def stream(self, name: str) -> Chunks:
        url = urljoin(self.base, name)
        try:
            async with self._http.get(url) as response:
                self._check_status(url, response.status)
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._translate(url, exc) from None

    @staticmethod
    def _check_status(url: str, status: int) -> None:
        if status >= 500:
            raise _Unreachable(url, f"HTTP {status}")
        if status != 200:
            raise AssetError(f"{url}: HTTP {status}")

    def _translate(self, url: str, exc: BaseException) -> AssetError:
        """The host not answering is an outage; any other client error is just an error."""
        if isinstance(exc, TimeoutError):
            return _Unreachable(url, f"no answer within {self._timeout_s:g} s")
        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
            return _Unreachable(url, str(exc) or type(exc).__name__)
        return AssetError(f"{url}: {exc or type(exc).__name__}")

    async def close(self) -> None:
        await self._http.close()
