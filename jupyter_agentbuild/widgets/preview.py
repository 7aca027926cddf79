"""The preview panel: state, an "open in new tab" link, a stop button, a sandboxed iframe and
a one-line hint about what the frame cannot do."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ..client import AgentBuildError, Build, Client, Conflict, ServerInfo
from ..client.records import is_own_origin
from ..vocabulary import PreviewState
from . import html


class PreviewPanel(w.VBox):  # type: ignore[misc]
    """Shows a build's ``preview`` (``{"state", "url", "path_url"}``); empty while there is none."""

    def __init__(self, server: ServerInfo, build_id: str, **kwargs: Any) -> None:
        self.server = server
        self.build_id = build_id
        self.state = ""
        self.bar_html = w.HTML(layout=w.Layout(margin="0"))
        self.stop_button = w.Button(
            description="Stop preview", icon="stop", layout=w.Layout(width="auto")
        )
        self.stop_button.on_click(self._on_stop)
        self.frame_html = w.HTML(layout=w.Layout(margin="0"))
        self.hint_html = w.HTML(layout=w.Layout(margin="0"))
        self.message_html = w.HTML(layout=w.Layout(margin="0"))
        self.src = ""
        self.header_box = w.HBox(
            [self.bar_html, self.stop_button], layout=w.Layout(align_items="center")
        )
        super().__init__([], **kwargs)
        self.add_class("agentbuild-preview")

    @property
    def href(self) -> str:
        """``{base_url}agentbuild/preview/{id}/``: the path proxy, on Jupyter's origin."""
        return self.server.browser_path("preview", self.build_id) + "/"

    def update(self, preview: dict[str, Any] | None, path: str = "/") -> None:
        """Show ``preview`` (a Build's ``preview`` field) opened at ``path``.

        The frame and the link use ``preview.url`` when it is an origin of its own (the app
        at ``/``, its sandbox keeping that origin); otherwise (older servers, no usable
        origin) the base-url-relative path proxy in an opaque-origin sandbox, with a hint.
        """
        preview = preview or {}
        state = str(preview.get("state") or "")
        self.state = state
        children: tuple[Any, ...] = ()
        if not state:
            self.children = children
            return
        own_origin = is_own_origin(preview.get("url"), preview.get("path_url"))
        base = str(preview["url"]).rstrip("/") + "/" if own_origin else self.href
        src = base + path.lstrip("/")
        self.src = src
        self.bar_html.value = html.preview_bar(state, src)
        if state == PreviewState.READY:
            self.frame_html.value = html.preview_iframe(src, own_origin=own_origin)
            self.hint_html.value = html.hint(
                html.STORAGE_HINT if own_origin else html.SHARED_ORIGIN_HINT
            )
            children = (self.header_box, self.frame_html, self.hint_html, self.message_html)
            self.stop_button.disabled = False
        else:
            self.frame_html.value = ""
            self.hint_html.value = ""
            children = (self.bar_html, self.message_html)
        self.children = children

    def _on_stop(self, _button: Any = None) -> None:
        self.stop_button.disabled = True
        try:
            with Client(server=self.server) as client:
                client.preview_stop(self.build_id)
                build = client.get(self.build_id)
        except Conflict:
            build = Build({})
        except AgentBuildError as exc:
            self.message_html.value = html.message(f"could not stop the preview: {exc}")
            self.stop_button.disabled = False
            return
        preview = build.get("preview") or {"state": PreviewState.STOPPED}
        self.update(preview)

    def close(self) -> None:
        for child in (
            self.bar_html,
            self.stop_button,
            self.frame_html,
            self.hint_html,
            self.message_html,
            self.header_box,
        ):
            child.close()
        super().close()
