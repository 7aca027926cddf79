"""Path containment by string prefix (callers normalise first): shared by the copy and
the reaper, so both draw the sandbox boundary the same way."""

from __future__ import annotations

import os


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
