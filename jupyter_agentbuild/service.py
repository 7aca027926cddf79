"""BuildService: what the API can ask of builds, with validation, scoping and quotas.

Handlers stay thin by calling exactly one method here. Every method takes the
caller's ``owner``; a build of another owner is indistinguishable from a
missing one (404).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from .entries import utcnow
from .errors import Conflict, NotFound, QuotaExceeded, SpecError, Unavailable
from .preview.manager import Preview, PreviewManager
from .providers import ProviderCatalog
from .runner import Runner
from .spec import MAX_SPEC_BYTES, BuildSpec, parse_spec, spec_summary
from .store.repository import BuildRow, Store
from .vocabulary import LIVE_PREVIEW, TERMINAL, BuildStatus, EntryKind

MAX_PAGE = 10_000
#: The largest BIGINT of PostgreSQL and SQLite: cursors beyond it cannot exist.
MAX_INT = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,20}")
DEFAULT_PAGE = 1000
#: The longest ``q`` (name search) the builds list takes.
MAX_SEARCH_CHARS = 200


@dataclass(frozen=True)
class LogPage:
    entries: list[str]  # encoded entries
    last_seq: int
    done: bool

    def to_json_text(self) -> str:
        """The page as JSON text, without decoding the entries."""
        done = "true" if self.done else "false"
        return f'{{"entries":[{",".join(self.entries)}],"last_seq":{self.last_seq},"done":{done}}}'


class BuildService(LoggingConfigurable):
    """The builds API's one entry point per request; its limits are ``c.BuildService.*``."""

    builds_per_window = Int(
        60, help="Builds one owner may create per rate_window; beyond it POST answers 429."
    ).tag(config=True)
    rate_window = Float(3600.0, help="The rate-limit window, in seconds.").tag(config=True)
    max_page_bytes = Int(
        2 * 1024**2,
        help="""Bytes of entries in one REST log page or WebSocket frame (default 2 MiB):
        a page stops early there ('limit' still caps its entries; one entry always fits).""",
    ).tag(config=True)
    max_spec_bytes = Int(
        MAX_SPEC_BYTES,
        help="""Largest build spec stored with a build (its JSON, in bytes; 413
        spec_too_large beyond). Lists of builds show a summary of each spec.""",
    ).tag(config=True)

    def __init__(
        self,
        store: Store,
        runner: Runner,
        catalog: ProviderCatalog,
        *,
        root_dir: Path,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.runner = runner
        #: The providers, their availability and the admin's allow-list.
        self.catalog = catalog
        #: Workspaces must resolve inside this directory (the server's root).
        self.root_dir = root_dir
        #: Set by the start hook once migrations and reconciliation are done.
        self.ready = asyncio.Event()
        self.startup_error: str | None = None
        #: ``await hook(build_id)`` after a build's records are deleted: removes what
        #: lives outside the database (artifact blobs, a kept preview sandbox).
        self.on_delete: list[Callable[[str], Awaitable[None]]] = []
        #: The previews this server runs (set by the extension; None: no previews).
        self.previews: PreviewManager | None = None

    async def _ready(self) -> None:
        """Requests that arrive while the extension starts wait for it (bounded)."""
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=30)
            except TimeoutError:
                raise Unavailable("the build service is still starting; try again") from None
        if self.startup_error is not None:
            raise Unavailable(f"the build service failed to start: {self.startup_error}")

    async def ready_or_starting(self) -> None:
        """Wait (bounded) for start-up to finish, failed or not: the info endpoint reports
        what was found even when the service could not start."""
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=30)
            except TimeoutError:
                raise Unavailable("the build service is still starting; try again") from None

    async def create(self, owner: str, body: Any) -> BuildRow:
        await self._ready()
        spec = parse_spec(body, max_bytes=self.max_spec_bytes)
        # nothing runs for a provider the admin did not allow or that cannot work here
        provider = self.catalog.choose(
            spec.provider, network=spec.network, preview=spec.preview is not None
        )
        workspace = self._confine_workspace(spec)
        now = utcnow()
        retry_after = await self.store.consume_quota(
            owner, now=now, window=self.rate_window, limit=self.builds_per_window
        )
        if retry_after is not None:
            seconds = max(1, math.ceil(retry_after))
            raise QuotaExceeded(
                f"at most {self.builds_per_window} builds per "
                f"{self.rate_window:g}s; try again in {seconds}s",
                headers={"Retry-After": str(seconds)},
            )
        row = await self.store.insert_build(
            id=secrets.token_hex(8),
            owner=owner,
            name=spec.name or _default_name(spec),
            status=BuildStatus.QUEUED,
            provider=provider,
            spec=spec.to_json(),
            created_at=now,
            **self.runner.server_fields(),
        )
        self.runner.submit(row, spec, workspace)
        return row

    def _confine_workspace(self, spec: BuildSpec) -> Path | None:
        """The workspace must be a directory inside the server root, symlinks resolved."""
        if spec.workspace is None:
            return None
        root = self.root_dir.resolve()
        try:
            target = (root / spec.workspace).resolve()
        except (OSError, RuntimeError):  # a name too long, a symlink loop
            target = None
        if target is None or (target != root and root not in target.parents):
            raise SpecError(
                "workspace resolves outside the server's root directory",
                field="workspace",
                code="invalid_path",
            )
        try:
            is_dir = target.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            raise SpecError(
                f"workspace {spec.workspace!r} is not a directory under the server root",
                field="workspace",
                code="invalid_path",
            )
        return target

    async def get(self, owner: str, build_id: str) -> BuildRow:
        await self._ready()
        row = await self.store.get_build(build_id, owner=owner)
        if row is None:
            raise NotFound(f"no build {build_id!r}")
        return row

    async def list_builds(
        self, owner: str, query: Mapping[str, str]
    ) -> tuple[list[BuildRow], int | None]:
        await self._ready()
        statuses = None
        if query.get("status"):
            statuses = [s for s in query["status"].split(",") if s]
            bad = [s for s in statuses if s not in BuildStatus.__members__.values()]
            if bad:
                raise SpecError(f"unknown status {bad[0]!r}", field="status", code="invalid_query")
        limit = _int_param(query, "limit", default=50, low=1, high=500)
        before = _int_param(query, "before", default=None, low=1, high=None)
        rows = await self.store.list_builds(
            owner,
            statuses=statuses,
            limit=limit + 1,
            before=before,
            search=_search_param(query),
            spec=spec_summary,
        )
        next_cursor = rows[limit - 1].pk if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def preview_target(self, owner: str, build_id: str) -> Preview | None:
        """The live preview of ``owner``'s build for the proxy (from memory: no database
        round trip per proxied request), or None when it has none here; NotFound for a
        build that does not exist or is someone else's."""
        preview = self.previews.live(build_id) if self.previews is not None else None
        if preview is not None:
            if preview.owner != owner:
                raise NotFound(f"no build {build_id!r}")
            return preview
        await self.get(owner, build_id)
        return None

    async def preview_stop(self, owner: str, build_id: str) -> tuple[BuildRow, bool]:
        """Stop the build's preview and destroy its sandbox: ``(build, True)`` once done
        here; ``(build, False)`` when another server runs it and was asked to (through the
        store, as a remote cancel is); 409 when no preview is running."""
        row = await self.get(owner, build_id)
        if self.previews is not None and await self.previews.stop(build_id):
            return await self.get(owner, build_id), True
        state = (row.preview or {}).get("state")
        if state in LIVE_PREVIEW and row.runner_id != self.runner.server_id:
            if self.previews is not None and await self.previews.reap_orphan(row):
                return await self.get(owner, build_id), True  # its server had died here
            await self.store.update_build(build_id, preview_stop_requested=True)
            return row, False
        raise Conflict(f"build {build_id} has no running preview", code="no_preview")

    async def cancel(self, owner: str, build_id: str) -> BuildRow:
        row = await self.get(owner, build_id)
        if row.status in TERMINAL:
            raise Conflict(f"build {build_id} already finished ({row.status})", code="not_running")
        if await self.runner.cancel(build_id):
            await self.runner.wait(build_id)
        else:
            # Running on another server: ask it through the store.
            await self.store.update_build(build_id, cancel_requested=True)
        return await self.get(owner, build_id)

    async def delete(self, owner: str, build_id: str) -> None:
        row = await self.get(owner, build_id)
        if row.status not in TERMINAL and await self.runner.cancel(build_id):
            await self.runner.wait(build_id)
        await self.store.delete_build(build_id)
        for hook in self.on_delete:
            await hook(build_id)

    async def stream_from(self, owner: str, build_id: str, query: Mapping[str, str]) -> int:
        """Check a stream request (the owner's build, a valid ``after``) before the
        WebSocket opens; returns ``after``, the seq the stream starts after."""
        after: int = _int_param(query, "after", default=0, low=0, high=None)
        await self.get(owner, build_id)
        return after

    async def logs(self, owner: str, build_id: str, query: Mapping[str, str]) -> LogPage:
        after = _int_param(query, "after", default=0, low=0, high=None)
        limit = _int_param(query, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
        row = await self.get(owner, build_id)
        pipe = self.runner.build_log(build_id)
        entries = await self._read(build_id, after, limit, self.max_page_bytes)
        if pipe is not None:
            # Once the pipe has ended, its last entry and the terminal row are stored.
            # Readers see what is stored (what a crash cannot take back).
            return LogPage(
                entries, pipe.stored_seq, pipe.ended and after + len(entries) >= pipe.last_seq
            )
        done = row.status in TERMINAL and after + len(entries) >= row.last_seq
        return LogPage(entries, row.last_seq, done)

    async def _read(self, build_id: str, after: int, limit: int, max_bytes: int) -> list[str]:
        """Entries after ``after`` (at most ``limit``, and ``max_bytes`` beyond the first):
        from the live pipe's memory when it still has them, else from the store."""
        pipe = self.runner.build_log(build_id)
        entries = pipe.read(after, limit, max_bytes) if pipe is not None else None
        if entries is None:
            entries = await self.store.read_entries(
                build_id, after=after, limit=limit, max_bytes=max_bytes
            )
        return entries

    async def log_text(self, owner: str, build_id: str) -> AsyncIterator[str]:
        """The whole log as plain text, page by page (``logs?format=text``): what a
        "full log" link opens. Pieces of a split line are joined again."""
        await self.get(owner, build_id)
        after = 0
        while True:
            entries = await self._read(build_id, after, MAX_PAGE, self.max_page_bytes)
            if not entries:
                return
            after += len(entries)
            out: list[str] = []
            for raw in entries:
                entry = json.loads(raw)
                if entry["kind"] == EntryKind.LOG:
                    out.append(entry["text"] if entry.get("continued") else entry["text"] + "\n")
            yield "".join(out)

    async def follow(self, build_id: str, after: int, frame: int) -> AsyncIterator[str | bytes]:
        """Frames (JSON array texts) of the entries after ``after``, in order, until the
        terminal status: the WebSocket stream's source.

        Live builds of this process are served from memory, everything else (and
        readers that fell behind what memory keeps) from the store, which makes a build
        running on another server visible too.
        """
        cursor, poll = after, 0.05
        budget = self.max_page_bytes
        while True:
            # Every frame ends at the next multiple of ``frame`` or sooner (where the byte
            # budget cuts: the same for every reader from the same cursor), from memory or
            # from the store: readers that fall apart meet again at the next boundary and
            # share frames from there on (the pipe caches them).
            want = frame - cursor % frame
            pipe = self.runner.build_log(build_id)
            if pipe is not None:
                shared = pipe.read_frame(cursor, want, budget)
                if shared is None:
                    # Fell behind what memory keeps (and no reader at this cursor has
                    # read the frame yet: read_frame looked): catch up from the store.
                    text, count = await self.store.read_joined(
                        build_id, after=cursor, limit=want, max_bytes=budget
                    )
                    if count:
                        data = f"[{text}]".encode()
                        pipe.cache_frame(cursor, data, count)
                        cursor += count
                        yield data
                        continue
                elif shared[1]:
                    cursor += shared[1]
                    yield shared[0]
                    continue
                if pipe.closed:
                    return
                await pipe.wait(cursor)
                continue
            text, count = await self.store.read_joined(
                build_id, after=cursor, limit=want, max_bytes=budget
            )
            if count:
                cursor += count
                poll = 0.05
                yield f"[{text}]"
                continue
            progress = await self.store.build_progress(build_id)
            if progress is None or (progress[0] in TERMINAL and cursor >= progress[1]):
                return
            if self.runner.build_log(build_id) is None:
                # Another server runs it: its commits wake us (PostgreSQL); poll as a fallback.
                await self.store.notifier.wait(build_id, poll)
                poll = min(poll * 2, 1.0)


def _default_name(spec: BuildSpec) -> str:
    first = spec.steps[0].name or spec.steps[0].run.strip().splitlines()[0]
    return first[:80]


def _search_param(query: Mapping[str, str]) -> str | None:
    """``q``, the builds list's name search: short printable text (a search box's, never a
    payload), or None when absent or empty."""
    raw = query.get("q")
    if not raw:
        return None
    if len(raw) > MAX_SEARCH_CHARS:
        raise SpecError(
            f"q must be at most {MAX_SEARCH_CHARS} characters", field="q", code="invalid_query"
        )
    if not raw.isprintable():
        raise SpecError("q must be printable text", field="q", code="invalid_query")
    return raw


def _int_param(
    query: Mapping[str, str], name: str, *, default: int | None, low: int, high: int | None
) -> Any:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):  # int() would also take "١", "1_0", " 1 "
        raise SpecError(f"{name} must be an integer", field=name, code="invalid_query")
    value = int(raw)
    high = MAX_INT if high is None else high  # what the database's integers hold
    if value < low or value > high:
        upper = f"..{high}"
        raise SpecError(f"{name} must be {low}{upper}", field=name, code="invalid_query")
    return value
