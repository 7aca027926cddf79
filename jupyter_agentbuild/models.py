"""The contract's Build object, made from a store row (design §3)."""

from __future__ import annotations

from typing import Any

from .entries import iso
from .store.repository import BuildRow


def build_json(row: BuildRow, *, base_url: str = "/", spec_complete: bool = True) -> dict[str, Any]:
    """Every field of the contract, ``null`` until it becomes true. ``spec_complete`` is
    false where ``spec`` is the list's summary (:func:`..spec.spec_summary`)."""
    preview = row.preview
    if preview is not None:
        preview = dict(preview)
        preview.setdefault("url", f"{base_url}agentbuild/preview/{row.id}/")
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
