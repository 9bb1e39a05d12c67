"""Three dpkit nodes on one Redis: where sessions go, and what a non-owner node costs a connect.

Run with ``python benchmarks/cluster.py [--n 20] [--resumes 5]``. It starts Debian's
``redis-server`` on a free loopback port and three nodes in this process (so they share its
event loop with the clients: figures are for loopback, on one machine), and prints, asserting
nothing:

* **placement**: 30 sessions asked for one after another, all through node 1's token endpoint
  and kept open, and how many each node got (capacity 10 each);
* **connect through a non-owner**: ``Scene.connect()`` with node 1's token endpoint placing the
  session on node 2 (node 1 is full), against a connect that asks node 2 itself, alternating,
  medians and their ratio (target 1.1);
* **resume through a non-owner**: a persistent session on node 2 whose client was killed,
  resumed through node 3 (which relays the socket to node 2) against one resumed at node 2
  directly: medians and ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.redis_process import start_redis

from dpkit import Scene
from dpkit.client.persistence import MemorySessionStore, StoredSession
from dpkit.server import DpkitServer, PersonaSettings, Settings
from dpkit.server.endpoints import TOKEN_PATH

LOOPBACK = ("127.0.0.1",)
HEARTBEAT_S, EXPIRY_S = 0.2, 1.0


def _settings(directory: Path, redis_url: str, node: str, capacity: int) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        data_dir=directory / node,
        capacity=capacity,
        ice_addresses=LOOPBACK,
        node_id=node,
        redis_url=redis_url,
        cluster_heartbeat_s=HEARTBEAT_S,
        cluster_expiry_s=EXPIRY_S,
        resume_window_s=30.0,
        max_sockets_per_key=200,
        max_sockets_per_address=200,
        rate_per_address=1000.0,
        rate_burst=1000,
        persona=PersonaSettings(video_width=320, video_height=240, greet_at_start=False),
    )


def _scene(key: str, store: MemorySessionStore | None = None) -> Scene:
    return Scene(
        key,
        requested_media_devices={},
        required_media_devices={},
        ice_addresses=LOOPBACK,
        session_store=store,
    )


async def _timed_connect(scene: Scene) -> float:
    started = time.perf_counter()
    await scene.connect()
    return (time.perf_counter() - started) * 1000


async def _placement(nodes: list[DpkitServer]) -> None:
    key = nodes[0].api_key()
    scenes = [_scene(key) for _ in range(30)]
    try:
        for scene in scenes:
            await scene.connect()
        share = Counter({node.settings.node_id: len(node.state.sessions) for node in nodes})
        print(
            "placement of 30 sequential connects through node 1 (capacity 10 each): "
            + ", ".join(f"{name} {count}" for name, count in sorted(share.items()))
        )
    finally:
        await asyncio.gather(*(scene.disconnect() for scene in scenes))


async def _through_non_owner(nodes: list[DpkitServer], n: int) -> None:
    one, two, _three = nodes
    # Node 2 has the most room, so node 1's token endpoint places on it; node 2's on itself.
    record = two.state.keys.page_key()
    assert record is not None
    via_one = one.api_key()
    direct = record.api_key(two.url + TOKEN_PATH)
    timings: dict[str, list[float]] = {"through node 1": [], "direct at node 2": []}
    for index in range(n + 2):
        order = [("through node 1", via_one), ("direct at node 2", direct)]
        for label, key in order if index % 2 == 0 else reversed(order):
            scene = _scene(key)
            elapsed = await _timed_connect(scene)
            placed = scene.session_id in two.state.sessions
            await scene.disconnect()
            if not placed:
                raise RuntimeError(f"{label}: the session was not placed on node 2")
            if index >= 2:
                timings[label].append(elapsed)
    medians = {label: statistics.median(values) for label, values in timings.items()}
    for label, median in medians.items():
        print(f"  connect {label:<18} median {median:6.1f} ms (n={len(timings[label])})")
    ratio = medians["through node 1"] / medians["direct at node 2"]
    verdict = "MET" if ratio <= 1.1 else "NOT MET"
    print(f"  non-owner / direct: {ratio:.2f}x; target {verdict} (<= 1.1x)")


async def _vanished_session(key: str, owner: DpkitServer, state_home: Path) -> str:
    """A persistent session on ``owner`` whose client (``dpkit connect``) was SIGKILLed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dpkit", "connect", key, "--request", "none", "--require", "none",
        "--duration", "60", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "XDG_STATE_HOME": str(state_home)},
    )  # fmt: skip
    try:
        for _ in range(600):
            live = [s for s in owner.state.sessions.values() if s.info.connected_at]
            if live:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the session did not connect")
        session_id = next(iter(owner.state.sessions))
        process.send_signal(signal.SIGKILL)
    finally:
        await process.wait()
    for _ in range(600):
        if session_id in owner.state.detached:
            return session_id
        await asyncio.sleep(0.05)
    raise RuntimeError("the session was not kept for resuming")


