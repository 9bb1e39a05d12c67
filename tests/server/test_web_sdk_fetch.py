"""The page's Web SDK fetched from an npm registry: a real loopback registry serving a real .tgz
built from the SDK's own bundle files, hostile tarballs, an unreachable registry, the resolution
order (--web-sdk-dir, installed, checkout, fetch), ``dpkit web-sdk install``, and the real
registry once."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dpkit.cli import build_parser
from dpkit.errors import ConfigurationError
from dpkit.server import DpkitServer
from dpkit.server.web_sdk import (
    MARKER,
    PINNED_INTEGRITY,
    PINNED_VERSION,
    SDK_FILE,
    BadTarball,
    IntegrityMismatch,
    Pin,
    RegistryHttpError,
    RegistryUnreachable,
    TarballTooLarge,
    WebSdkDirInvalid,
    WebSdkProvider,
    describe_web_sdk,
    install_web_sdk,
    integrity_of,
    progress_line,
    registry_url,
    resolve_web_sdk,
    unpack_bundles,
)
from tests.support import UNIT, ServerFactory, make_settings, serving, spawn_dpkit, until

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "node_modules" / "@soulmachines" / "smwebsdk"
BUNDLES = PACKAGE_DIR / "bundles"
UNREACHABLE = "http://127.0.0.1:9"
TARBALL_PATH = "/@soulmachines/smwebsdk/-/smwebsdk-{version}.tgz"
METADATA_PATH = "/@soulmachines%2fsmwebsdk/{version}"
OTHER_VERSION = "99.0.0-test"


def real_bundles() -> Path:
    assert (BUNDLES / SDK_FILE).is_file(), "scripts/setup installs the Web SDK (npm ci)"
    return BUNDLES


Member = tuple[tarfile.TarInfo, bytes | None]


def file_member(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def make_tgz(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def sdk_members() -> list[Member]:
    """The package as npm packs it: ``package/`` with its package.json and the real bundles."""
    members = [file_member("package/package.json", (PACKAGE_DIR / "package.json").read_bytes())]
    for path in sorted(real_bundles().rglob("*")):
        if path.is_file():
            name = "package/bundles/" + path.relative_to(BUNDLES).as_posix()
            members.append(file_member(name, path.read_bytes()))
    # A file outside bundles/ that must not be installed.
    members.append(file_member("package/lib/index.js", b"module.exports = {};\n"))
    return members


@pytest.fixture(scope="module")
def sdk_tgz() -> bytes:
    """A real .tgz of the SDK, built here from the files npm installed."""
    return make_tgz(sdk_members())


@dataclass
class Registry:
    """An npm registry on loopback: tarballs and metadata by version, counting every request."""

    tarballs: dict[str, bytes] = field(default_factory=dict)
    integrities: dict[str, str] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    url: str = ""
    #: Answer tarball requests with this HTTP status instead (0: serve them).
    failing: int = 0
    #: Stream tarballs without a Content-Length.
    chunked: bool = False
    #: Hold tarball answers until this is set.
    gate: asyncio.Event | None = None

    def publish(self, version: str, tgz: bytes, integrity: str | None = None) -> None:
        self.tarballs[version] = tgz
        self.integrities[version] = integrity or integrity_of(tgz)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        for version, tgz in self.tarballs.items():
            if raw == TARBALL_PATH.format(version=version):
                self.requests["tarball"] += 1
                return await self._tarball(request, tgz)
            if raw.lower() == METADATA_PATH.format(version=version).lower():
                self.requests["metadata"] += 1
                dist = {"integrity": self.integrities[version], "tarball": self.url + raw}
                return web.json_response({"name": "@soulmachines/smwebsdk", "dist": dist})
        self.requests["other"] += 1
        return web.json_response({"error": "Not found"}, status=404)

    async def _tarball(self, request: web.Request, tgz: bytes) -> web.StreamResponse:
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            return web.Response(status=self.failing, text="registry trouble")
        if not self.chunked:
            return web.Response(body=tgz, content_type="application/octet-stream")
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(tgz), 16 * 1024):
            await response.write(tgz[start : start + 16 * 1024])
        await response.write_eof()
        return response


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    served = Registry()
    app = web.Application()
    app.router.add_get("/{tail:.*}", served.handle)
    async with serving(app) as url:
        served.url = url
        yield served


def test_pinned_version_and_integrity_are_the_lock_files() -> None:
    """The pin in dpkit is the one package.json and package-lock.json install for developers."""
    lock = json.loads((REPO / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/@soulmachines/smwebsdk"]
    assert (entry["version"], entry["integrity"]) == (PINNED_VERSION, PINNED_INTEGRITY)
    assert json.loads((REPO / "package.json").read_text())["dependencies"] == {
        "@soulmachines/smwebsdk": PINNED_VERSION
    }


def leftovers(data_dir: Path) -> list[str]:
    """Everything under <data_dir>/web-sdk (temporary directories included)."""
    root = data_dir / "web-sdk"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


async def test_install_checks_and_unpacks_only_the_bundles(
    registry: Registry, sdk_tgz: bytes, tmp_path: Path
) -> None:
    """A checked tarball's package/bundles/** lands in <data_dir>/web-sdk/<version>/, alone."""
    registry.publish(OTHER_VERSION, sdk_tgz)
    seen: list[tuple[int, int | None]] = []
    result = await install_web_sdk(
        tmp_path,
        version=OTHER_VERSION,
        registry=registry.url,
        progress=lambda received, total: seen.append((received, total)),
    )
    target = tmp_path / "web-sdk" / OTHER_VERSION
    assert (result.directory, result.already, result.bytes) == (target, False, len(sdk_tgz))
    assert registry.requests == Counter({"metadata": 1, "tarball": 1})
    installed = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(BUNDLES).as_posix() for p in BUNDLES.rglob("*") if p.is_file())
    assert installed == sorted([*expected, MARKER])
    assert (target / SDK_FILE).read_bytes() == (BUNDLES / SDK_FILE).read_bytes()
    assert json.loads((target / MARKER).read_text())["integrity"] == integrity_of(sdk_tgz)
    assert leftovers(tmp_path) == [OTHER_VERSION]
    assert seen[0] == (0, len(sdk_tgz))
    assert seen[-1] == (len(sdk_tgz), len(sdk_tgz))
    again = await install_web_sdk(tmp_path, version=OTHER_VERSION, registry=registry.url)
    assert again.already
    assert registry.requests == Counter({"metadata": 1, "tarball": 1})


