"""The server's start-up heap, moved out of the garbage collector's sight.

A Jupyter server with this extension imports a great deal (jupyter_server, SQLAlchemy,
the E2B SDK and their dependencies): some 300,000 container objects that live as long as
the process. Every full collection walked all of them again, with the event loop
stopped: 130-300 ms each on a 2-core machine. Those pauses were the worst of the live
logs' print-to-client latencies and a tenth of the time ten readers of one build took
(``benchmarks/bench_logs.py``). :func:`gc.freeze` moves them to the permanent
generation, which collections skip; objects made later are collected as before.

Frozen objects are never freed, so this is done once per process, after a collection
(garbage made during start-up is freed first, not frozen).
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> int:
    """Collect, then freeze what is left; the number of objects frozen (0 if this
    process did it already)."""
    global _frozen
    if _frozen:
        return 0
    _frozen = True
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


__all__ = ["freeze_startup_heap"]
