"""The reference page's Web SDK: where it comes from, and fetching it from the npm registry.

The page loads the unmodified browser Web SDK (``@soulmachines/smwebsdk``). Its package is under
Soul Machines' end-user licence, so dpkit never commits or packages it: a server finds it, lowest
priority last, in

1. the ``web_sdk_dir`` setting (``--web-sdk-dir``): a directory holding ``smwebsdk.js`` (a bad
   one stops the server at start-up, naming the directory);
2. ``<data_dir>/web-sdk/<pinned version>/``, installed by ``dpkit web-sdk install`` or by an
   earlier fetch;
3. a developer checkout's ``node_modules/@soulmachines/smwebsdk/bundles`` (``scripts/setup``
   installs it with npm), under the working directory or the source tree;
4. else the npm registry, the first time the page asks for the SDK.

A fetch downloads ``<registry>/@soulmachines/smwebsdk/-/smwebsdk-<version>.tgz`` (at most
``MAX_TARBALL_BYTES``), checks it against the pinned npm ``integrity`` (for another version, the
one in the registry's metadata for it) before anything is unpacked, and unpacks only
``package/bundles/**``, regular files only, into a temporary directory that is renamed into place:
a crash never leaves half an install. A tarball with an absolute path, a ``..``, a link or a device
in it is refused whole.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import aiohttp

from dpkit.errors import ConfigurationError, DpkitError
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server")

PACKAGE = "@soulmachines/smwebsdk"
#: The version the page is written and tested against (package.json, package-lock.json).
PINNED_VERSION = "15.8.1"
#: Its npm ``integrity``, as package-lock.json records it: the SHA-512 of the tarball.
PINNED_INTEGRITY = (
    "sha512-h45KN9N5xXNCsS2GMUkmBF3Xtw4i6WtHXqyssKFRyibzvo2XAlAYaeznTKai"
    "/UgORiphlDCBaYtyOUdLC0GnYA=="
)
DEFAULT_REGISTRY = "https://registry.npmjs.org"
#: The file the page loads; a directory holding it is a Web SDK.
SDK_FILE = "smwebsdk.js"
#: The largest tarball downloaded (15.8.1's is 2.5 MB), and the largest metadata document.
MAX_TARBALL_BYTES = 64 * 1024 * 1024
MAX_METADATA_BYTES = 4 * 1024 * 1024
#: The most a tarball may unpack to, counting every member, and the most members it may have.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 20_000
#: How long a whole fetch may take (seconds).
FETCH_TIMEOUT_S = 120.0
#: After a failed fetch, page requests get the failure for this long before one tries again.
FETCH_RETRY_S = 30.0
#: A developer checkout's copy, installed by scripts/setup (npm ci).
CHECKOUT_BUNDLE = Path("node_modules/@soulmachines/smwebsdk/bundles")
#: What an install records next to the files it unpacked (never served: it starts with a dot).
MARKER = ".dpkit-web-sdk.json"
#: npm's version syntax, bounded; a version becomes a directory name and part of a URL.
VERSION_PATTERN = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}(?:-[0-9A-Za-z.-]{1,40})?")
_BUNDLES = PurePosixPath("package/bundles")
_INTEGRITY_ALGORITHMS = {"sha512": 3, "sha384": 2, "sha256": 1}

#: ``progress(received_bytes, total_bytes_or_None)`` while a tarball downloads.
Progress = Callable[[int, int | None], None]

NO_REGISTRY_ADVICE = (
    "On a machine without access to the npm registry, give dpkit serve a copy of the Web SDK's "
    "bundles directory with --web-sdk-dir DIR (the web_sdk_dir setting), or run "
    "'dpkit web-sdk install' where the registry is reachable and copy <data_dir>/web-sdk/ over."
)


class WebSdkError(DpkitError):
    """The page's Web SDK could not be obtained; ``name`` says why."""

    name = "webSdkError"
    advice = NO_REGISTRY_ADVICE


class RegistryUnreachable(WebSdkError):
    """The npm registry did not answer (refused, timed out, no route, bad name)."""

    name = "registryUnreachable"
    retryable = True


class RegistryHttpError(WebSdkError):
    """The registry answered with an HTTP error (no such version, a proxy's 5xx ...)."""

    name = "registryHttpError"
    advice = (
        "Check the version and the registry (npm_registry, npm_config_registry). "
        + NO_REGISTRY_ADVICE
    )