async def test_a_tarball_that_is_not_the_pinned_one_is_refused(
    registry: Registry, sdk_tgz: bytes, tmp_path: Path
) -> None:
    """The pinned version served with other bytes: integrityMismatch, and nothing is installed."""
    registry.publish(PINNED_VERSION, sdk_tgz)  # the same files, but not npm's tarball
    with pytest.raises(IntegrityMismatch) as caught:
        await install_web_sdk(tmp_path, registry=registry.url)
    assert caught.value.name == "integrityMismatch"
    assert PINNED_INTEGRITY in caught.value.message
    assert "nothing was unpacked" in caught.value.message
    assert leftovers(tmp_path) == []


async def test_metadata_integrity_is_checked_for_another_version(
    registry: Registry, sdk_tgz: bytes, tmp_path: Path
) -> None:
    """A version not pinned is checked against the registry's dist.integrity for it."""
    registry.publish(OTHER_VERSION, sdk_tgz, integrity=integrity_of(b"something else"))
    with pytest.raises(IntegrityMismatch):
        await install_web_sdk(tmp_path, version=OTHER_VERSION, registry=registry.url)
    assert registry.requests == Counter({"metadata": 1, "tarball": 1})
    assert leftovers(tmp_path) == []


def found_anywhere(root: Path, name: str) -> list[Path]:
    return list(root.rglob(name))


