"""The asset cache against hostile or failing input: capped manifests, strict names and digests,
re-verified cached files, a cached manifest standing in for a host that is down, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dpkit import Scene
from dpkit.errors import AssetsFailed
from dpkit.server.assets import (
    BUILTIN_BUNDLE,
    MANIFEST,
    MAX_FILES,
    AssetCache,
    AssetError,
    AssetProgress,
    write_manifest,
)
from tests.support import UNIT, ServerFactory, serving, until

MIB = 1024 * 1024
LOGGER = "dpkit.server.assets"
#: 64 characters, like a digest, that name ``<data_dir>/keys.json`` from ``<data_dir>/assets``.
TRAVERSAL = "../" + "./" * 26 + "keys.json"


class Host:
    """A bundle host on loopback: serves a folder with validators, counts requests, fails on cue."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self.requests: Counter[str] = Counter()
        self.answers: list[tuple[str, int]] = []
        #: The conditional headers (lower-cased names) of each request for the manifest.
        self.conditions: list[dict[str, str]] = []
        self.etag = True
        self.last_modified = True
        #: Answer every request with this HTTP status instead (0: serve the files).
        self.failing = 0
        #: The file whose answer stops halfway until ``release`` is set.
        self.stall = ""
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ava/{name}", self.handle)
        base = await self._stack.enter_async_context(serving(app))
        # A stalled answer must end before the server can stop.
        self._stack.callback(self.release.set)
        self.url = f"{base}/ava/"

    async def stop(self) -> None:
        """Stop listening: from now on connections to the host are refused."""
        await self._stack.aclose()

    def manifest_answers(self) -> list[int]:
        return [status for name, status in self.answers if name == MANIFEST]

    def file_requests(self) -> dict[str, int]:
        return {name: count for name, count in self.requests.items() if name != MANIFEST}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests[name] += 1
        if name == MANIFEST:
            self.conditions.append(
                {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("if-")}
            )
        path = self.folder / name
        if self.failing:
            return self._answer(name, web.Response(status=self.failing))
        if not path.is_file():
            return self._answer(name, web.Response(status=404))
        body = path.read_bytes()
        if name == self.stall:
            return await self._stall(request, body)
        headers = self._validators(path, body)
        if self._fresh(request, headers):
            return self._answer(name, web.Response(status=304, headers=headers))
        return self._answer(name, web.Response(body=body, headers=headers))

    def _answer(self, name: str, response: web.Response) -> web.Response:
        self.answers.append((name, response.status))
        return response

    def _validators(self, path: Path, body: bytes) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["ETag"] = etag_of(body)
        if self.last_modified:
            headers["Last-Modified"] = formatdate(path.stat().st_mtime, usegmt=True)
        return headers

    def _fresh(self, request: web.Request, headers: dict[str, str]) -> bool:
        if "ETag" in headers:
            return request.headers.get("If-None-Match") == headers["ETag"]
        if "Last-Modified" in headers:
            return request.headers.get("If-Modified-Since") == headers["Last-Modified"]
        return False

    async def _stall(self, request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        self.stalled.set()
        await self.release.wait()
        with contextlib.suppress(ConnectionError):  # the client has gone by now
            await response.write(body[len(body) // 2 :])
            await response.write_eof()
        return response


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    folder = tmp_path / "bundle"
    shutil.copytree(BUILTIN_BUNDLE, folder)
    served = Host(folder)
    await served.start()
    try:
        yield served
    finally:
        await served.stop()


def new_cache(tmp_path: Path, **options: Any) -> AssetCache:
    """An AssetCache on ``<tmp>/data/assets``: a second one on the same folder is a restart."""
    options.setdefault("request_timeout_s", 1 * UNIT)
    return AssetCache(tmp_path / "data" / "assets", **options)


def digests(host: Host) -> dict[str, str]:
    manifest = json.loads((host.folder / MANIFEST).read_text())
    return {name: entry["sha256"] for name, entry in manifest["files"].items()}


def cached_files(cache: AssetCache) -> list[str]:
    return sorted(path.name for path in cache.directory.iterdir() if path.is_file())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corrupt(path: Path) -> None:
    """Other bytes, the same size: what a size check cannot see."""
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])


def asset_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno >= logging.WARNING
    ]


