"""One journal that writes to several: the SQLite store, the live feed, metrics, webhooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from dpkit.server.journal import Journal

logger = logging.getLogger("dpkit.server")


class FanOutJournal:
    """Hands every call to each journal in turn; one failing does not stop the others."""

    def __init__(self, journals: Sequence[Journal]) -> None:
        self._journals = list(journals)

    def _each(self, call: Callable[[Journal], None]) -> None:
        for journal in self._journals:
            try:
                call(journal)
            except Exception:
                logger.exception("journal %s failed", type(journal).__name__)

    def opened(
        self, socket_id: str, *, key_id: str, client_kind: str, node: str, persona: str, at: float
    ) -> None:
        self._each(
            lambda journal: journal.opened(
                socket_id, key_id=key_id, client_kind=client_kind, node=node, persona=persona, at=at
            )
        )

    def event(self, socket_id: str, kind: str, detail: str, at: float) -> None:
        self._each(lambda journal: journal.event(socket_id, kind, detail, at))

    def update(self, socket_id: str, **fields: object) -> None:
        self._each(lambda journal: journal.update(socket_id, **fields))

    def ended(self, socket_id: str, ending: str, at: float) -> None:
        self._each(lambda journal: journal.ended(socket_id, ending, at))

    def close(self) -> None:
        self._each(lambda journal: journal.close())