def hostile(kind: str, root: Path) -> Member:
    if kind == "symlink":
        info = tarfile.TarInfo("package/bundles/evil.js")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return info, None
    if kind == "hardlink":
        info = tarfile.TarInfo("package/bundles/evil.js")
        info.type, info.linkname = tarfile.LNKTYPE, "package/bundles/smwebsdk.js"
        return info, None
    if kind == "device":
        info = tarfile.TarInfo("package/bundles/evil.js")
        info.type = tarfile.CHRTYPE
        return info, None
    names = {
        "dotdot": "package/bundles/../../../evil.js",
        "absolute": str(root / "evil.js"),
        "outside": "../evil.js",
    }
    return file_member(names[kind], b"alert('evil')\n")


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "outside", "symlink", "hardlink", "device"])
async def test_hostile_tarball_members_refuse_the_whole_tarball(
    kind: str, registry: Registry, tmp_path: Path
) -> None:
    """Paths out of the package, links and devices: badTarball, nothing installed or written."""
    sdk = file_member("package/bundles/smwebsdk.js", b"window.Scene = function () {};\n")
    registry.publish(OTHER_VERSION, make_tgz([sdk, hostile(kind, tmp_path)]))
    data_dir = tmp_path / "a" / "b" / "data"
    with pytest.raises(BadTarball) as caught:
        await install_web_sdk(data_dir, version=OTHER_VERSION, registry=registry.url)
    assert caught.value.name == "badTarball"
    assert "evil.js" in caught.value.message
    assert leftovers(data_dir) == []
    assert found_anywhere(tmp_path, "evil.js") == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversize_tarball_is_refused(
    chunked: bool, registry: Registry, sdk_tgz: bytes, tmp_path: Path
) -> None:
    """Over the download bound, with or without a Content-Length: tarballTooLarge, no install."""
    registry.publish(OTHER_VERSION, sdk_tgz)
    registry.chunked = chunked
    with pytest.raises(TarballTooLarge) as caught:
        await install_web_sdk(
            tmp_path, version=OTHER_VERSION, registry=registry.url, max_bytes=64 * 1024
        )
    assert "65536-byte limit" in caught.value.message
    assert leftovers(tmp_path) == []


def test_a_tarball_that_unpacks_too_far_stops_early(tmp_path: Path) -> None:
    """A member over the unpacked bound (a gzip bomb) is refused before it is written out."""
    zeros = file_member("package/bundles/smwebsdk.js", bytes(8 * 1024 * 1024))
    tgz = make_tgz([zeros])
    assert len(tgz) < 64 * 1024
    with pytest.raises(TarballTooLarge):
        unpack_bundles(tgz, tmp_path, max_unpacked_bytes=1024 * 1024)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BadTarball):
        unpack_bundles(b"not a tarball at all", tmp_path)


async def test_an_unreachable_registry_is_named_with_the_way_round_it(tmp_path: Path) -> None:
    """Connection refused: registryUnreachable naming the URL, advising --web-sdk-dir."""
    with pytest.raises(RegistryUnreachable) as caught:
        await install_web_sdk(tmp_path, registry=UNREACHABLE)
    assert caught.value.name == "registryUnreachable"
    assert f"{UNREACHABLE}/@soulmachines/smwebsdk/-/smwebsdk-{PINNED_VERSION}.tgz" in str(
        caught.value
    )
    assert "--web-sdk-dir" in caught.value.advice
    assert "dpkit web-sdk install" in caught.value.advice
    assert leftovers(tmp_path) == []


async def test_an_http_error_is_named(registry: Registry, sdk_tgz: bytes, tmp_path: Path) -> None:
    """A 404 for the version and a 503 for the tarball: registryHttpError with the status."""
    with pytest.raises(RegistryHttpError, match="HTTP 404"):
        await install_web_sdk(tmp_path, version="98.0.0", registry=registry.url)
    registry.publish(OTHER_VERSION, sdk_tgz)
    registry.failing = 503
    with pytest.raises(RegistryHttpError, match="HTTP 503"):
        await install_web_sdk(tmp_path, version=OTHER_VERSION, registry=registry.url)
    assert leftovers(tmp_path) == []


def test_the_registry_is_the_setting_then_npms_variable_then_npms_default() -> None:
    """npm_registry wins, then npm_config_registry as npm reads it, then registry.npmjs.org."""
    env = {"npm_config_registry": "https://npm.example.com/"}
    assert registry_url("https://mirror.example.com/npm/", env) == "https://mirror.example.com/npm"
    assert registry_url("", env) == "https://npm.example.com"
    assert registry_url("", {"npm_config_registry": ""}) == "https://registry.npmjs.org"
    with pytest.raises(ConfigurationError, match="npm_config_registry"):
        registry_url("", {"npm_config_registry": "ftp://npm.example.com"})
    with pytest.raises(ConfigurationError, match="npm_registry"):
        make_settings(Path("/nonexistent"), npm_registry="not a url")


# --- the server ---


async def fetching_provider(
    server: DpkitServer, registry: str, integrity: str, **options: Any
) -> WebSdkProvider:
    """Make ``server`` fetch its SDK from ``registry`` (no checkout to find), pinned to ours."""
    pin = Pin(PINNED_VERSION, integrity)
    await server.state.web_sdk.close()
    source = resolve_web_sdk(None, server.settings.data_dir, registry, pin=pin, checkouts=())
    assert source.kind == "fetch"
    provider = WebSdkProvider(source, pin=pin, **options)
    server.state.web_sdk = provider
    return provider


