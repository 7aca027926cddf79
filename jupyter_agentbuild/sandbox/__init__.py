"""Sandboxes: where a build's steps run (see :mod:`.base` for the Protocol).

Words for ending things, one meaning each (the names below use only these):

- **cancel** a step: stop it at the caller's request; it reports ``cancelled``.
- **stop** a process (a step's, the preview process): SIGTERM to it and everything it
  started, the kill grace, then SIGKILL; returns once they are gone.
- **kill**: SIGKILL at once, no grace (a caller that is itself being cancelled).
- **close** a sandbox: stop everything running in it; its files stay (artifacts are
  collected afterwards).
- **destroy** a sandbox: close it, then delete its files (an E2B VM: kill it).
- **reap** (a provider, from a recorded ``state``): kill what a dead server left running.
- **remove** (a provider, from a recorded ``state``): reap, then delete the files of a
  build that is gone for good.
- **delete**: files only, never processes.
- **detach** an E2B sandbox: leave its VM running for the next server.
- **discard** output: a sink that drops what nobody reads.
"""

from .base import (
    OutputSink,
    PreviewFailed,
    Sandbox,
    SandboxError,
    SandboxProvider,
    StepResult,
)
from .lines import LineSplitter
from .local import LocalSandbox
from .local_provider import LocalSandboxProvider
from .provider_base import ProviderBase

__all__ = [
    "LineSplitter",
    "LocalSandbox",
    "LocalSandboxProvider",
    "OutputSink",
    "PreviewFailed",
    "ProviderBase",
    "Sandbox",
    "SandboxError",
    "SandboxProvider",
    "StepResult",
]
