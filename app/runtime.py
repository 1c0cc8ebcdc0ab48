"""How the server process runs Python itself: the garbage collector, tuned for many sockets.

Every open websocket keeps a few hundred small objects alive (uvicorn's protocol, the socket's
session, its subscription), all long-lived. With the collector's default thresholds a reconnect
storm of 10,000 sockets ran a dozen full collections, each walking every object of every socket
already open (0.1-0.5 s each, about a quarter of the storm's CPU time, and more the larger the
storm). So the served process, once started:
- freezes what start-up made (modules, the schema, settings: about 110,000 objects that live as
  long as the process), so no collection walks them again;
- collects the youngest generation every 10,000 allocations instead of 700, so the older
  generations, and the full collections whose cost grows with the open sockets, come about 14
  times less often. A pause of the youngest generation stays around a millisecond.
Cyclic garbage is still collected; it waits a little longer.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Allocations (net of deallocations) between collections of the youngest generation."""
OLDER_THRESHOLDS = (10, 10)
"""Python's defaults: collections of one generation between collections of the next."""


def tune_garbage_collector() -> None:
    """After start-up: freeze what exists now, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
