"""HTML fragments for the build widget. Every value from the server or the build is escaped.

Links are base-url-relative paths: the browser authenticates with Jupyter's cookie, and
the kernel's token never appears in HTML. The one absolute URL is a preview's own origin,
which carries its own capability (never a Jupyter credential).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from ..client.formatting import format_size
from ..vocabulary import BuildStatus, PreviewState

STATUS_COLORS: dict[str, str] = {
    BuildStatus.QUEUED: "#757575",
    BuildStatus.STARTING: "#1565c0",
    BuildStatus.RUNNING: "#1565c0",
    BuildStatus.SUCCEEDED: "#2e7d32",
    BuildStatus.FAILED: "#c62828",
    BuildStatus.CANCELLED: "#6d4c41",
    BuildStatus.TIMED_OUT: "#ef6c00",
    BuildStatus.INTERRUPTED: "#ef6c00",
}
PRE_STYLE = (
    "margin:0;padding:0 0.5em;white-space:pre-wrap;word-break:break-word;"
    "font-family:var(--jp-code-font-family, monospace);font-size:var(--jp-code-font-size, 13px);"
    "line-height:1.35;background:transparent"
)
# The preview is untrusted. On its own origin (a separate site from Jupyter) it may keep
# its origin: cookies, storage, module scripts, fetch and WebSockets then work as on the
# app's own host, and it still cannot reach Jupyter's cookies or API.
IFRAME_SANDBOX_OWN_ORIGIN = (
    "allow-scripts allow-same-origin allow-forms allow-popups allow-modals allow-downloads"
)
# Served from Jupyter's origin (the path proxy), it must not: its scripts run in an opaque
# origin so that they can never act as the Jupyter origin.
IFRAME_SANDBOX = "allow-scripts allow-forms allow-popups allow-modals allow-downloads"
STORAGE_HINT = (
    "Inside this frame a browser that blocks third-party storage refuses the app's own "
    "cookies and localStorage: open it in a new tab for those."
)
SHARED_ORIGIN_HINT = (
    "This preview is served under Jupyter's origin (no preview origin is configured: see "
    "preview_origin_template); pages that call their own API or open WebSockets may not work."
)
MAX_ARTIFACT_ROWS = 200


def attr(value: Any) -> str:
    return escape(str(value), quote=True)


def badge(status: str, colors: dict[str, str] = STATUS_COLORS) -> str:
    color = colors.get(status, "#757575")
    return (
        f'<span style="background:{color};color:#fff;border-radius:0.8em;padding:0.1em 0.7em;'
        f'font-size:0.85em;font-weight:600;white-space:nowrap">{escape(status or "unknown")}</span>'
    )


def title(name: str | None, build_id: str) -> str:
    label = f"<b>{escape(name)}</b> " if name else ""
    return f'{label}<code style="font-size:0.85em">{escape(build_id)}</code>'


def pre(body_html: str) -> str:
    """A block of log lines (already rendered and escaped)."""
    return f'<pre style="{PRE_STYLE}">{body_html}</pre>'


LINK_STYLE = "color:var(--jp-content-link-color, #1976d2);text-decoration:underline"
PREVIEW_COLORS: dict[str, str] = {
    PreviewState.STARTING: "#1565c0",
    PreviewState.READY: "#2e7d32",
    PreviewState.STOPPED: "#757575",
    PreviewState.FAILED: "#c62828",
}


def link(href: str, text: str, *, download: bool = False) -> str:
    extra = " download" if download else ""
    return (
        f'<a href="{attr(href)}" target="_blank" rel="noopener noreferrer" '
        f'style="{LINK_STYLE}"{extra}>{escape(text)}</a>'
    )


def hidden_lines(count: int, full_log_href: str) -> str:
    if count <= 0:
        return ""
    noun = "line" if count == 1 else "lines"
    return (
        f'<span style="color:var(--jp-ui-font-color2, #757575)">… {count:,} earlier {noun} '
        f"not shown · {link(full_log_href, 'full log')}</span>"
    )


def skipped_note(count: int) -> str:
    return (
        '<span style="color:var(--jp-ui-font-color2, #757575);font-style:italic">'
        f"⋯ {count:,} lines skipped to keep up with the build ⋯</span>"
    )


def message(text: str, *, error: bool = True) -> str:
    color = "#c62828" if error else "var(--jp-ui-font-color1, #333)"
    return f'<span style="color:{color}">{escape(text)}</span>' if text else ""


def artifacts_table(
    artifacts: Sequence[dict[str, Any]],
    total_size: int | None,
    file_href: dict[str, str],
    archive_hrefs: Sequence[tuple[str, str]],
) -> str:
    """``file_href`` maps each artifact path to its download link."""
    if not artifacts:
        return ""
    rows = []
    for item in artifacts[:MAX_ARTIFACT_ROWS]:
        path = str(item.get("path", ""))
        sha = str(item.get("sha256") or "")
        rows.append(
            "<tr>"
            f'<td style="text-align:left">{link(file_href[path], path, download=True)}</td>'
            f'<td style="text-align:right">{escape(format_size(item.get("size")))}</td>'
            f'<td style="text-align:left"><code title="{attr(sha)}">{escape(sha[:12])}</code></td>'
            "</tr>"
        )
    more = len(artifacts) - MAX_ARTIFACT_ROWS
    if more > 0:
        rows.append(f'<tr><td colspan="3">… and {more:,} more</td></tr>')
    archives = " · ".join(link(href, label, download=True) for label, href in archive_hrefs)
    size = f" ({escape(format_size(total_size))})" if total_size is not None else ""
    count = len(artifacts)
    return (
        f"<details open><summary><b>Artifacts</b>: {count:,} file{'s' if count != 1 else ''}"
        f"{size} · {archives}</summary>"
        '<table style="border-collapse:collapse;margin-top:0.3em">'
        "<thead><tr><th>path</th><th>size</th><th>sha256</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )


def preview_bar(state: str, href: str | None) -> str:
    parts = [f"<b>Preview</b> {badge(state, PREVIEW_COLORS)}"]
    if href and state == PreviewState.READY:
        parts.append(link(href, "open in new tab ↗"))
    return " ".join(parts)


def hint(text: str) -> str:
    """One line of small print under the preview."""
    return (
        '<span class="agentbuild-preview-hint" style="color:var(--jp-ui-font-color2, #757575);'
        f'font-size:0.85em">{escape(text)}</span>'
    )


def preview_iframe(src: str, height: str = "480px", *, own_origin: bool = False) -> str:
    """The preview in an iframe; ``allow-same-origin`` only when it has an origin of its own."""
    sandbox = IFRAME_SANDBOX_OWN_ORIGIN if own_origin else IFRAME_SANDBOX
    return (
        f'<iframe src="{attr(src)}" sandbox="{sandbox}" referrerpolicy="no-referrer" '
        f'loading="lazy" style="width:100%;height:{attr(height)};border:1px solid '
        'var(--jp-border-color1, #ccc);border-radius:4px;background:#fff"></iframe>'
    )
