"""Sandboxes: where a build's steps run (see :mod:`.base` for the Protocol)."""

from .base import (
    OutputSink,
    Sandbox,
    SandboxError,
    SandboxProvider,
    ServiceFailed,
    StepResult,
)
from .lines import LineSplitter
from .local import LocalSandbox
from .local_provider import LocalSandboxProvider

__all__ = [
    "LineSplitter",
    "LocalSandbox",
    "LocalSandboxProvider",
    "OutputSink",
    "Sandbox",
    "SandboxError",
    "SandboxProvider",
    "ServiceFailed",
    "StepResult",
]
