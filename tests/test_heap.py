"""The start-up heap is frozen once per process: full collections then skip it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
import weakref
import jupyter_server.serverapp  # a server's imports: what a real start-up leaves
from jupyter_agentbuild.heap import freeze_startup_heap

class Node:
    pass

assert gc.get_freeze_count() == 0
gc.disable()  # nothing collects the cycle below but the freeze's own collection
node = Node()
node.me = node  # a cycle made during start-up: freed, not frozen
dead = weakref.ref(node)
del node
first = freeze_startup_heap()
assert dead() is None
assert first == gc.get_freeze_count() > 10_000, first
again = freeze_startup_heap()
assert again == 0 and gc.get_freeze_count() == first, (again, gc.get_freeze_count())
print(first)
"""


def test_the_startup_heap_is_frozen_once() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 10_000