async def _resumes(nodes: list[DpkitServer], count: int, directory: Path) -> None:
    _one, two, three = nodes
    record = two.state.keys.add("persistent", persistence=True)
    at_two = record.api_key(two.url + TOKEN_PATH)
    for _ in range(100):
        if three.state.keys.get(record.key_id) is not None:
            break
        await asyncio.sleep(0.05)
    timings: dict[str, list[float]] = {"through node 3": [], "direct at node 2": []}
    for index in range(count * 2):
        label = "through node 3" if index % 2 == 0 else "direct at node 2"
        via = three if index % 2 == 0 else two
        key = record.api_key(via.url + TOKEN_PATH)
        session_id = await _vanished_session(at_two, two, directory / f"state{index}")
        store = MemorySessionStore()
        store.save(key, StoredSession("n2", session_id))
        scene = _scene(key, store)
        elapsed = await _timed_connect(scene)
        assert scene.session_id == session_id
        assert scene.is_resumed_session()
        await scene.disconnect()
        timings[label].append(elapsed)
    medians = {label: statistics.median(values) for label, values in timings.items()}
    for label, median in medians.items():
        print(f"  resume {label:<18} median {median:6.1f} ms (n={len(timings[label])})")
    print(f"  non-owner / direct: {medians['through node 3'] / medians['direct at node 2']:.2f}x")


@contextlib.asynccontextmanager
async def _cluster(
    directory: Path, url: str, capacities: tuple[int, int, int]
) -> AsyncIterator[list[DpkitServer]]:
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                DpkitServer(_settings(directory, url, f"n{index}", capacity))
            )
            for index, capacity in zip((1, 2, 3), capacities, strict=True)
        ]
        await asyncio.sleep(3 * HEARTBEAT_S)  # every node has seen the others
        yield nodes


async def main(n: int, resumes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dpkit-cluster-") as tmp:
        directory = Path(tmp)
        redis, url = await start_redis(directory)
        try:
            print(f"3 nodes on {url}; loopback only, nodes and clients in one process")
            async with _cluster(directory / "a", url, (10, 10, 10)) as nodes:
                await _placement(nodes)
            print("connect latency (capacities 1, 30, 1: node 2 has the room):")
            async with _cluster(directory / "b", url, (1, 30, 1)) as nodes:
                await _through_non_owner(nodes, n)
                if resumes:
                    print("resume latency (a killed client's session on node 2):")
                    await _resumes(nodes, resumes, directory)
        finally:
            redis.terminate()
            await redis.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="timed connects of each kind (20)")
    parser.add_argument("--resumes", type=int, default=5, help="timed resumes of each kind (5)")
    args = parser.parse_args()
    if not 1 <= args.n <= 500 or not 0 <= args.resumes <= 50:
        parser.error("need 1 <= --n <= 500 and 0 <= --resumes <= 50")
    asyncio.run(main(args.n, args.resumes))
