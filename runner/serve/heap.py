"""The garbage collector of a long-running service process, set for a message-driven heap.

CPython's cyclic collector runs a young collection every 700 container allocations and, as long-lived
objects pile up, full collections that walk every object alive: the modules, schemas, config and caches
a service holds for its whole life. A service allocates thousands of short-lived containers per batch
(messages, futures, decoded payloads), nearly all freed by reference counting, so those collections
find little and cost much: on the order saga the default settings spent about half the process's CPU
in the collector. Once a service is up, what is alive is frozen out of collection and young
collections run every YOUNG allocations.
"""

from __future__ import annotations

import gc

YOUNG = 50_000  # container allocations between young collections (CPython default: 700)
OLDER = (20, 100)  # young collections per middle one, middle ones per full one (default: 10, 10)


def settle() -> None:
    """Call once start-up is done: start-up's objects are never walked again; collections are rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, *OLDER)
