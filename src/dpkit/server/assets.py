"""Persona asset bundles: fetched into a content-addressed cache and verified, with progress.

A bundle is a folder (a directory, or the same files under an http(s) URL) holding
``manifest.json``::

    {"name": "Ava", "version": "1",
     "files": {"look.json": {"sha256": "<hex>", "size": 132}, "voice.json": ..., ...}}

Fetching a bundle reads its manifest, then each file it does not already have: a file is
streamed into a temporary name in the cache, hashed on the way, and only renamed to its digest
when the digest and the size match. A failure deletes the temporary file, so the cache never
holds a partial or unverified file, and a file the cache has is never fetched again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

logger = logging.getLogger("dpkit.server.assets")

MANIFEST = "manifest.json"
CHUNK = 64 * 1024
REQUEST_TIMEOUT_S = 30.0
BUILTIN_BUNDLE = Path(__file__).resolve().parent.parent / "personas" / "ava"


class AssetError(Exception):
    """A bundle could not be fetched or did not verify; the message names the file and why."""


@dataclass(frozen=True)
class AssetFile:
    name: str
    sha256: str
    size: int


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


def _parse_manifest(source: str, raw: bytes) -> tuple[str, str, list[AssetFile]]:
    try:
        data = json.loads(raw)
        files = [
            AssetFile(name, str(entry["sha256"]).lower(), int(entry["size"]))
            for name, entry in data["files"].items()
        ]
        name, version = str(data.get("name", "")), str(data.get("version", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AssetError(f"{source}: manifest.json is not a valid manifest ({exc})") from None
    for file in files:
        if "/" in file.name or "\\" in file.name or file.name.startswith("."):
            raise AssetError(f"{source}: manifest names a file outside the bundle: {file.name!r}")
        if len(file.sha256) != 64:
            raise AssetError(f"{source}: {file.name}: sha256 is not a SHA-256 digest")
    return name, version, files


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
    """Content-addressed files under ``directory``: each named by its SHA-256."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.downloads = 0

    def path(self, sha256: str) -> Path:
        return self.directory / sha256

    def has(self, file: AssetFile) -> bool:
        path = self.path(file.sha256)
        return path.is_file() and path.stat().st_size == file.size

    async def fetch(self, source: str, progress: ProgressCallback | None = None) -> Bundle:
        """Fetch and verify the bundle at ``source`` (a directory or an http(s) URL)."""
        reader = _HttpReader(source) if urlsplit(source).scheme in ("http", "https") else None
        try:
            raw = await (reader.read_all(MANIFEST) if reader else _read_file(source, MANIFEST))
            name, version, files = _parse_manifest(source, raw)
            total = sum(file.size for file in files)
            done = cached = 0
            for index, file in enumerate(files):
                if self.has(file):
                    cached += 1
                else:
                    chunks = reader.stream(file.name) if reader else _stream_file(source, file.name)
                    await self._store(source, file, chunks)
                    self.downloads += 1
                done += file.size
                if progress is not None:
                    await progress(AssetProgress(index + 1, len(files), done, total, cached))
        finally:
            if reader is not None:
                await reader.close()
        return Bundle(name, version, {file.name: self.path(file.sha256) for file in files})

    async def _store(self, source: str, file: AssetFile, chunks: AsyncIterator[bytes]) -> None:
        partial = self.directory / f".part-{file.sha256[:16]}-{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > file.size:
                        raise AssetError(f"{source}: {file.name} is larger than the manifest says")
                    digest.update(chunk)
                    out.write(chunk)
            if size != file.size:
                raise AssetError(
                    f"{source}: {file.name} has {size} bytes, the manifest says {file.size}"
                )
            if digest.hexdigest() != file.sha256:
                raise AssetError(f"{source}: {file.name} does not match its sha256 in the manifest")
            os.replace(partial, self.path(file.sha256))
        finally:
            partial.unlink(missing_ok=True)


async def _read_file(directory: str, name: str) -> bytes:
    try:
        return await asyncio.to_thread((Path(directory) / name).read_bytes)
    except OSError as exc:
        raise AssetError(f"{directory}: cannot read {name}: {exc.strerror or exc}") from None


async def _stream_file(directory: str, name: str) -> AsyncIterator[bytes]:
    yield await _read_file(directory, name)


class _HttpReader:
    """Files of a bundle published under an http(s) URL."""

    def __init__(self, base: str) -> None:
        self._base = base if base.endswith("/") else base + "/"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))

    async def read_all(self, name: str) -> bytes:
        return b"".join([chunk async for chunk in self.stream(name)])

    async def stream(self, name: str) -> AsyncIterator[bytes]:
        url = urljoin(self._base, name)
        try:
            async with self._http.get(url) as response:
                if response.status != 200:
                    raise AssetError(f"{url}: HTTP {response.status}")
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AssetError(f"{url}: {exc or type(exc).__name__}") from None

    async def close(self) -> None:
        await self._http.close()
