"""The garbage collector of the served process, tuned for many long-lived sockets.

Every open websocket keeps a few hundred small objects alive (uvicorn's protocol, the socket's
session, its subscription), all long-lived. With the collector's default thresholds a reconnect
storm runs many full collections, each walking every object of every socket already open, so
their cost grows with the storm (docs/KERNEL.md has their share of a storm's CPU). So the served
process, once started (`tune_garbage_collector`):
- freezes what start-up made (modules, the schema, settings: objects that live as long as the
  process), so no collection walks them again (`gc.freeze`, every Python);
- collects the youngest generation every `YOUNG_THRESHOLD` allocations instead of the
  interpreter's default (700 before 3.13, 2,000 since), and spaces out the older generations
  (`OLDER_THRESHOLDS`), so the full collections, whose cost grows with the open sockets, come far
  less often. A collection of the youngest generation stays short: it walks only what was
  allocated since the last one.
Cyclic garbage is still collected, but by these thresholds alone the old generation's waits long:
a closed websocket's objects are cycles (uvicorn's protocol and websockets' parser, the session
and its subscriptions), and those that lived through a middle collection are old when they die.
A full collection comes only every 100 middle ones, hours apart under a steady load (the soak's:
docs/KERNEL.md), and until it comes each worker keeps every such closed socket, a steady climb
that looks like a leak. So with the generational collector `OldGarbage` also runs a full
collection when none has run for `FULL_COLLECTION_SECONDS`: the garbage is bounded by what a
few minutes make, and a storm still sees at most one.

Which thresholds apply depends on the interpreter's collector (`collector_of`), on every Python
that `requires-python` allows:
- CPython 3.11-3.13, 3.14.5 and later 3.14 releases, 3.15: the generational collector (three
  generations; 3.14.5 and 3.15 went back to 3.13's collector): all three thresholds are ours.
- CPython 3.14.0-3.14.4: the incremental collector (two generations; the old one is collected in
  increments with each young collection, sized by the second threshold; the third is ignored):
  no full collection to space out, so only the young threshold is ours.
- A free-threaded build: one generation, each collection walks every object; only the first
  threshold applies, and it is ours.
- A later CPython (3.16+) or another implementation: thresholds unknown here, so the
  interpreter's own are kept (the tuning is knowingly off; freezing still applies).
"""

from __future__ import annotations

import asyncio
import enum
import gc
import sys
import sysconfig

YOUNG_THRESHOLD = 10_000
"""Allocations (net of deallocations) between collections of the youngest generation."""
OLDER_THRESHOLDS = (10, 100)
"""Collections of one generation between collections of the next: Python's 10 for the middle
generation; 100 middle ones (10 million allocations) between full collections, not 10. A full
collection walks every object of every open socket, with the process stopped for all of it, and
with 10 one would come in the middle of each reconnect storm; Python's own rule still waits for
the old generation to grow by a quarter as well."""


class Collector(enum.Enum):
    """Which collector an interpreter runs, as far as its thresholds go."""

    GENERATIONAL = "generational"
    """Three generations, each with its threshold (CPython 3.11-3.13, 3.14.5+, 3.15)."""
    YOUNG_ONLY = "young only"
    """Only the first threshold is ours: CPython 3.14.0-3.14.4's incremental collector, or a
    free-threaded build's single generation."""
    UNKNOWN = "unknown"
    """Not known here (a later CPython, another implementation): thresholds left alone."""


def collector_of(
    version: tuple[int, ...], *, implementation: str = "cpython", free_threaded: bool = False
) -> Collector:
    """The collector of an interpreter of `version` (`sys.version_info`'s first three)."""
    if implementation != "cpython" or tuple(version[:2]) > (3, 15):
        return Collector.UNKNOWN
    if free_threaded or (3, 14, 0) <= tuple(version[:3]) < (3, 14, 5):
        return Collector.YOUNG_ONLY
    return Collector.GENERATIONAL


COLLECTOR = collector_of(
    tuple(sys.version_info[:3]),
    implementation=sys.implementation.name,
    free_threaded=bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
)
"""This interpreter's collector."""


def tuned_thresholds(
    defaults: tuple[int, int, int], collector: Collector = COLLECTOR
) -> tuple[int, int, int]:
    """The collector thresholds the served process runs with, from the interpreter's defaults."""
    if collector is Collector.GENERATIONAL:
        return (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    if collector is Collector.YOUNG_ONLY:
        return (YOUNG_THRESHOLD, defaults[1], defaults[2])
    return defaults


def tune_garbage_collector() -> None:
    """After start-up: freeze what exists now, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*tuned_thresholds(gc.get_threshold()))


FULL_COLLECTION_SECONDS = 300.0
"""The longest the served process goes without a full collection (`OldGarbage`)."""


def full_collections() -> int:
    """How many full collections this process has run (the collector's, and ours)."""
    return int(gc.get_stats()[2]["collections"])


class OldGarbage:
    """A full collection whenever a period has passed without one (`check`, each period); for
    the generational collector (`Collector.GENERATIONAL`), whose third generation it counts."""

    def __init__(self) -> None:
        self.seen = full_collections()

    def check(self) -> bool:
        """Collect everything if no full collection ran since the last check; whether it did."""
        collect = full_collections() == self.seen
        if collect:
            gc.collect()
        self.seen = full_collections()
        return collect

    async def run(self, period: float = FULL_COLLECTION_SECONDS) -> None:
        while True:
            await asyncio.sleep(period)
            self.check()
