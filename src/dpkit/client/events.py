"""Listener lists: the Python side of the Web SDK's ``SmEvent`` (add and remove listeners)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, ParamSpec

P = ParamSpec("P")
logger = logging.getLogger("dpkit.client")


class Event(Generic[P]):
    """Callbacks called in the order they were added; one failing does not stop the others."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._listeners: list[Callable[P, object]] = []

    def add_listener(self, listener: Callable[P, object]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[P, object]) -> None:
        """Remove a listener; removing one that was never added does nothing."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def __len__(self) -> int:
        return len(self._listeners)

    def call(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for listener in list(self._listeners):
            try:
                listener(*args, **kwargs)
            except Exception:
                logger.exception("a %s listener failed", self._name)