async def take_down(host: Host, outage: str) -> None:
    if outage == "refused":
        await host.stop()
    elif outage == "5xx":
        host.failing = 503
    else:
        host.stall = MANIFEST  # headers and half the manifest, then nothing: a timeout


OUTAGES = ["refused", "5xx", "timeout"]
#: What the error or the warning says for each outage.
REASONS = {"refused": "Cannot connect to host", "5xx": "HTTP 503", "timeout": "no answer within"}


# --- watching which files the process opens (audit events fire in worker threads too) ---

_watched: list[tuple[str, list[tuple[str, str]]]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _watched or event not in ("open", "os.remove", "os.rename"):
        return
    for arg in args[:2]:
        if isinstance(arg, str | bytes | os.PathLike):
            path = os.path.normpath(os.path.abspath(os.fsdecode(arg)))
            for watched, seen in _watched:
                if path == watched:
                    seen.append((os.path.basename(path), event))


@functools.cache
def _install_audit_hook() -> None:
    # An audit hook cannot be removed: installed once, it does nothing while nothing is watched.
    sys.addaudithook(_audit)


@contextlib.contextmanager
def watching(*paths: Path) -> Iterator[list[tuple[str, str]]]:
    """Record every open, removal or rename of ``paths`` in this process during the block."""
    _install_audit_hook()
    seen: list[tuple[str, str]] = []
    entries = [(os.path.normpath(os.path.abspath(path)), seen) for path in paths]
    _watched.extend(entries)
    try:
        yield seen
    finally:
        for entry in entries:
            _watched.remove(entry)


# --- 1. the manifest is cached, asked for conditionally, and stands in when the host is down ---


async def test_a_second_fetch_asks_with_if_none_match_and_a_304_keeps_the_cached_manifest(
    host: Host, tmp_path: Path
) -> None:
    """The manifest is kept on disk with its ETag; the next fetch is conditional; a 304 is used."""
    cache = new_cache(tmp_path)
    first = await cache.fetch(host.url)
    second = await cache.fetch(host.url)
    assert second == first
    assert host.conditions[0] == {}
    assert host.conditions[1]["if-none-match"] == etag_of((host.folder / MANIFEST).read_bytes())
    assert host.manifest_answers() == [200, 304]
    assert host.file_requests() == {"look.json": 1, "voice.json": 1, "corpus.json": 1}
    key = hashlib.sha256(host.url.encode()).hexdigest()
    assert (cache.directory / "manifests" / f"{key}.json").is_file()


async def test_last_modified_alone_makes_the_request_conditional_with_if_modified_since(
    host: Host, tmp_path: Path
) -> None:
    """A host giving only Last-Modified is asked with If-Modified-Since, and its 304 is used."""
    host.etag = False
    cache = new_cache(tmp_path)
    first = await cache.fetch(host.url)
    assert await cache.fetch(host.url) == first
    modified = formatdate((host.folder / MANIFEST).stat().st_mtime, usegmt=True)
    assert host.conditions[1] == {"if-modified-since": modified}
    assert host.manifest_answers() == [200, 304]


async def test_a_restarted_cache_asks_conditionally_too(host: Host, tmp_path: Path) -> None:
    """The cached manifest and its ETag are on disk: a new AssetCache sends If-None-Match."""
    await new_cache(tmp_path).fetch(host.url)
    restarted = new_cache(tmp_path)
    await restarted.fetch(host.url)
    assert "if-none-match" in host.conditions[1]
    assert host.manifest_answers() == [200, 304]
    assert restarted.downloads == 0


async def test_a_changed_manifest_is_fetched_whole_and_only_its_new_file_downloaded(
    host: Host, tmp_path: Path
) -> None:
    """A new bundle version on the host replaces the cached manifest; unchanged files stay."""
    cache = new_cache(tmp_path)
    await cache.fetch(host.url)
    corpus = host.folder / "corpus.json"
    corpus.write_text(corpus.read_text().replace("Ava", "Eve"))
    write_manifest(host.folder, "Ava", "2")
    bundle = await cache.fetch(host.url)
    assert bundle.version == "2"
    assert "Eve" in bundle.paths["corpus.json"].read_text()
    assert host.file_requests() == {"look.json": 1, "voice.json": 1, "corpus.json": 2}
    await cache.fetch(host.url)
    assert host.manifest_answers() == [200, 200, 304]


@pytest.mark.parametrize("outage", OUTAGES)
async def test_with_the_host_down_a_warm_cache_serves_the_bundle_with_one_warning(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: str
) -> None:
    """Host refusing, timing out or answering 5xx: a restarted cache serves the cached bundle."""
    warm = await new_cache(tmp_path).fetch(host.url)
    await take_down(host, outage)
    restarted = new_cache(tmp_path)
    progress: list[AssetProgress] = []

    async def on_progress(step: AssetProgress) -> None:
        progress.append(step)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        bundle = await restarted.fetch(host.url, on_progress)
    assert bundle == warm
    for name, digest in digests(host).items():
        assert sha256_of(bundle.paths[name]) == digest
    [warning] = asset_warnings(caplog)
    assert "serving the cached manifest" in warning
    assert "unreachable" in warning
    assert REASONS[outage] in warning
    total = sum(path.stat().st_size for path in bundle.paths.values())
    assert progress[-1] == AssetProgress(3, 3, total, total, 3)
    assert restarted.downloads == 0


@pytest.mark.parametrize("outage", OUTAGES)
async def test_with_the_host_down_and_no_cached_manifest_the_fetch_fails(
    host: Host, tmp_path: Path, outage: str
) -> None:
    """No warm cache to stand in: the outage is an AssetError naming the URL and the reason."""
    await take_down(host, outage)
    cache = new_cache(tmp_path)
    with pytest.raises(AssetError, match=REASONS[outage]) as caught:
        await cache.fetch(host.url)
    assert f"{host.url}{MANIFEST}" in str(caught.value)
    assert cached_files(cache) == []


async def test_a_cached_manifest_missing_a_file_does_not_stand_in_for_the_host(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Host down and a file of the cached manifest gone: AssetError naming it, no 'serving'."""
    cache = new_cache(tmp_path)
    await cache.fetch(host.url)
    (cache.directory / digests(host)["voice.json"]).unlink()
    host.failing = 503
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        pytest.raises(AssetError, match=r"voice\.json") as caught,
    ):
        await cache.fetch(host.url)
    assert "HTTP 503" in str(caught.value)
    assert not any("serving" in warning for warning in asset_warnings(caplog))


async def test_a_404_for_the_manifest_is_not_an_outage(host: Host, tmp_path: Path) -> None:
    """A host answering 404 says the bundle is gone: the cached manifest does not stand in."""
    cache = new_cache(tmp_path)
    await cache.fetch(host.url)
    host.failing = 404
    with pytest.raises(AssetError, match="HTTP 404"):
        await cache.fetch(host.url)


async def test_a_tampered_cached_manifest_is_checked_like_a_fetched_one(
    host: Host, tmp_path: Path
) -> None:
    """A cached manifest edited to a traversal digest is not trusted when the host is down."""
    data_dir = tmp_path / "data"
    await new_cache(tmp_path).fetch(host.url)
    keys = data_dir / "keys.json"
    keys.write_bytes(b'{"secret": "x"}')
    [stored] = (data_dir / "assets" / "manifests").iterdir()
    stored.write_text(stored.read_text().replace(digests(host)["look.json"], TRAVERSAL))
    await host.stop()
    with watching(keys) as touched, pytest.raises(AssetError, match="Cannot connect to host"):
        await new_cache(tmp_path).fetch(host.url)
    assert touched == []
    assert keys.read_bytes() == b'{"secret": "x"}'


async def test_a_manifest_whose_bundle_did_not_verify_is_not_kept(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new manifest whose file is corrupt fails; with the host then down, the last good serves."""
    cache = new_cache(tmp_path)
    good = await cache.fetch(host.url)
    corpus = host.folder / "corpus.json"
    corpus.write_text(corpus.read_text().replace("Ava", "Eve"))
    write_manifest(host.folder, "Ava", "2")
    corpus.write_text(corpus.read_text().replace("Eve", "Eva"))  # no longer what v2 says
    with pytest.raises(AssetError, match=r"corpus\.json does not match its sha256"):
        await cache.fetch(host.url)
    await host.stop()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert await new_cache(tmp_path).fetch(host.url) == good
    [warning] = asset_warnings(caplog)
    assert "version 1" in warning


async def test_two_fetches_at_once_download_each_file_once(host: Host, tmp_path: Path) -> None:
    """Two sessions fetching the same bundle together share each download instead of racing."""
    cache = new_cache(tmp_path)
    first, second = await asyncio.gather(cache.fetch(host.url), cache.fetch(host.url))
    assert first == second
    assert host.file_requests() == {"look.json": 1, "voice.json": 1, "corpus.json": 1}
    assert cache.downloads == 3


# --- 2. limits: the manifest's size, each file's size, the number of files, the names ---


async def test_a_manifest_streamed_past_max_manifest_bytes_is_cut_off_at_the_limit(
    tmp_path: Path,
) -> None:
    """An endless chunked manifest: AssetError naming the limit; reading stops there."""
    sent = 0
    chunk = b"x" * (64 * 1024)

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it by
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(b'{"files": {}, "padding": "')
            while sent < 64 * MIB:
                await response.write(chunk)
                sent += len(chunk)
            await response.write(b'"}')
        return response

    app = web.Application()
    app.router.add_get("/big/manifest.json", endless)
    cache = new_cache(tmp_path, max_manifest_bytes=64 * 1024)
    async with serving(app) as base:
        tracemalloc.start()
        try:
            with pytest.raises(AssetError, match=r"over max_manifest_bytes \(65536 bytes\)"):
                await cache.fetch(f"{base}/big/")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * MIB
    assert sent < 32 * MIB


async def test_a_manifest_file_over_max_manifest_bytes_is_read_no_further_than_the_limit(
    tmp_path: Path,
) -> None:
    """A directory bundle's 8 MiB manifest: AssetError naming the limit; memory stays small."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / MANIFEST).write_bytes(b'{"files": {}, "padding": "' + b"x" * (8 * MIB) + b'"}')
    cache = new_cache(tmp_path, max_manifest_bytes=64 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(AssetError, match=r"over max_manifest_bytes \(65536 bytes\)"):
            await cache.fetch(str(folder))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MIB


async def test_a_file_over_max_asset_bytes_is_refused_before_any_download(
    host: Host, tmp_path: Path
) -> None:
    """A manifest size above max_asset_bytes: AssetError naming the file and the limit."""
    cache = new_cache(tmp_path, max_asset_bytes=500)
    with pytest.raises(AssetError, match=r"corpus\.json is 719 bytes, over max_asset_bytes \(500"):
        await cache.fetch(host.url)
    assert host.file_requests() == {}
    assert cached_files(cache) == []


def crafted_bundle(tmp_path: Path, files: dict[str, Any]) -> str:
    """A directory bundle with this manifest and, for each entry, an empty file."""
    folder = tmp_path / "crafted"
    folder.mkdir(exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps({"name": "X", "version": "1", "files": files}))
    return str(folder)


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


async def test_a_manifest_may_name_max_files_files_and_not_one_more(tmp_path: Path) -> None:
    """MAX_FILES files are fetched; MAX_FILES + 1 is an AssetError naming the limit."""
    folder = Path(crafted_bundle(tmp_path, {}))
    files = {f"f{index}.txt": {"sha256": EMPTY_SHA256, "size": 0} for index in range(MAX_FILES)}
    for name in files:
        (folder / name).touch()
    crafted_bundle(tmp_path, files)
    bundle = await new_cache(tmp_path).fetch(str(folder))
    assert len(bundle.paths) == MAX_FILES
    files["one-more.txt"] = {"sha256": EMPTY_SHA256, "size": 0}
    crafted_bundle(tmp_path, files)
    match = rf"names {MAX_FILES + 1} files, over the limit of {MAX_FILES}"
    with pytest.raises(AssetError, match=match):
        await new_cache(tmp_path).fetch(str(folder))


@pytest.mark.parametrize(
    "name",
    [
        "../keys.json",
        "a/b.json",
        "a\\b.json",
        ".hidden",
        "-dash.json",
        "_under.json",
        "",
        "x" * 129,
        "é.json",
        "look.json\n",
        "look json",
        "c:look.json",
    ],
)
async def test_a_file_name_outside_the_allowed_alphabet_is_refused(
    tmp_path: Path, name: str
) -> None:
    """Names are 1-128 of [A-Za-z0-9._-], starting alphanumeric; anything else: AssetError."""
    source = crafted_bundle(tmp_path, {name: {"sha256": EMPTY_SHA256, "size": 0}})
    cache = new_cache(tmp_path)
    with pytest.raises(AssetError, match="not allowed in a bundle") as caught:
        await cache.fetch(source)
    assert repr(name) in str(caught.value)
    assert cached_files(cache) == []


async def test_the_longest_allowed_file_name_is_accepted(tmp_path: Path) -> None:
    """128 characters of the allowed alphabet make a valid name (the limit is not off by one)."""
    name = "A.b-c_9" + "x" * 121
    source = crafted_bundle(tmp_path, {name: {"sha256": EMPTY_SHA256, "size": 0}})
    (Path(source) / name).touch()
    bundle = await new_cache(tmp_path).fetch(source)
    assert list(bundle.paths) == [name]


@pytest.mark.parametrize("size", [-1, True, False, 1.5, "0", None, [0]])
async def test_a_size_that_is_not_a_non_negative_integer_is_refused(
    tmp_path: Path, size: object
) -> None:
    """A size must be an int (not a bool) of at least 0: anything else is an AssetError."""
    (tmp_path / "crafted").mkdir()
    (tmp_path / "crafted" / "a.txt").touch()
    source = crafted_bundle(tmp_path, {"a.txt": {"sha256": EMPTY_SHA256, "size": size}})
    with pytest.raises(AssetError, match=r"a\.txt: size is not a non-negative integer"):
        await new_cache(tmp_path).fetch(source)


# --- 3. digests: exactly 64 lowercase hex digits, never a path ---


async def test_a_sha256_walking_out_of_the_cache_is_refused_and_that_file_never_opened(
    host: Host, tmp_path: Path
) -> None:
    """sha256 '../' + './'*26 + 'keys.json': the fetch fails; <data_dir>/keys.json is untouched."""
    data_dir = tmp_path / "data"
    cache = new_cache(tmp_path)
    keys = data_dir / "keys.json"
    secret = b'{"admin_token": "secret"}'
    keys.write_bytes(secret)
    assert len(TRAVERSAL) == 64
    assert (cache.directory / TRAVERSAL).resolve() == keys.resolve()
    entry = {"sha256": TRAVERSAL, "size": len(secret)}
    (host.folder / MANIFEST).write_text(json.dumps({"name": "Ava", "files": {"look.json": entry}}))
    with watching(keys) as touched, pytest.raises(AssetError, match=r"look\.json: sha256 is not"):
        await cache.fetch(host.url)
    assert touched == []
    assert keys.read_bytes() == secret
    assert host.file_requests() == {}


DIGEST_EDITS: dict[str, Callable[[str], str]] = {
    "upper case": str.upper,
    "63 digits": lambda digest: digest[:63],
    "65 digits": lambda digest: digest + "0",
    "not hex": lambda digest: "g" + digest[1:],
    "newline": lambda digest: digest[:63] + "\n",
    "space": lambda digest: " " + digest[1:],
}


@pytest.mark.parametrize("edit", list(DIGEST_EDITS))
async def test_a_sha256_that_is_not_64_lowercase_hex_digits_is_refused(
    tmp_path: Path, edit: str
) -> None:
    """Not lower-cased for the manifest's author: 'ABC…' is as wrong as 63 digits."""
    folder = tmp_path / "bundle"
    shutil.copytree(BUILTIN_BUNDLE, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    entry = manifest["files"]["look.json"]
    entry["sha256"] = DIGEST_EDITS[edit](entry["sha256"])
    (folder / MANIFEST).write_text(json.dumps(manifest))
    cache = new_cache(tmp_path)
    with pytest.raises(AssetError, match=r"look\.json: sha256 is not a SHA-256 digest"):
        await cache.fetch(str(folder))
    assert cached_files(cache) == []


# --- 4. cached files are trusted only once this process has verified them ---


async def test_files_are_hashed_once_after_a_restart_and_never_when_written_here(
    host: Host, tmp_path: Path
) -> None:
    """A restarted cache hashes each cached file on first use, then trusts it; none downloaded."""
    cache = new_cache(tmp_path)
    await cache.fetch(host.url)
    paths = [cache.directory / digest for digest in digests(host).values()]
    with watching(*paths) as touched:
        await cache.fetch(host.url)
    assert touched == []  # written and verified by this process
    restarted = new_cache(tmp_path)
    with watching(*paths) as touched:
        await restarted.fetch(host.url)
    assert sorted(touched) == sorted((path.name, "open") for path in paths)
    with watching(*paths) as touched:
        await restarted.fetch(host.url)
    assert touched == []
    assert restarted.downloads == 0
    assert host.file_requests() == {"look.json": 1, "voice.json": 1, "corpus.json": 1}


async def test_a_corrupt_cached_file_is_found_after_a_restart_and_fetched_again(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Same size, other bytes: the restarted cache deletes it with a WARNING and downloads it."""
    cache = new_cache(tmp_path)
    await cache.fetch(host.url)
    digest = digests(host)["corpus.json"]
    corrupt(cache.directory / digest)
    restarted = new_cache(tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        bundle = await restarted.fetch(host.url)
    assert sha256_of(bundle.paths["corpus.json"]) == digest
    assert host.file_requests() == {"look.json": 1, "voice.json": 1, "corpus.json": 2}
    assert restarted.downloads == 1
    [warning] = asset_warnings(caplog)
    assert "corpus.json" in warning
    assert "does not match" in warning


async def test_with_the_host_down_a_corrupt_cached_file_fails_the_fetch_naming_it(
    host: Host, tmp_path: Path
) -> None:
    """A corrupt file and no host to fetch it from: AssetError naming it, not the corrupt bytes."""
    cache = new_cache(tmp_path)
    await cache.fetch(host.url)
    path = cache.directory / digests(host)["corpus.json"]
    corrupt(path)
    await host.stop()
    with pytest.raises(AssetError, match=r"corpus\.json") as caught:
        await new_cache(tmp_path).fetch(host.url)
    assert "Cannot connect to host" in str(caught.value)
    assert not path.exists()


# --- 5. cancellation ---


async def test_a_fetch_cancelled_mid_download_leaves_no_partial_or_unverified_file(
    host: Host, tmp_path: Path
) -> None:
    """Cancelled halfway through a file: no .part-* file, nothing under its digest; retry works."""
    host.stall = "corpus.json"
    cache = new_cache(tmp_path, request_timeout_s=30 * UNIT)
    task = asyncio.create_task(cache.fetch(host.url))
    async with asyncio.timeout(10 * UNIT):
        await host.stalled.wait()
    await until(lambda: any(p.name.startswith(".part-") for p in cache.directory.iterdir()))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    names = digests(host)
    assert cached_files(cache) == sorted([names["look.json"], names["voice.json"]])
    host.stall = ""
    bundle = await cache.fetch(host.url)
    assert sha256_of(bundle.paths["corpus.json"]) == names["corpus.json"]
    assert cached_files(cache) == sorted(names.values())


# --- the server's settings reach its cache ---


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (
            {"max_asset_bytes": 500},
            r"corpus\.json is 719 bytes, over max_asset_bytes \(500 bytes\)",
        ),
        ({"max_manifest_bytes": 100}, r"over max_manifest_bytes \(100 bytes\)"),
    ],
)
async def test_the_servers_limits_are_its_asset_caches(
    start_server: ServerFactory, limit: dict[str, int], message: str
) -> None:
    """Settings.max_asset_bytes and max_manifest_bytes apply to the built-in bundle's connect."""
    server = await start_server(**limit)
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    with pytest.raises(AssetsFailed, match=message):
        await scene.connect()
