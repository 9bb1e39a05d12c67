"""Every refusal counted by the limit that made it, and logged without flooding the log.

A limit exists to be hit by floods, and a log line per refused request would be a flood of its
own (the issue measured 39 MB of "Too many open files" in 45 s). Each refusal is logged at
DEBUG; at WARNING they are summed up, at most once every :data:`SUMMARY_EVERY_S`, naming each
limit and how often it refused. ``/metrics`` exports the counts (``dpkit_refusals_total``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator

logger = logging.getLogger("dpkit.server.limits")

SUMMARY_EVERY_S = 10.0


class Refusals:
    """Counts by limit name (``max_sockets_per_address``, ``rate_token`` ...)."""

    def __init__(
        self, every_s: float = SUMMARY_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every_s = every_s
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._since_summary: Counter[str] = Counter()
        self._last_detail = ""
        self._summarised_at: float | None = None

    def __getitem__(self, limit: str) -> int:
        return self._counts[limit]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._counts))

    def refuse(self, limit: str, detail: str) -> None:
        """Count one refusal by ``limit``; ``detail`` says whom and why (no secrets in it)."""
        self._counts[limit] += 1
        self._since_summary[limit] += 1
        self._last_detail = detail
        logger.debug("refused (%s): %s", limit, detail)
        now = self._clock()
        if self._summarised_at is not None and now - self._summarised_at < self._every_s:
            return
        self._summarised_at = now
        counts = ", ".join(f"{name} {n}" for name, n in sorted(self._since_summary.items()))
        logger.warning("refused by limits: %s; the last: %s", counts, self._last_detail)
        self._since_summary.clear()
