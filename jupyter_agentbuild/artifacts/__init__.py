"""Artifacts: collect build outputs out of the sandbox, keep them, serve them as streams.

``select`` (which paths), ``collect`` (the runner hook), ``blobs`` (where the bytes live),
``archive`` (zip and tar.gz streams), ``http`` (serving details), ``service`` (what the
API asks, owner-scoped, and retention). SQL lives in ``store/artifacts.py``.
"""
