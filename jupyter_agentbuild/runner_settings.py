"""The runner's settings (``c.Runner.<name>``), apart from what it does with them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable


class RunnerSettings(LoggingConfigurable):
    """The configurable part of :class:`~jupyter_agentbuild.runner.Runner`."""

    default_timeout = Float(3600.0, help="Build timeout in seconds when the spec sets none.").tag(
        config=True
    )
    max_concurrent_builds = Int(
        4, help="Builds one owner may run at once; more wait in 'queued'."
    ).tag(config=True)
    log_flush_interval = Float(
        0.25, help="Longest time (s) a log line waits in memory before it is written."
    ).tag(config=True)
    max_log_buffer = Int(
        100_000, help="Entries held in memory per build before the sandbox reader is paused."
    ).tag(config=True)
    max_log_bytes = Int(
        256 * 1024**2,
        help="""Bytes of log text one build may store (default 256 MiB). Beyond it, output
        is dropped, one 'log_truncated' event says so, and the build goes on. 0: no cap.""",
    ).tag(config=True)
    store_retry_timeout = Float(
        60.0,
        help="How long (s) writes to an unavailable database are retried before a build fails.",
    ).tag(config=True)
    heartbeat_interval = Float(
        5.0, help="Seconds between a server's heartbeats for the builds and previews it runs."
    ).tag(config=True)
    stale_after = Float(
        30.0,
        help="A build whose server has not beaten for this long is marked interrupted; a "
        "preview whose server has not for this long can be stopped from another server.",
    ).tag(config=True)
    shutdown_timeout = Float(
        None,
        allow_none=True,
        help="""Seconds a stopping server waits for its builds to end (flushing their logs)
        before it cancels them. Default None: twice the providers' kill_grace, at least 10.""",
    ).tag(config=True)

    #: Entries in one stored chunk of a build's log.
    log_chunk_size = 1000
    #: Bytes of entries held in memory per build before the sandbox reader is paused.
    max_log_buffer_bytes = 64 * 2**20

    #: The sandbox providers by name (set by the runner).
    providers: Mapping[str, Any]

    @property
    def stop_timeout(self) -> float:
        """``shutdown_timeout``, or when unset, twice the longest ``kill_grace`` of the
        providers (a step gets SIGTERM, then SIGKILL), and at least 10 s."""
        if self.shutdown_timeout is not None:
            return float(self.shutdown_timeout)
        graces = [float(getattr(p, "kill_grace", 5.0)) for p in self.providers.values()]
        return max(2 * max(graces, default=5.0), 10.0)


__all__ = ["RunnerSettings"]
