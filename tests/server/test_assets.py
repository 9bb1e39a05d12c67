"""Persona asset bundles: fetched once into a content-addressed cache, verified, never partial."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from dpkit import Scene
from dpkit.errors import AssetsFailed
from dpkit.protocol.messages import DpkitEvent, Frame
from dpkit.server import DpkitServer, PersonaSettings, assets
from dpkit.server.assets import BUILTIN_BUNDLE, MANIFEST, MANIFESTS, AssetCache, write_manifest
from tests.support import ServerFactory, serving


class BundleServer:
    """Serves a bundle folder over HTTP on loopback and counts the requests per file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: dict[str, int] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests[name] = self.requests.get(name, 0) + 1
        path = self.folder / name
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type="application/octet-stream")


@pytest.fixture
async def bundle_server(tmp_path: Path) -> AsyncIterator[BundleServer]:
    folder = tmp_path / "bundle"
    shutil.copytree(BUILTIN_BUNDLE, folder)
    served = BundleServer(folder)
    app = web.Application()
    app.router.add_get("/personas/ava/{name}", served.handle)
    async with serving(app) as base:
        served.url = f"{base}/personas/ava/"
        yield served


def quiet_scene(server: DpkitServer) -> Scene:
    return Scene(server.api_key(), requested_media_devices={}, required_media_devices={})


def cache_files(server: DpkitServer) -> list[str]:
    """The cache's entries but the folder of cached manifests: digests and any leftovers."""
    folder = server.settings.data_dir / "assets"
    return sorted(path.name for path in folder.iterdir() if path.name != MANIFESTS)


def persona(assets: str) -> PersonaSettings:
    return PersonaSettings(video_width=160, video_height=120, assets=assets)


async def test_a_bundle_over_http_is_fetched_once(
    start_server: ServerFactory, bundle_server: BundleServer
) -> None:
    """The first session downloads every file; the second finds them all in the cache."""
    server = await start_server(persona=persona(bundle_server.url))
    progress: list[dict[str, int]] = []
    scene = quiet_scene(server)

    def on_message(frame: Frame) -> None:
        if isinstance(frame, DpkitEvent) and frame.name == "assets":
            progress.append(frame.body)

    scene.on_message.add_listener(on_message)
    await scene.connect()
    await scene.disconnect()
    manifest = json.loads((bundle_server.folder / MANIFEST).read_text())
    digests = sorted(entry["sha256"] for entry in manifest["files"].values())
    assert cache_files(server) == digests
    assert [p["files"] for p in progress] == [1, 2, 3]
    assert progress[-1]["bytes"] == progress[-1]["totalBytes"] > 0
    first = dict(bundle_server.requests)
    assert all(first[name] == 1 for name in manifest["files"])

    again = quiet_scene(server)
    await again.connect()
    await again.disconnect()
    for name in manifest["files"]:
        assert bundle_server.requests[name] == 1, f"{name} was fetched again"
    assert server.state.assets.downloads == 3


async def test_a_corrupt_bundle_fails_the_connect_and_leaves_the_cache_clean(
    start_server: ServerFactory, bundle_server: BundleServer
) -> None:
    """A file that does not match its digest: assetsFailed naming it; no file is cached."""
    corpus = bundle_server.folder / "corpus.json"
    corpus.write_text(corpus.read_text().replace("Ava", "Eve"))  # same size, other bytes
    server = await start_server(persona=persona(bundle_server.url))
    scene = quiet_scene(server)
    with pytest.raises(AssetsFailed) as caught:
        await scene.connect()
    assert caught.value.name == "assetsFailed"
    assert "corpus.json does not match its sha256" in caught.value.message
    assert not any(name.startswith(".part") for name in cache_files(server))
    manifest = json.loads((bundle_server.folder / MANIFEST).read_text())
    assert manifest["files"]["corpus.json"]["sha256"] not in cache_files(server)
    assert server.state.pool.in_use == 0


async def test_an_unreachable_bundle_fails_the_connect(start_server: ServerFactory) -> None:
    """A bundle URL where nothing answers: assetsFailed with the URL in the message."""
    server = await start_server(persona=persona("http://127.0.0.1:9/nothing/"))
    with pytest.raises(AssetsFailed, match=r"127\.0\.0\.1:9"):
        await quiet_scene(server).connect()


async def test_a_bundle_in_a_directory_works_too(server: DpkitServer) -> None:
    """The built-in persona's bundle is a directory, copied into the cache and verified."""
    await quiet_scene(server).connect()
    assert len(cache_files(server)) == 3


def test_the_built_in_manifest_matches_its_files(tmp_path: Path) -> None:
    """Editing a built-in asset without its manifest would break every connect: caught here."""
    copy = tmp_path / "ava"
    shutil.copytree(BUILTIN_BUNDLE, copy)
    written = write_manifest(copy, "Ava", "1")
    assert json.loads((BUILTIN_BUNDLE / MANIFEST).read_text()) == written


async def test_a_directory_manifest_is_read_again_only_once_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged directory manifest is not read again at each connect; a changed one is."""
    folder = tmp_path / "bundle"
    shutil.copytree(BUILTIN_BUNDLE, folder)
    reads: list[str] = []
    read_capped = assets._read_capped

    async def counted(directory: str, name: str, limit: int) -> bytes:
        reads.append(name)
        return await read_capped(directory, name, limit)

    monkeypatch.setattr(assets, "_read_capped", counted)
    cache = AssetCache(tmp_path / "cache")
    first = await cache.fetch(str(folder))
    again = await cache.fetch(str(folder))
    assert (first.version, again.version, reads) == ("1", "1", [MANIFEST])
    write_manifest(folder, "Ava", "2 (a longer version)")
    changed = await cache.fetch(str(folder))
    assert (changed.version, reads) == ("2 (a longer version)", [MANIFEST, MANIFEST])