class IntegrityMismatch(WebSdkError):
    """The tarball's hash is not the pinned one: it was refused before anything was unpacked."""

    name = "integrityMismatch"
    advice = (
        "The registry (or something between it and this machine) served a different file: "
        "check the npm_registry setting and any proxy. " + NO_REGISTRY_ADVICE
    )


class BadTarball(WebSdkError):
    """The tarball is not one dpkit unpacks (unreadable, a link, a path outside the package)."""

    name = "badTarball"
    advice = "The registry served a tarball dpkit will not unpack. " + NO_REGISTRY_ADVICE


class TarballTooLarge(BadTarball):
    """The tarball, or what it unpacks to, is over dpkit's bound."""

    name = "tarballTooLarge"


class InstallFailed(WebSdkError):
    """The data directory could not take the install (read-only, full ...)."""

    name = "webSdkInstallFailed"
    advice = "Make the data directory writable (--data-dir), or give --web-sdk-dir DIR."


class WebSdkDirInvalid(WebSdkError, ConfigurationError):
    """``web_sdk_dir`` does not hold a Web SDK (``smwebsdk.js``)."""

    name = "webSdkDirInvalid"
    advice = (
        "Point --web-sdk-dir (web_sdk_dir) at the Web SDK's bundles directory, the one holding "
        "smwebsdk.js, or leave it unset to use the npm registry."
    )


class BadWebSdkVersion(WebSdkError, ConfigurationError):
    """A version that is not npm's ``MAJOR.MINOR.PATCH[-PRERELEASE]``."""

    name = "badWebSdkVersion"
    advice = f"Give a version such as {PINNED_VERSION}."


@dataclass(frozen=True)
class Pin:
    """A Web SDK version and the npm ``integrity`` its tarball must have."""

    version: str
    integrity: str


PIN = Pin(PINNED_VERSION, PINNED_INTEGRITY)


# --- names, URLs and places ---


def validate_version(version: str) -> str:
    """``version`` if it is npm's syntax (it is used in a path and a URL), else BadWebSdkVersion."""
    if not VERSION_PATTERN.fullmatch(version):
        raise BadWebSdkVersion(f"not a Web SDK version: {version[:60]!r}")
    return version


def _check_registry(url: str, where: str) -> str:
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or len(url) > 2000:
        raise ConfigurationError(f"{where} must be an http(s) URL, got {url[:200]!r}")
    if parsed.query or parsed.fragment:
        raise ConfigurationError(f"{where} must not have a query or fragment, got {url[:200]!r}")
    return url.rstrip("/")


def registry_url(setting: str = "", environ: Mapping[str, str] | None = None) -> str:
    """The registry to use: the ``npm_registry`` setting, else npm's own variable, else npm's."""
    if setting:
        return _check_registry(setting, "npm_registry")
    env = os.environ if environ is None else environ
    for name in ("npm_config_registry", "NPM_CONFIG_REGISTRY"):
        value = env.get(name, "").strip()
        if value:
            return _check_registry(value, name)
    return DEFAULT_REGISTRY


def tarball_url(registry: str, version: str) -> str:
    return f"{registry}/{PACKAGE}/-/smwebsdk-{validate_version(version)}.tgz"


def metadata_url(registry: str, version: str) -> str:
    return f"{registry}/{PACKAGE.replace('/', '%2f')}/{validate_version(version)}"


def install_dir(data_dir: Path, version: str) -> Path:
    """Where ``version`` is (or would be) installed in a data directory."""
    return data_dir / "web-sdk" / validate_version(version)


def holds_sdk(directory: Path) -> bool:
    try:
        return (directory / SDK_FILE).is_file()
    except OSError:
        return False


def installed(data_dir: Path, version: str) -> Path | None:
    """The installed copy of ``version`` in the data directory, or None."""
    directory = install_dir(data_dir, version)
    return directory if holds_sdk(directory) else None


def check_web_sdk_dir(directory: Path) -> Path:
    """``directory`` if it holds ``smwebsdk.js``, else WebSdkDirInvalid naming it."""
    if not directory.is_dir():
        raise WebSdkDirInvalid(f"web_sdk_dir {directory} is not a directory")
    if not holds_sdk(directory):
        raise WebSdkDirInvalid(f"web_sdk_dir {directory} has no {SDK_FILE} in it")
    return directory


def default_checkouts() -> tuple[Path, ...]:
    """Where a developer checkout keeps npm's copy: under the working directory, the source tree."""
    source_root = Path(__file__).resolve().parents[3]
    return (Path.cwd() / CHECKOUT_BUNDLE, source_root / CHECKOUT_BUNDLE)


