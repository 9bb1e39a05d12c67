"""The pool of Digital Persons one node runs, and the fair queue in front of it.

A fixed number of Digital Persons, each held by one session at a time. When all are busy a new
session waits in the queue; a Digital Person that frees up goes straight to the head of it. The
queue is first-come, first-served among the clients of one API key; between keys it is fair: the
next Digital Person goes to the waiter whose key holds the fewest, so one key's clients (or one
key's idle sockets) cannot keep another key's out. The queue is bounded in length and in wait:
past either, the caller is refused (and sends ``close {reason: "noScene"}``). Every waiter hears
its position, the queue's length and an estimated wait whenever they change.

In a cluster the node's waiters stand in the cluster's one queue too (a :class:`SharedQueue`,
:mod:`dpkit.server.cluster.queue`): there arrival order across every node decides, positions
are cluster-wide, and a Digital Person that frees up goes to the head of that queue, on this
node or another (a :class:`RemoteGrant`, for which the waiter's socket is handed over). While
the shared queue is not reachable the node queues alone, as above.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dpkit.server.assets import Bundle
from dpkit.server.persona_media.broadcast import PersonaBroadcast
from dpkit.server.persona_media.encoding import EncodingFailed, ProcessEncoding
from dpkit.server.persona_media.face import FaceRenderer
from dpkit.server.settings import PersonaSettings

logger = logging.getLogger("dpkit.server.pool")

#: The estimate of a session's length before any has ended (seconds).
INITIAL_SESSION_S = 60.0


@dataclass
class DigitalPerson:
    """One Digital Person slot; ``holder`` is set while a session holds it."""

    index: int
    persona: PersonaSettings
    renderer: FaceRenderer
    #: The look's shared timeline: idle frames and room tone encoded once for every session.
    broadcast: PersonaBroadcast = field(repr=False)
    holder: object | None = field(default=None, repr=False)
    #: The API key of the session holding it (the queue is fair between keys).
    key: str = ""
    #: The persona's verified asset bundle, once a session has loaded it.
    bundle: Bundle | None = field(default=None, repr=False)


@dataclass(frozen=True)
class QueuePosition:
    """Where a waiter stands: 1 is next in line."""

    position: int
    size: int
    eta_ms: int


class QueueRefused(Exception):
    """The queue is full, or the wait ran past its limit; the message says which."""


@dataclass(frozen=True)
class RemoteGrant:
    """A Digital Person of node ``node`` (at ``url``) reserved as ``grant`` for this waiter:
    its socket is to be handed over there."""

    node: str
    url: str
    grant: str


#: What a waiter is given: a Digital Person here, or one on another node.
Grant = DigitalPerson | RemoteGrant


class SharedQueue(Protocol):
    """The cluster's queue that this node's waiters stand in as well."""

    @property
    def active(self) -> bool:
        """Whether it can be used now (else the node queues alone)."""
        ...

    def joined(self, waiter_id: str) -> None: ...

    def left(self, waiter_id: str) -> None: ...

    def declined(self, grant: RemoteGrant) -> None:
        """A remote grant that its waiter will not take (it left meanwhile)."""
        ...

    def offer(self, person: DigitalPerson) -> None:
        """``person`` is free: hand it to the head of the cluster's queue, or back with
        :meth:`DigitalPersonPool.free_here` if nobody waits."""
        ...


#: The holder of a Digital Person offered to the cluster's queue and not taken yet.
OFFERED = "offered to the cluster's queue"


@dataclass(eq=False)
class _Waiter:
    holder: object
    key: str
    on_position: Callable[[QueuePosition], None]
    granted: asyncio.Future[Grant]
    last: QueuePosition | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(8))


class DigitalPersonPool:
    """A fixed number of Digital Persons, handed out in arrival order."""

    def __init__(
        self,
        capacity: int,
        persona: PersonaSettings,
        *,
        max_queue: int = 16,
        max_wait_s: float = 120.0,
    ) -> None:
        # One renderer for all: every face is drawn alike, so its frame cache is shared, and
        # one broadcast, so the idle face and the room tone are encoded once for all.
        renderer = FaceRenderer(persona.video_width, persona.video_height)
        encoding = ProcessEncoding(persona.video_width, persona.video_height, persona.video_fps)
        self.broadcast = PersonaBroadcast(renderer, persona.video_fps, encoding)
        self._people = [
            DigitalPerson(i, persona, renderer, self.broadcast) for i in range(capacity)
        ]
        self._waiters: deque[_Waiter] = deque()
        #: The cluster's queue, on a cluster node (set once, at start-up).
        self.shared: SharedQueue | None = None
        #: Called when a Digital Person is taken or freed, or the queue changes (a cluster node
        #: then writes its record at once).
        self.on_change: Callable[[], None] | None = None
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self._mean_session_s = INITIAL_SESSION_S

    async def warm(self) -> None:
        """Start the encoding worker now rather than with the first session; a worker that
        cannot start is logged, and the first session tries again."""
        try:
            await self.broadcast.warm()
        except EncodingFailed as exc:
            logger.warning("%s; the first session will try again", exc)

    async def close(self) -> None:
        """Stop the shared media timeline and its encoding worker. Idempotent."""
        await self.broadcast.close()

    @property
    def capacity(self) -> int:
        return len(self._people)

    @property
    def in_use(self) -> int:
        return sum(person.holder is not None for person in self._people)

    @property
    def queue_length(self) -> int:
        return len(self._waiters)

    def held_by(self, key: str) -> int:
        """How many Digital Persons the sessions of ``key`` hold."""
        return sum(person.holder is not None and person.key == key for person in self._people)

    def try_acquire(self, holder: object, key: str = "") -> DigitalPerson | None:
        """Reserve a free Digital Person for ``holder`` at once, or None (nobody queues)."""
        if self._waiters:
            return None
        for person in self._people:
            if person.holder is None:
                person.holder, person.key = holder, key
                logger.debug("person %d reserved (%d/%d)", person.index, self.in_use, self.capacity)
                self._changed()
                return person
        return None

    async def acquire(
        self, holder: object, on_position: Callable[[QueuePosition], None], key: str = ""
    ) -> Grant:
        """A Digital Person for ``holder``, queueing fairly if all are busy (in a cluster,
        possibly one on another node).

        Raises :class:`QueueRefused` when the queue is full or the wait passes ``max_wait_s``.
        Cancelling the call leaves no trace in the queue.
        """
        person = self.try_acquire(holder, key)
        if person is not None:
            return person
        if len(self._waiters) >= self.max_queue:
            raise QueueRefused(f"the queue is full ({self.max_queue} waiting)")
        loop = asyncio.get_running_loop()
        waiter = _Waiter(holder, key, on_position, loop.create_future())
        self._waiters.append(waiter)
        if self.shared is not None:
            self.shared.joined(waiter.id)
        self._announce()
        try:
            async with asyncio.timeout(self.max_wait_s):
                return await waiter.granted
        except TimeoutError:
            self._leave(waiter)
            raise QueueRefused(f"no Digital Person within {self.max_wait_s:g} s") from None
        except BaseException:
            self._leave(waiter)
            raise

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter gives up: out of the queue, and a person handed to it in that instant, on."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            if self.shared is not None:
                self.shared.left(waiter.id)
            self._announce()
        elif waiter.granted.done() and not waiter.granted.cancelled():
            self.give_back(waiter.granted.result())
        if not waiter.granted.done():
            waiter.granted.cancel()

    def give_back(self, outcome: Grant) -> None:
        """A grant its waiter will not use: a person here is released, a remote one declined."""
        if isinstance(outcome, RemoteGrant):
            if self.shared is not None:
                self.shared.declined(outcome)
        else:
            self.release(outcome)

    def grant(self, waiter_id: str, outcome: Grant) -> bool:
        """Give ``outcome`` to this node's waiter ``waiter_id``, the cluster queue's head;
        False if it is not waiting here (any more)."""
        waiter = next((w for w in self._waiters if w.id == waiter_id), None)
        if waiter is None or waiter.granted.done():
            return False
        self._waiters.remove(waiter)
        if isinstance(outcome, DigitalPerson):
            outcome.holder, outcome.key = waiter.holder, waiter.key
        waiter.granted.set_result(outcome)
        self._changed()
        return True

    def waiting_ids(self) -> list[str]:
        """This node's waiters, in arrival order."""
        return [waiter.id for waiter in self._waiters]

    def set_positions(self, positions: dict[str, int], size: int, capacity: int) -> None:
        """Tell this node's waiters where they stand in the cluster's queue of ``size``, served
        by ``capacity`` Digital Persons in all."""
        for waiter in self._waiters:
            position = positions.get(waiter.id)
            if position is None:
                continue  # not in the shared queue yet
            eta_s = position * self._mean_session_s / max(capacity, 1)
            update = QueuePosition(position, size, int(eta_s * 1000))
            if update != waiter.last:
                waiter.last = update
                waiter.on_position(update)

    def release(self, person: DigitalPerson, session_s: float | None = None) -> None:
        """Give a Digital Person back: to the head of the queue (the cluster's, in a cluster),
        or free. Idempotent."""
        if session_s is not None:
            # A slow-moving average keeps the wait estimate steady.
            self._mean_session_s = 0.8 * self._mean_session_s + 0.2 * session_s
        if person.holder is None or person.holder is OFFERED:
            return  # free already, or on its way to the next in turn
        self.hand_on(person)

    def hand_on(self, person: DigitalPerson) -> None:
        """``person`` to the next in turn: the cluster queue's head (offered to it), else the
        head of this node's queue, else free. For a person no session holds any more."""
        if self.shared is not None and self.shared.active:
            person.holder, person.key = OFFERED, ""
            self.shared.offer(person)
            return
        self.free_here(person)

    def free_here(self, person: DigitalPerson) -> None:
        """``person`` to the head of this node's own queue, or free."""
        person.holder, person.key = None, ""
        for head in self._in_turn():
            self._waiters.remove(head)
            if head.granted.done():
                continue
            person.holder, person.key = head.holder, head.key
            head.granted.set_result(person)
            if self.shared is not None:
                self.shared.left(head.id)  # served here, while the shared queue was away
            logger.debug("person %d handed to the head of the queue", person.index)
            self._announce()
            return
        logger.debug("person %d freed (%d/%d)", person.index, self.in_use, self.capacity)
        self._changed()

    def _in_turn(self) -> list[_Waiter]:
        """The waiters in the order they will be served: fewest held by their key, then first
        come. ``sorted`` is stable, so within a key (and with one key) it is arrival order."""
        held: dict[str, int] = {}
        for waiter in self._waiters:
            if waiter.key not in held:
                held[waiter.key] = self.held_by(waiter.key)
        return sorted(self._waiters, key=lambda waiter: held[waiter.key])

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _announce(self) -> None:
        self._changed()
        if self.shared is not None and self.shared.active:
            return  # positions are the cluster's: set_positions
        order = self._in_turn()
        size = len(order)
        for index, waiter in enumerate(order):
            position = index + 1
            eta_s = position * self._mean_session_s / self.capacity
            update = QueuePosition(position, size, int(eta_s * 1000))
            if update != waiter.last:
                waiter.last = update
                waiter.on_position(update)
