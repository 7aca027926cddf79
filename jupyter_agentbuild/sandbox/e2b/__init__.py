"""E2B cloud sandboxes (``e2b-code-interpreter``'s SDK), behind the same Protocol as local ones.

One E2B sandbox (a micro-VM) per build: :mod:`.provider` creates, kills and re-attaches
to them through E2B's API, :mod:`.sandbox` runs steps and the preview process in one through envd,
:mod:`.run` follows one command there, :mod:`.files` walks and reads its workspace, and
:mod:`.scripts` is the shell that runs inside the VM around each step.
"""

from .common import WORK_DIR
from .provider import E2BSandboxProvider
from .sandbox import E2BSandbox
from .scripts import STEP_MARKER

__all__ = ["STEP_MARKER", "WORK_DIR", "E2BSandbox", "E2BSandboxProvider"]
