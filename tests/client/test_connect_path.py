"""What a connect costs on the way to Connected: one HTTP connection, and no full collections
walking what the imports built."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest

from dpkit import Scene
from dpkit.client import scene as scene_module
from dpkit.client.reach import same_server
from dpkit.collector import freeze_heap
from dpkit.server import DpkitServer


def scene_for(server: DpkitServer) -> Scene:
    return Scene(server.api_key(), requested_media_devices={}, required_media_devices={})


def count_connections(server: DpkitServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The address of every TCP connection the server admits from now on, in order."""
    admitted: list[str] = []
    admit = server.guard.admit

    def counting(address: str) -> str | None:
        admitted.append(address)
        return admit(address)

    monkeypatch.setattr(server.guard, "admit", counting)
    return admitted


async def test_token_request_and_session_socket_share_one_connection(
    server: DpkitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket goes over the token request's kept-alive connection: one TCP connection."""
    admitted = count_connections(server, monkeypatch)
    scene = scene_for(server)
    session_id = await scene.connect()
    try:
        assert admitted == ["127.0.0.1"]
        record = server.state.store.show(session_id)
        assert record is not None
        assert record.client_kind == "python"  # the socket still names dpkit's client
    finally:
        await scene.disconnect()


async def test_every_connect_of_a_scene_opens_one_connection(
    server: DpkitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connecting again after a disconnect starts afresh: one more connection, and it works."""
    admitted = count_connections(server, monkeypatch)
    scene = scene_for(server)
    for _ in range(2):
        await scene.connect()
        await scene.disconnect()
    assert admitted == ["127.0.0.1", "127.0.0.1"]


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("http://127.0.0.1:8080/api/token", "ws://127.0.0.1:8080/session", True),
        ("https://example.org/api/token", "wss://example.org:443/session", True),
        ("http://example.org/api/token", "wss://example.org/session", False),
        ("http://a.example:8080/api/token", "ws://b.example:8080/session", False),
        ("http://a.example:8080/api/token", "ws://a.example:8081/session", False),
        ("", "ws://a.example/session", False),
    ],
)
def test_same_server_compares_host_port_and_transport(first: str, second: str, same: bool) -> None:
    """ws:// is http:// and wss:// is https:// to the same host and port; anything else differs."""
    assert same_server(first, second) is same


def frozen_after(statement: str) -> int:
    """How many objects are frozen in a fresh interpreter after ``statement``."""
    code = f"import gc\n{statement}\nprint(gc.get_freeze_count())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_importing_the_client_freezes_nothing_of_the_host_application() -> None:
    """The collector's heap is frozen only by dpkit's own processes (``dpkit serve``, ``dpkit
    connect``); a library import must not do it to its host, whose cycles it would keep."""
    assert scene_module.Scene is Scene
    assert frozen_after("import dpkit") == 0
    assert frozen_after("from dpkit import Scene\nimport dpkit.client.scene") == 0
    # An application may, once its own start-up is done.
    assert (
        frozen_after(
            "from dpkit import Scene\nfrom dpkit.collector import freeze_heap\nfreeze_heap()"
        )
        > 10_000
    )


async def test_a_started_server_has_frozen_its_start_up_objects(server: DpkitServer) -> None:
    """After start-up the server's state is in the permanent generation, not walked again."""
    assert gc.is_tracked(server.state)
    # gc.get_objects() lists the three generations the collector walks, not the frozen one.
    assert not any(obj is server.state for obj in gc.get_objects())


def test_freeze_heap_collects_garbage_rather_than_freezing_it() -> None:
    """A reference cycle dropped before the freeze is collected, not kept for ever."""

    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    assert freeze_heap() > 0
    assert gone() is None
