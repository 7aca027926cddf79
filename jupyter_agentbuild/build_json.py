"""The contract's Build object (``$defs/Build`` in the contract schema), made from a store row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .entries import iso
from .store.repository import BuildRow
from .urls import preview_path
from .vocabulary import LIVE_PREVIEW


def build_json(
    row: BuildRow,
    *,
    base_url: str = "/",
    preview_origin: Callable[[str], str | None] | None = None,
    spec_complete: bool = True,
) -> dict[str, Any]:
    """Every field of the contract, ``null`` until it becomes true.

    ``preview.url`` is what a browser opens: the preview's own origin, made from its
    capability label by ``preview_origin`` (which knows how the request reached this
    server), or the path proxy's URL when there is no usable origin; null once the
    preview has stopped (its URL died with it). ``preview.path_url`` is the path proxy,
    for token clients. The label itself is never a field of its own. ``spec_complete``
    is false where ``spec`` is the list's summary (:func:`..spec.spec_summary`).
    """
    preview = row.preview
    if preview is not None:
        preview = dict(preview)
        label = preview.pop("label", None)
        path_url = preview_path(base_url, row.id)
        preview["path_url"] = path_url
        if preview.get("state") in LIVE_PREVIEW:
            own = preview_origin(label) if preview_origin is not None and label else None
            preview["url"] = own or path_url
        else:
            preview["url"] = None
    return {
        "id": row.id,
        "name": row.name,
        "owner": row.owner,
        "status": row.status,
        "provider": row.provider,
        "sandbox_id": row.sandbox_id,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "exit_code": row.exit_code,
        "error": row.error,
        "spec": row.spec,
        "spec_complete": spec_complete,
        "last_seq": row.last_seq,
        "preview": preview,
        "artifacts": row.artifacts,
    }