async def get_sdk(url: str, name: str = SDK_FILE) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/sdk/{name}") as response:
        return response.status, await response.read()


async def page_config(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/page-config") as answer:
        config: dict[str, Any] = await answer.json()
        return config


async def test_the_first_page_request_fetches_installs_and_serves_the_sdk(
    server: DpkitServer, registry: Registry, sdk_tgz: bytes
) -> None:
    """No copy anywhere: /sdk/smwebsdk.js fetches it once into the data dir and serves it."""
    registry.publish(PINNED_VERSION, sdk_tgz)
    provider = await fetching_provider(server, registry.url, integrity_of(sdk_tgz))
    before = await page_config(server.url)
    assert before["sdkInstalled"] is True  # it will be fetched: the page may expect it
    assert before["sdk"]["state"] == "willFetch"
    assert "will be fetched from " + registry.url in provider.describe()
    assert registry.requests == Counter()
    # The SDK's other files do not start a fetch.
    assert (await get_sdk(server.url, "smwebsdk.min.js"))[0] == 404
    assert registry.requests == Counter()

    status, body = await get_sdk(server.url)
    assert status == 200
    assert body == (BUNDLES / SDK_FILE).read_bytes()
    target = server.settings.data_dir / "web-sdk" / PINNED_VERSION
    assert (target / SDK_FILE).is_file()
    assert leftovers(server.settings.data_dir) == [PINNED_VERSION]
    assert (await get_sdk(server.url, "smwebsdk.min.js"))[0] == 200
    assert (await get_sdk(server.url, MARKER))[0] == 404
    assert (await get_sdk(server.url, "..%2Fkeys.json"))[0] == 404
    after = await page_config(server.url)
    assert (after["sdkInstalled"], after["sdk"]["state"]) == (True, "installed")
    assert registry.requests == Counter({"tarball": 1})


async def test_concurrent_page_requests_wait_on_one_fetch(
    server: DpkitServer, registry: Registry, sdk_tgz: bytes
) -> None:
    """Five pages at once: one download, and each gets the SDK when it is in place."""
    registry.publish(PINNED_VERSION, sdk_tgz)
    registry.gate = asyncio.Event()
    provider = await fetching_provider(server, registry.url, integrity_of(sdk_tgz))
    requests = [asyncio.ensure_future(get_sdk(server.url)) for _ in range(5)]
    await until(lambda: registry.requests["tarball"] == 1)
    assert provider.fetching
    assert (await page_config(server.url))["sdk"]["state"] == "fetching"
    registry.gate.set()
    answers = await asyncio.gather(*requests)
    assert answers == [(200, (BUNDLES / SDK_FILE).read_bytes())] * 5
    assert registry.requests == Counter({"tarball": 1})
    assert provider.fetches == 1


async def test_a_failed_fetch_gives_the_page_the_reason_and_is_retried_later(
    server: DpkitServer, registry: Registry, sdk_tgz: bytes
) -> None:
    """A 503: the page gets dpkitSdkMissing with the reason; retried only after retry_after_s."""
    registry.publish(PINNED_VERSION, sdk_tgz)
    registry.failing = 503
    provider = await fetching_provider(server, registry.url, integrity_of(sdk_tgz))
    status, body = await get_sdk(server.url)
    assert status == 200
    text = body.decode()
    assert text.startswith("window.dpkitSdkMissing = ")
    message = json.loads(text.removeprefix("window.dpkitSdkMissing = ").rstrip().rstrip(";"))
    assert "registryHttpError" in message
    assert "HTTP 503" in message
    assert "--web-sdk-dir" in message
    config = await page_config(server.url)
    assert (config["sdkInstalled"], config["sdk"]["state"]) == (False, "failed")
    # Within retry_after_s (30 s) a page gets the same answer without a new download.
    for _ in range(3):
        assert (await get_sdk(server.url))[1] == body
    assert registry.requests == Counter({"tarball": 1})
    registry.failing = 0
    provider.retry_after_s = 0.0
    status, body = await get_sdk(server.url)
    assert (status, body) == (200, (BUNDLES / SDK_FILE).read_bytes())
    assert registry.requests == Counter({"tarball": 2})


async def test_an_unreachable_registry_reaches_the_page_as_the_missing_script(
    server: DpkitServer,
) -> None:
    """Registry refused: the page's script names the URL and --web-sdk-dir; nothing installed."""
    await fetching_provider(server, UNREACHABLE, PINNED_INTEGRITY)
    status, body = await get_sdk(server.url)
    assert status == 200
    text = body.decode()
    assert text.startswith("window.dpkitSdkMissing = ")
    assert "registryUnreachable" in text
    assert UNREACHABLE in text
    assert "--web-sdk-dir" in text
    assert leftovers(server.settings.data_dir) == []


async def test_shutdown_cancels_a_fetch_under_way(
    registry: Registry, sdk_tgz: bytes, tmp_path: Path
) -> None:
    """A server stopped mid-download: the fetch is cancelled, the waiting page answered."""
    registry.publish(PINNED_VERSION, sdk_tgz)
    registry.gate = asyncio.Event()  # never set: the download hangs
    server = DpkitServer(make_settings(tmp_path / "data"))
    async with server:
        provider = await fetching_provider(server, registry.url, integrity_of(sdk_tgz))
        waiting = asyncio.ensure_future(get_sdk(server.url))
        await until(lambda: registry.requests["tarball"] == 1)
        async with asyncio.timeout(10 * UNIT):
            await server.stop()
    assert not provider.fetching
    async with asyncio.timeout(10 * UNIT):
        status, body = await waiting
    assert status == 200
    assert b"shutting down" in body
    assert leftovers(tmp_path / "data") == []
    registry.gate.set()  # let the registry's handler end, so the registry can stop


def copy_of_bundles(destination: Path, marker: bytes) -> Path:
    destination.mkdir(parents=True)
    (destination / SDK_FILE).write_bytes(marker + (BUNDLES / SDK_FILE).read_bytes())
    return destination


async def test_web_sdk_dir_wins_over_everything(
    start_server: ServerFactory, registry: Registry, sdk_tgz: bytes, tmp_path: Path
) -> None:
    """--web-sdk-dir is served even with an installed copy and a registry; nothing is fetched."""
    registry.publish(PINNED_VERSION, sdk_tgz)
    chosen = copy_of_bundles(tmp_path / "chosen", b"/* the chosen copy */\n")
    data_dir = tmp_path / "data1"  # where start_server keeps the first server's data
    copy_of_bundles(data_dir / "web-sdk" / PINNED_VERSION, b"/* installed */\n")
    server = await start_server(web_sdk_dir=chosen, npm_registry=registry.url)
    assert server.settings.data_dir == data_dir
    assert server.state.web_sdk.describe() == f"from --web-sdk-dir {chosen}"
    status, body = await get_sdk(server.url)
    assert (status, body.split(b"\n")[0]) == (200, b"/* the chosen copy */")
    assert registry.requests == Counter()


def test_resolution_order_and_what_the_banner_says(tmp_path: Path) -> None:
    """web_sdk_dir, then the installed copy, then a checkout, then the registry; each described."""
    data_dir = tmp_path / "data"
    registry = "https://registry.example.com"
    checkout = copy_of_bundles(tmp_path / "checkout" / "bundles", b"")
    (checkout.parent / "package.json").write_text('{"version": "15.8.0"}')
    fetch = resolve_web_sdk(None, data_dir, registry, checkouts=())
    assert (fetch.kind, fetch.directory) == ("fetch", None)
    assert describe_web_sdk(fetch) == (
        f"{PINNED_VERSION} will be fetched from {registry} on first use (into "
        f"{data_dir / 'web-sdk' / PINNED_VERSION}; without registry access use --web-sdk-dir, "
        "see 'dpkit web-sdk install')"
    )
    found = resolve_web_sdk(None, data_dir, registry, checkouts=(tmp_path / "none", checkout))
    assert (found.kind, found.directory, found.version) == ("checkout", checkout, "15.8.0")
    assert describe_web_sdk(found) == f"15.8.0 from {checkout} (installed by npm)"
    installed = copy_of_bundles(data_dir / "web-sdk" / PINNED_VERSION, b"")
    there = resolve_web_sdk(None, data_dir, registry, checkouts=(checkout,))
    assert (there.kind, there.directory) == ("installed", installed)
    assert describe_web_sdk(there) == f"{PINNED_VERSION} from {installed}"
    given = resolve_web_sdk(checkout, data_dir, registry)
    assert (given.kind, given.directory) == ("dir", checkout)
    for bad in (tmp_path / "nonexistent", tmp_path / "checkout"):
        with pytest.raises(WebSdkDirInvalid, match=str(bad)):
            resolve_web_sdk(bad, data_dir, registry)


async def test_a_bad_web_sdk_dir_stops_the_server_naming_it(tmp_path: Path) -> None:
    """dpkit serve --web-sdk-dir with no smwebsdk.js in it: a named error and exit 2, no trace."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (empty, tmp_path / "nonexistent"):
        process = await spawn_dpkit(
            "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--web-sdk-dir", str(bad)
        )
        async with asyncio.timeout(30 * UNIT):
            _out, err = await process.communicate()
        text = err.decode()
        assert process.returncode == 2, text
        assert "webSdkDirInvalid" in text
        assert str(bad) in text
        assert "Traceback" not in text
    assert not (tmp_path / "data" / "keys.json").exists()


def without_registry_variables() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key.lower() != "npm_config_registry" and key != "DPKIT_NPM_REGISTRY"
    }


async def run_install(*args: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await spawn_dpkit("web-sdk", "install", *args, environ=environ)
    async with asyncio.timeout(120 * UNIT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_the_command_is_listed_and_its_help_complete(capsys: pytest.CaptureFixture[str]) -> None:
    """`dpkit --help` lists web-sdk; `dpkit web-sdk --help` describes every option."""
    for argv in (["--help"], ["web-sdk", "--help"]):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert "web-sdk" in text
    for option in ("--version", "--data-dir", "--config", "--registry", "--web-sdk-dir"):
        assert option in " ".join(text.split())


async def test_web_sdk_install_twice(registry: Registry, sdk_tgz: bytes, tmp_path: Path) -> None:
    """``dpkit web-sdk install``: progress, where it went; run again, it says it is there."""
    registry.publish(OTHER_VERSION, sdk_tgz)
    data_dir = tmp_path / "data"
    args = ("--version", OTHER_VERSION, "--data-dir", str(data_dir), "--registry", registry.url)
    code, out, err = await run_install(*args)
    target = data_dir / "web-sdk" / OTHER_VERSION
    assert code == 0, err
    assert f"installed @soulmachines/smwebsdk {OTHER_VERSION} in {target}" in out
    assert progress_line(len(sdk_tgz), len(sdk_tgz)) in err  # "785 KiB / 785 KiB (100 %)"
    assert (target / SDK_FILE).read_bytes() == (BUNDLES / SDK_FILE).read_bytes()
    code, out, err = await run_install(*args)
    assert code == 0, err
    assert f"{OTHER_VERSION} is already installed in {target}" in out
    assert registry.requests == Counter({"metadata": 1, "tarball": 1})


async def test_web_sdk_install_errors_are_named(tmp_path: Path) -> None:
    """Unreachable registry and a bad version: the error's name and advice, no traceback."""
    environ = {**without_registry_variables(), "DPKIT_NPM_REGISTRY": UNREACHABLE}
    code, _out, err = await run_install("--data-dir", str(tmp_path), environ=environ)
    assert code == 1
    assert err.startswith(f"registryUnreachable: cannot reach the npm registry at {UNREACHABLE}")
    assert "--web-sdk-dir" in err
    code, _out, err = await run_install("--version", "../../etc", "--data-dir", str(tmp_path))
    assert code == 2
    assert "badWebSdkVersion" in err
    assert "Traceback" not in err
    assert leftovers(tmp_path) == []


async def test_web_sdk_install_from_the_real_npm_registry(tmp_path: Path) -> None:
    """The pinned version from registry.npmjs.org installs, its integrity the lock file's."""
    code, out, err = await run_install(
        "--data-dir", str(tmp_path), environ=without_registry_variables()
    )
    target = tmp_path / "web-sdk" / PINNED_VERSION
    assert code == 0, err
    assert f"installed @soulmachines/smwebsdk {PINNED_VERSION} in {target}" in out
    marker = json.loads((target / MARKER).read_text())
    assert marker["integrity"] == PINNED_INTEGRITY
    assert marker["from"] == (
        f"https://registry.npmjs.org/@soulmachines/smwebsdk/-/smwebsdk-{PINNED_VERSION}.tgz"
    )
    # npm ci installed the same tarball (same integrity) into node_modules.
    assert (target / SDK_FILE).read_bytes() == (BUNDLES / SDK_FILE).read_bytes()
