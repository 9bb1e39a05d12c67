"""Keeping the garbage collector's full passes off the connect path.

A process that has imported aiortc, PyAV and NumPy (and, on the server, built its personas) holds
tens of thousands of objects (some 70 000 in a server) that live as long as it does. CPython's
full collection walks every one of them each time it runs, 40 ms and more, when allocations happen
to cross its threshold: often in the middle of a connect, which allocates a great deal (SDP,
the peer connection, DTLS). :func:`freeze_heap` collects once and then moves everything alive
into the collector's permanent generation (:func:`gc.freeze`), which it never walks again: later
collections see only the objects made since, so a full one costs about what a young one does.

The price: a reference cycle among the frozen objects is never freed (objects without cycles
are freed by reference counting as usual). What is frozen is what start-up built to keep.
So only dpkit's own processes freeze (``dpkit serve`` once it has started, ``dpkit connect``
before it connects); importing the client library never does. An application built on
``dpkit.Scene`` may call :func:`freeze_heap` itself, once its own start-up is done.
"""

from __future__ import annotations

import functools
import gc


def freeze_heap() -> int:
    """Collect what is garbage now, then freeze everything left; return how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@functools.cache
def freeze_heap_once() -> int:
    """:func:`freeze_heap` the first time a process calls this; later calls do nothing."""
    return freeze_heap()