def _checkout_version(bundles: Path) -> str:
    """The version in a checkout's package.json (bounded read), or "" if it cannot be read."""
    try:
        with (bundles.parent / "package.json").open("rb") as handle:
            data = json.loads(handle.read(MAX_METADATA_BYTES))
        version = data.get("version", "") if isinstance(data, dict) else ""
    except (OSError, ValueError, RecursionError):
        return ""
    return version if isinstance(version, str) and VERSION_PATTERN.fullmatch(version) else ""


# --- where the page's SDK comes from ---

SourceKind = Literal["dir", "installed", "checkout", "fetch", "off"]


@dataclass(frozen=True)
class WebSdkSource:
    """Where a server's page gets its Web SDK, as resolved at start-up."""

    kind: SourceKind
    #: The version it is (the pinned one unless a directory says otherwise; "" if unknown).
    version: str
    #: The directory it is served from (None until fetched, or with the page off).
    directory: Path | None
    #: The registry a fetch would use.
    registry: str
    #: The data directory, and where in it a fetch installs the pinned version.
    data_dir: Path
    target: Path


def resolve_web_sdk(
    web_sdk_dir: Path | None,
    data_dir: Path,
    registry: str,
    *,
    pin: Pin = PIN,
    checkouts: Iterable[Path] | None = None,
) -> WebSdkSource:
    """Where the page's SDK comes from: web_sdk_dir, installed, a checkout, else the registry."""
    target = install_dir(data_dir, pin.version)
    if web_sdk_dir is not None:
        directory = check_web_sdk_dir(web_sdk_dir)
        return WebSdkSource("dir", "", directory, registry, data_dir, target)
    if holds_sdk(target):
        return WebSdkSource("installed", pin.version, target, registry, data_dir, target)
    for candidate in default_checkouts() if checkouts is None else checkouts:
        if holds_sdk(candidate):
            version = _checkout_version(candidate)
            return WebSdkSource("checkout", version, candidate, registry, data_dir, target)
    return WebSdkSource("fetch", pin.version, None, registry, data_dir, target)


def describe_web_sdk(source: WebSdkSource) -> str:
    """One line for the banner: where the page's SDK comes from."""
    if source.kind == "off":
        return "none (the page is not served: serve_page is off)"
    if source.kind == "dir":
        return f"from --web-sdk-dir {source.directory}"
    if source.kind == "installed":
        return f"{source.version} from {source.directory}"
    if source.kind == "checkout":
        return f"{source.version or 'unknown version'} from {source.directory} (installed by npm)"
    return (
        f"{source.version} will be fetched from {source.registry} on first use "
        f"(into {source.target}; without registry access use --web-sdk-dir, see "
        "'dpkit web-sdk install')"
    )


# --- integrity ---


