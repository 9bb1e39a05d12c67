"""The pool of Digital Persons one node runs: a fixed capacity, reserved one per session.

Queueing comes later; today a reservation either succeeds at once or the caller sends
``close {reason: "noScene"}``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dpkit.media.face import FaceRenderer
from dpkit.server.settings import PersonaSettings

logger = logging.getLogger("dpkit.server.pool")


@dataclass
class DigitalPerson:
    """One Digital Person slot; ``session_id`` is set while a session holds it."""

    index: int
    persona: PersonaSettings
    renderer: FaceRenderer
    holder: object | None = field(default=None, repr=False)


class DigitalPersonPool:
    """A fixed number of Digital Persons, handed out and taken back."""

    def __init__(self, capacity: int, persona: PersonaSettings) -> None:
        # One renderer for all: every face is drawn alike, so its frame cache is shared.
        renderer = FaceRenderer(persona.video_width, persona.video_height)
        self._people = [DigitalPerson(i, persona, renderer) for i in range(capacity)]

    @property
    def capacity(self) -> int:
        return len(self._people)

    @property
    def in_use(self) -> int:
        return sum(person.holder is not None for person in self._people)

    def try_acquire(self, holder: object) -> DigitalPerson | None:
        """Reserve a free Digital Person for ``holder``, or None when all are busy."""
        for person in self._people:
            if person.holder is None:
                person.holder = holder
                logger.debug(
                    "digital person %d reserved (%d/%d)", person.index, self.in_use, self.capacity
                )
                return person
        return None

    def release(self, person: DigitalPerson) -> None:
        """Give a Digital Person back; releasing a free one is a no-op."""
        person.holder = None
        logger.debug("digital person %d freed (%d/%d)", person.index, self.in_use, self.capacity)
