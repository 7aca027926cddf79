"""Live ipywidgets for builds.

``BuildWidget`` and ``PreviewPanel`` are loaded on first use, so the plain-data modules
(``view_state``, ``html``, ``tables``) and ``%load_ext`` do not import ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import BuildWidget
    from .preview import PreviewPanel

__all__ = ["BuildWidget", "PreviewPanel"]


def __getattr__(name: str) -> Any:
    if name == "BuildWidget":
        from .build import BuildWidget

        return BuildWidget
    if name == "PreviewPanel":
        from .preview import PreviewPanel

        return PreviewPanel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