def _parse_integrity(integrity: str) -> list[tuple[str, bytes]]:
    """The (algorithm, digest) pairs of an SRI string dpkit can check, strongest first."""
    hashes = []
    for item in integrity.split()[:16]:
        algorithm, _, encoded = item.partition("-")
        if algorithm not in _INTEGRITY_ALGORITHMS:
            continue
        try:
            digest = base64.b64decode(encoded.split("?")[0], validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(digest) == hashlib.new(algorithm).digest_size:
            hashes.append((algorithm, digest))
    return sorted(hashes, key=lambda pair: -_INTEGRITY_ALGORITHMS[pair[0]])


def integrity_of(data: bytes) -> str:
    """npm's ``integrity`` for a tarball: ``sha512-<base64>``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def check_integrity(data: bytes, integrity: str, url: str) -> None:
    """Raise IntegrityMismatch unless ``data`` has the strongest hash ``integrity`` names."""
    hashes = _parse_integrity(integrity)
    if not hashes:
        raise IntegrityMismatch(f"no sha256/384/512 integrity to check {url} against")
    algorithm, expected = hashes[0]
    actual = hashlib.new(algorithm, data).digest()
    if actual != expected:
        raise IntegrityMismatch(
            f"{url} does not match its integrity: expected {algorithm}-"
            f"{base64.b64encode(expected).decode()}, got {algorithm}-"
            f"{base64.b64encode(actual).decode()}; nothing was unpacked"
        )


# --- unpacking ---


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path, or BadTarball if it could land anywhere but under ``package/``."""
    name = member.name
    if len(name) > 1000 or "\\" in name or "\x00" in name:
        raise BadTarball(f"tarball member with a bad name: {name[:100]!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise BadTarball(f"tarball member outside the package: {name[:100]!r}")
    if member.issym() or member.islnk():
        raise BadTarball(f"tarball member is a link: {name[:100]!r} -> {member.linkname[:100]!r}")
    if not (member.isreg() or member.isdir()):
        raise BadTarball(f"tarball member is not a file or directory: {name[:100]!r}")
    return path


def _copy_member(source: IO[bytes], target: Path, name: str) -> None:
    """Copy one member out; a read error is the tarball's fault, a write error the disk's."""
    try:
        out = target.open("xb")
    except FileExistsError:
        raise BadTarball(f"tarball has {name[:100]!r} twice") from None
    except OSError as exc:
        raise InstallFailed(f"cannot write {target}: {exc}") from exc
    with out:
        while True:
            try:
                chunk = source.read(256 * 1024)
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise BadTarball(f"tarball member {name[:100]!r} cannot be read: {exc}") from exc
            if not chunk:
                return
            try:
                out.write(chunk)
            except OSError as exc:
                raise InstallFailed(f"cannot write {target}: {exc}") from exc


def unpack_bundles(
    data: bytes,
    destination: Path,
    *,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> int:
    """Unpack ``package/bundles/**`` of a .tgz into ``destination``; return the files written.

    Every member is checked (a bad one anywhere refuses the whole tarball), and the members'
    sizes and count are bounded as the tarball is read, so a gzip bomb stops early.
    """
    written = 0
    total = 0
    members = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tar:
            for member in tar:
                members += 1
                total += max(member.size, 0)
                if members > max_members or total > max_unpacked_bytes:
                    raise TarballTooLarge(
                        f"tarball unpacks to more than {max_members} members or "
                        f"{max_unpacked_bytes} bytes"
                    )
                path = _member_path(member)
                if not member.isreg() or path.parts[:2] != _BUNDLES.parts:
                    continue
                relative = path.parts[2:]
                if not relative or any(part.startswith(".") for part in relative):
                    continue
                source = tar.extractfile(member)
                if source is None:
                    raise BadTarball(f"tarball member cannot be read: {member.name[:100]!r}")
                target = destination.joinpath(*relative)
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise BadTarball(f"tarball member {member.name[:100]!r}: {exc}") from exc
                _copy_member(source, target, member.name)
                written += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BadTarball(f"not a readable .tgz: {exc}") from exc
    if not (destination / SDK_FILE).is_file():
        raise BadTarball(f"the tarball has no package/bundles/{SDK_FILE}")
    return written


def _remove_stale_temporaries(parent: Path, version: str, older_than_s: float = 3600.0) -> None:
    """Temporary directories a crashed install left (an hour old: no install takes that long)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in parent.glob(f".tmp-{version}-*"):
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > older_than_s:
                    shutil.rmtree(entry)


def install_tarball(data: bytes, data_dir: Path, version: str, integrity: str, url: str) -> Path:
    """Check ``data`` against ``integrity``, then unpack its bundles into the data directory.

    The files go to a temporary directory next to the target, renamed into place at the end.
    """
    check_integrity(data, integrity, url)
    target = install_dir(data_dir, version)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(parent, version)
        temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=parent))
    except OSError as exc:
        raise InstallFailed(f"cannot write the Web SDK into {parent}: {exc}") from exc
    try:
        files = unpack_bundles(data, temporary)
        marker = {"package": PACKAGE, "version": version, "integrity": integrity, "from": url}
        (temporary / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        temporary.chmod(0o755)
        try:
            temporary.rename(target)
        except OSError:
            if not holds_sdk(target):
                raise
            # Another install (a second process) finished first: keep its copy.
            shutil.rmtree(temporary, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        raise InstallFailed(f"cannot write the Web SDK into {target}: {exc}") from exc
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.debug("unpacked %d Web SDK files into %s", files, target)
    return target


# --- the registry ---


def _unreachable(url: str, exc: BaseException) -> RegistryUnreachable:
    what = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        what = "timed out"
    return RegistryUnreachable(f"cannot reach the npm registry at {url}: {what}")


async def _read_bounded(
    response: aiohttp.ClientResponse, url: str, limit: int, progress: Progress | None
) -> bytes:
    total = response.content_length
    if total is not None and total > limit:
        raise TarballTooLarge(f"{url} is {total} bytes, over the {limit}-byte limit")
    received = bytearray()
    if progress is not None:
        progress(0, total)
    async for chunk in response.content.iter_chunked(64 * 1024):
        received += chunk
        if len(received) > limit:
            raise TarballTooLarge(f"{url} is over the {limit}-byte limit")
        if progress is not None:
            progress(len(received), total)
    return bytes(received)


async def _get(
    session: aiohttp.ClientSession, url: str, limit: int, progress: Progress | None = None
) -> bytes:
    try:
        async with session.get(url, headers={"Accept": "*/*"}) as response:
            if response.status != 200:
                raise RegistryHttpError(f"{url} answered HTTP {response.status} {response.reason}")
            return await _read_bounded(response, url, limit, progress)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise BadTarball(f"{url}: the download broke off: {exc}") from exc
        raise _unreachable(url, exc) from exc


async def fetch_integrity(session: aiohttp.ClientSession, registry: str, version: str) -> str:
    """The ``dist.integrity`` the registry's metadata gives for ``version``."""
    url = metadata_url(registry, version)
    raw = await _get(session, url, MAX_METADATA_BYTES)
    try:
        document = json.loads(raw)
        integrity = document["dist"]["integrity"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise RegistryHttpError(f"{url} is not npm package metadata with dist.integrity") from exc
    if not isinstance(integrity, str) or not _parse_integrity(integrity):
        raise RegistryHttpError(f"{url} gives no sha256/384/512 dist.integrity")
    return integrity


@dataclass(frozen=True)
class Installed:
    """What :func:`install_web_sdk` did."""

    directory: Path
    version: str
    #: It was there already: nothing was downloaded.
    already: bool
    #: The tarball's size (0 if nothing was downloaded).
    bytes: int = 0


async def install_web_sdk(
    data_dir: Path,
    *,
    version: str = PINNED_VERSION,
    registry: str = DEFAULT_REGISTRY,
    integrity: str | None = None,
    progress: Progress | None = None,
    max_bytes: int = MAX_TARBALL_BYTES,
    timeout_s: float = FETCH_TIMEOUT_S,
) -> Installed:
    """Download ``version`` of the Web SDK, check it, and install it under ``data_dir``.

    ``integrity`` defaults to the pinned one for the pinned version, and to the registry
    metadata's ``dist.integrity`` for any other. Already installed: nothing is downloaded.
    """
    validate_version(version)
    existing = await asyncio.to_thread(installed, data_dir, version)
    if existing is not None:
        return Installed(existing, version, already=True)
    if integrity is None and version == PINNED_VERSION:
        integrity = PINNED_INTEGRITY
    url = tarball_url(registry, version)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 15.0))
    async with aiohttp.ClientSession(timeout=timeout, trust_env=True) as session:
        if integrity is None:
            integrity = await fetch_integrity(session, registry, version)
        logger.info("fetching the page's Web SDK %s from %s", version, url)
        data = await _get(session, url, max_bytes, progress)
    directory = await asyncio.to_thread(install_tarball, data, data_dir, version, integrity, url)
    logger.info("installed the page's Web SDK %s in %s (%d bytes)", version, directory, len(data))
    return Installed(directory, version, already=False, bytes=len(data))


def format_bytes(count: int) -> str:
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


def progress_line(received: int, total: int | None) -> str:
    """``1.2 MiB / 2.4 MiB (50 %)``."""
    if total:
        return f"{format_bytes(received)} / {format_bytes(total)} ({100 * received // total} %)"
    return f"{format_bytes(received)} / unknown size"


class _LoggedProgress:
    """Logs a download's progress at each quarter (or each 4 MiB when the size is unknown)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._next = 0

    def __call__(self, received: int, total: int | None) -> None:
        step = max(total // 4, 1) if total else 4 * 1024 * 1024
        if received >= self._next or (total is not None and received == total):
            logger.info("%s: %s", self._what, progress_line(received, total))
            self._next = (received // step + 1) * step


# --- the server's side ---


class WebSdkProvider:
    """The running server's Web SDK: the directory to serve, fetched on first need.

    One fetch at a time, owned by this object (cancelled and awaited by :meth:`close`); every
    page request that needs the SDK meanwhile waits for that one. A failed fetch is reported to
    the requests for ``retry_after_s``, then tried again by the next one.
    """

    def __init__(
        self,
        source: WebSdkSource,
        *,
        pin: Pin = PIN,
        retry_after_s: float = FETCH_RETRY_S,
        max_bytes: int = MAX_TARBALL_BYTES,
        timeout_s: float = FETCH_TIMEOUT_S,
    ) -> None:
        self.source = source
        self.pin = pin
        self.retry_after_s = retry_after_s
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.directory: Path | None = source.directory
        self.last_error: WebSdkError | None = None
        self.fetches = 0
        self._failed_at: float | None = None
        self._task: asyncio.Task[Path | WebSdkError] | None = None
        self._tasks = TaskOwner("web-sdk")

    @classmethod
    def for_settings(
        cls,
        web_sdk_dir: Path | None,
        data_dir: Path,
        npm_registry: str,
        *,
        serve_page: bool = True,
        pin: Pin = PIN,
        checkouts: Sequence[Path] | None = None,
    ) -> WebSdkProvider:
        """Resolve where the SDK comes from (a bad ``web_sdk_dir`` raises WebSdkDirInvalid)."""
        if not serve_page:
            target = install_dir(data_dir, pin.version)
            return cls(WebSdkSource("off", "", None, "", data_dir, target), pin=pin)
        registry = registry_url(npm_registry)
        source = resolve_web_sdk(web_sdk_dir, data_dir, registry, pin=pin, checkouts=checkouts)
        return cls(source, pin=pin)

    @property
    def available(self) -> bool:
        """Whether the page can expect the SDK: it is here, or it will be fetched."""
        if self.directory is not None:
            return True
        return self.source.kind == "fetch" and not self._failed_recently()

    @property
    def fetching(self) -> bool:
        return self._task is not None

    def _failed_recently(self) -> bool:
        return (
            self._failed_at is not None and time.monotonic() - self._failed_at < self.retry_after_s
        )

    def _installed_meanwhile(self) -> Path | None:
        # ``dpkit web-sdk install`` may have put it there while the server ran.
        return self.source.target if holds_sdk(self.source.target) else None

    async def get(self) -> Path | WebSdkError:
        """The directory to serve the SDK from, fetching it first if need be, or why not."""
        if self.directory is not None:
            return self.directory
        if self.source.kind != "fetch":
            return WebSdkError("this server does not serve the page")
        if self._task is None:
            found = self._installed_meanwhile()
            if found is not None:
                self.directory = found
                return found
            if self._failed_recently() and self.last_error is not None:
                return self.last_error
            if self._tasks.closed:
                return WebSdkError("the server is shutting down")
            self.fetches += 1
            self._task = self._tasks.spawn(self._fetch(), "fetch")
        task = self._task
        # asyncio.wait, not await: a request that goes away must not cancel everyone's fetch.
        await asyncio.wait([task])
        if task.cancelled():
            return WebSdkError("the server is shutting down")
        try:
            return task.result()
        except Exception as exc:
            return WebSdkError(f"the fetch failed unexpectedly: {exc!r}")

    async def _fetch(self) -> Path | WebSdkError:
        try:
            result = await install_web_sdk(
                self.source.data_dir,
                version=self.pin.version,
                registry=self.source.registry,
                integrity=self.pin.integrity,
                progress=_LoggedProgress(f"fetching the page's Web SDK {self.pin.version}"),
                max_bytes=self.max_bytes,
                timeout_s=self.timeout_s,
            )
        except WebSdkError as error:
            self.last_error = error
            self._failed_at = time.monotonic()
            logger.warning("the page's Web SDK could not be fetched: %s", error)
            return error
        finally:
            self._task = None
        self.directory = result.directory
        self.last_error = None
        self._failed_at = None
        return result.directory

    def missing_message(self, error: WebSdkError) -> str:
        """What the page shows when it has no SDK: the reason, then the remedy."""
        return (
            f"The page's Web SDK ({PACKAGE} {self.pin.version}) could not be fetched: {error}. "
            f"{error.advice}"
        )

    def describe(self) -> str:
        return describe_web_sdk(self.source)

    def page_config(self) -> dict[str, Any]:
        """What /api/page-config says about the SDK."""
        if self.directory is not None:
            state = "installed"
        elif self.fetching:
            state = "fetching"
        elif self._failed_recently():
            state = "failed"
        else:
            state = "willFetch"
        return {
            "source": self.source.kind,
            "version": self.source.version,
            "state": state,
            "error": str(self.last_error) if state == "failed" else None,
        }

    async def close(self) -> None:
        """Cancel and await a fetch under way. Idempotent."""
        await self._tasks.close()
