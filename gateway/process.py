"""Process-wide tuning of a serving gateway: how often the cyclic garbage collector runs."""

from __future__ import annotations

import gc

#: Net allocations between young collections (CPython's default is 700). A stop allocates a few
#: thousand short-lived objects (botocore's request and response dicts, protobuf messages), so at
#: 700 the young generation was collected about every stop and the middle one every ten: 7-8 % of
#: the gateway's CPU in the overhead benchmark. At 10,000 it is collected about 14 times less
#: often, for at most some 10,000 more young objects (about a megabyte) alive at any time.
YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Call once the gateway has started: what start-up made (modules, botocore's service
    models, settings) lives as long as the process, so it is frozen out of every later
    collection (a full collection walked it all: about 80 ms each), and young collections run
    less often. The other generations keep CPython's thresholds."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
