"""The product's words for states and kinds, defined once.

Every module that compares or stores a build status, a preview state, an entry kind or an
event type uses these enums, never a bare string. They are ``StrEnum``s, so a member *is*
its string: it is stored, encoded to JSON and compared with what a client sent without
conversion. The contract schema's lists of these values (``contract/agentbuild.schema.json``,
which the JupyterLab extension's types are generated from) are written from this module by
``python -m jupyter_agentbuild.contract --write``; a test fails while the file is out of date.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ACTIVE",
    "LIVE_PREVIEW",
    "TERMINAL",
    "BuildStatus",
    "EntryKind",
    "EventType",
    "PreviewState",
    "Stream",
]


class BuildStatus(StrEnum):
    """A build's status, in lifecycle order: three active ones, then the terminal ones."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    #: Its server died and no server could resume it.
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


#: Statuses a build can still leave, in lifecycle order.
ACTIVE: tuple[BuildStatus, ...] = (BuildStatus.QUEUED, BuildStatus.STARTING, BuildStatus.RUNNING)
#: Statuses a build ends with.
TERMINAL: tuple[BuildStatus, ...] = tuple(s for s in BuildStatus if s not in ACTIVE)


class PreviewState(StrEnum):
    """``Build.preview["state"]``: ``starting -> ready -> stopped | failed``."""

    STARTING = "starting"
    READY = "ready"
    STOPPED = "stopped"
    FAILED = "failed"


#: Preview states in which its process may still be serving.
LIVE_PREVIEW: tuple[PreviewState, ...] = (PreviewState.STARTING, PreviewState.READY)


class EntryKind(StrEnum):
    """An Entry's ``kind``: a line of output, or an event."""

    LOG = "log"
    EVENT = "event"


class Stream(StrEnum):
    """Which output a log line came from."""

    STDOUT = "stdout"
    STDERR = "stderr"


class EventType(StrEnum):
    """An event Entry's ``type``."""

    STATUS = "status"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    ARTIFACTS_READY = "artifacts_ready"
    ARTIFACTS_FAILED = "artifacts_failed"
    PREVIEW_STARTING = "preview_starting"
    PREVIEW_READY = "preview_ready"
    PREVIEW_STOPPED = "preview_stopped"
    #: The log reached ``max_log_bytes``; later output is dropped, the build goes on.
    LOG_TRUNCATED = "log_truncated"
