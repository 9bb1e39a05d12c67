"""The cluster's queue under load: 1,000 clients waiting at once on three nodes.

Run with ``python benchmarks/cluster_queue.py [--waiters 1000] [--rounds 60]``. (The issue
calls it ``benchmarks/queue.py``; a script of that name would shadow the standard library's
``queue`` module for every script in this directory, which Python puts first on ``sys.path``.)

It starts Debian's ``redis-server`` on a free loopback port and three nodes of capacity 1, each
in a process of its own; this process holds every client: three that hold the Digital Persons
and ``--waiters`` that wait. They are light protocol-level sockets (the token request, the
session socket, its frames; no WebRTC): a holder that got ``established`` keeps its Digital
Person until it closes.

Each round, one holder closes its socket (a Digital Person frees), and the benchmark times, from
that close:

* every waiting client's new position (the first ``dpkit/queue`` frame with the shorter queue):
  p50 and p99 over all clients and rounds (target p99 at most 100 ms);
* the next client's ``established``: p50, separately for a next client waiting on the node that
  freed (same node; target 5 ms) and on another node (its socket handed over; target 20 ms).

Rounds alternate between freeing the node the head waits on and freeing another, a quarter of a
second apart. Nothing is
asserted; figures are for loopback, one machine, clients and nodes sharing its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from queue import Empty
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.redis_process import start_redis

from dpkit.collector import freeze_heap
from dpkit.server import DpkitServer, PersonaSettings, Settings

HEARTBEAT_S, EXPIRY_S = 0.5, 2.0
START_TIMEOUT_S = 60.0
WAIT_S = 30.0
SETTLE_S = 0.25


def _settings(directory: Path, redis_url: str, node: str, waiters: int) -> Settings:
    room = 2 * waiters + 100
    return Settings(
        host="127.0.0.1",
        port=0,
        data_dir=directory / node,
        capacity=1,
        ice_addresses=("127.0.0.1",),
        node_id=node,
        redis_url=redis_url,
        cluster_heartbeat_s=HEARTBEAT_S,
        cluster_expiry_s=EXPIRY_S,
        queue_max_length=waiters,
        queue_max_wait_s=3600.0,
        offer_timeout_s=3600.0,
        max_sockets_per_key=room,
        max_sockets_per_address=room,
        max_connections=room,
        max_connections_per_address=room,
        rate_per_address=10_000.0,
        rate_burst=room,
        persona=PersonaSettings(video_width=160, video_height=120, greet_at_start=False),
    )


# --- the node processes ------------------------------------------------------------------------


def _node_main(directory: str, redis_url: str, node: str, waiters: int, ready: Any,
               control: Connection) -> None:  # fmt: skip
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_node_async(Path(directory), redis_url, node, waiters, ready, control))


async def _node_async(
    directory: Path, redis_url: str, node: str, waiters: int, ready: Any, control: Connection
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with DpkitServer(_settings(directory, redis_url, node, waiters)) as server:
        loop.add_reader(control.fileno(), stop.set)  # a message or EOF: stop
        ready.put((server.url, server.api_key()))
        await stop.wait()
        loop.remove_reader(control.fileno())


@dataclass
class NodeProcess:
    name: str
    process: multiprocessing.process.BaseProcess
    control: Connection
    url: str
    api_key: str

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.control.send("stop")
        self.process.join(15)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.control.close()


def _start_node(directory: Path, redis_url: str, node: str, waiters: int) -> NodeProcess:
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_node_main,
        args=(str(directory), redis_url, node, waiters, ready, theirs),
        name=f"dpkit-node-{node}",
    )
    process.start()
    theirs.close()
    try:
        url, api_key = ready.get(timeout=START_TIMEOUT_S)
    except Empty:
        process.terminate()
        raise RuntimeError(f"node {node} did not start in time") from None
    finally:
        ready.close()
    return NodeProcess(node, process, ours, url, api_key)


# --- the light clients -------------------------------------------------------------------------


@dataclass(eq=False)
class Client:
    """One protocol-level session socket and what it heard, timed."""

    index: int
    waits_on: str = ""
    #: The node holding its Digital Person, once it has one.
    served_by: str = ""
    ws: aiohttp.ClientWebSocketResponse | None = None
    established_at: float | None = None
    #: (arrival, position, size) of every queue frame.
    positions: list[tuple[float, int, int]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    @property
    def last(self) -> tuple[float, int, int] | None:
        return self.positions[-1] if self.positions else None

    async def read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            now = time.perf_counter()
            frame = json.loads(message.data)
            name = frame.get("name")
            if name == "queue":
                body = frame["body"]
                self.positions.append((now, int(body["position"]), int(body["size"])))
            elif name == "established":
                self.established_at = now
            elif name == "close":
                break
            self.changed.set()


NODE_OF_URL: dict[str, str] = {}


async def _open(http: aiohttp.ClientSession, key: str, token_url: str, client: Client) -> None:
    async with http.get(token_url, headers={"key": key}) as reply:
        if reply.status != 200:
            raise RuntimeError(f"token request failed: {reply.status} {await reply.text()}")
        token = await reply.json()
    base = token["url"].split("/session")[0]
    client.waits_on = NODE_OF_URL[base]
    client.ws = await http.ws_connect(
        token["url"], params={"access_token": token["jwt"]}, autoclose=True, max_msg_size=0
    )
    client.reader = asyncio.ensure_future(client.read())


async def _until(check: Any, within: float = WAIT_S) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - many clients' frames, polled
            await asyncio.sleep(0.002)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(waiters: int, rounds: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * waiters + 512)), hard))
    with tempfile.TemporaryDirectory(prefix="dpkit-queue-") as tmp:
        directory = Path(tmp)
        redis, redis_url = await start_redis(directory)
        nodes: list[NodeProcess] = []
        try:
            for name in ("n1", "n2", "n3"):
                nodes.append(
                    await asyncio.to_thread(_start_node, directory, redis_url, name, waiters)
                )
            for node in nodes:
                NODE_OF_URL[node.url.replace("http://", "ws://")] = node.name
            await asyncio.sleep(3 * HEARTBEAT_S)  # every node sees every node
            await _measure(nodes, waiters, rounds)
        finally:
            for node in nodes:
                await asyncio.to_thread(node.stop)
            redis.terminate()
            await redis.wait()


async def _measure(nodes: list[NodeProcess], waiters: int, rounds: int) -> None:
    one = nodes[0]
    token_url = one.url + "/api/token"
    connector = aiohttp.TCPConnector(limit=0)
    clients: list[Client] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            holders = [Client(i) for i in range(3)]
            for holder in holders:
                await _open(http, one.api_key, token_url, holder)
                await _until(lambda h=holder: h.established_at is not None)
                holder.served_by = holder.waits_on
            clients += holders
            print(f"holders on {sorted(h.served_by for h in holders)}", flush=True)
            waiting = [Client(3 + i) for i in range(waiters)]
            clients += waiting
            started = time.perf_counter()
            semaphore = asyncio.Semaphore(32)

            async def join(client: Client) -> None:
                async with semaphore:
                    await _open(http, one.api_key, token_url, client)

            for index in range(0, waiters, 100):
                await asyncio.gather(*(join(c) for c in waiting[index : index + 100]))
                print(f"  {min(index + 100, waiters)} waiting", flush=True)
            await _until(
                lambda: all(c.last is not None and c.last[2] == waiters for c in waiting), 60
            )
            share = {n.name: sum(c.waits_on == n.name for c in waiting) for n in nodes}
            print(
                f"{waiters} waiting after {time.perf_counter() - started:.1f} s: "
                + ", ".join(f"{name} {count}" for name, count in share.items()),
                flush=True,
            )
            # This process's own collections must not be what is measured: what the clients
            # built lives until the end, out of the collector's full passes.
            freeze_heap()
            await _rounds(holders, waiting, rounds)
        finally:
            for client in clients:
                if client.ws is not None:
                    await client.ws.close()
                if client.reader is not None:
                    client.reader.cancel()
                    with contextlib.suppress(BaseException):
                        await client.reader


async def _rounds(holders: list[Client], waiting: list[Client], rounds: int) -> None:
    position_ms: list[float] = []
    established_ms: dict[str, list[float]] = {"same node": [], "across nodes": []}
    for round_index in range(rounds):
        # The nodes finish the last round's bookkeeping (journal rows, cluster events) first:
        # a Digital Person freeing every quarter second is churn enough.
        await asyncio.sleep(SETTLE_S)
        head = min(waiting, key=lambda c: c.last[1] if c.last else 10**9)
        same = [h for h in holders if h.served_by == head.waits_on]
        other = [h for h in holders if h.served_by != head.waits_on]
        want_same = round_index % 2 == 0
        freeing = (same if want_same and same else other or same)[0]
        size = len(waiting) - 1
        freed_at = time.perf_counter()
        assert freeing.ws is not None
        await freeing.ws.close()
        holders.remove(freeing)
        await _until(lambda: any(c.established_at is not None for c in waiting))
        served = next(c for c in waiting if c.established_at is not None)
        waiting.remove(served)
        where = "same node" if served.waits_on == freeing.served_by else "across nodes"
        assert served.established_at is not None
        established_ms[where].append((served.established_at - freed_at) * 1000)
        served.served_by = freeing.served_by
        holders.append(served)
        await _until(lambda n=size: all(c.last is not None and c.last[2] == n for c in waiting))
        for client in waiting:
            arrival = next(t for t, _position, s in client.positions if s == size)
            position_ms.append((arrival - freed_at) * 1000)
        print(
            f"  round {round_index + 1}: {where}, established "
            f"{(served.established_at - freed_at) * 1000:.1f} ms, last position "
            f"{max(position_ms[-len(waiting) :]):.1f} ms",
            flush=True,
        )
    print()
    print(f"freeing -> every waiting client's new position (n={len(position_ms)}):")
    print(
        f"  p50 {_percentile(position_ms, 0.5):6.1f} ms   p99 {_percentile(position_ms, 0.99):6.1f}"
        f" ms   max {max(position_ms):6.1f} ms   (target p99 <= 100 ms: ratio "
        f"{_percentile(position_ms, 0.99) / 100:.2f})"
    )
    targets = {"same node": 5.0, "across nodes": 20.0}
    print("freeing -> the next client's established:")
    for where, values in established_ms.items():
        if not values:
            print(f"  {where:<13} no samples")
            continue
        median = statistics.median(values)
        print(
            f"  {where:<13} p50 {median:6.1f} ms   max {max(values):6.1f} ms   (n={len(values)};"
            f" target <= {targets[where]:g} ms: ratio {median / targets[where]:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=1000, help="clients waiting at once")
    parser.add_argument("--rounds", type=int, default=60, help="Digital Persons freed, one by one")
    args = parser.parse_args()
    if not 1 <= args.waiters <= 5000 or not 1 <= args.rounds < args.waiters:
        parser.error("--waiters must be 1-5000 and --rounds 1 to fewer than --waiters")
    try:
        asyncio.run(run(args.waiters, args.rounds))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
