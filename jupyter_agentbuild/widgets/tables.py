"""Text and HTML tables for ``%agentbuild list`` and ``%agentbuild artifacts`` (escaped)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ..client import Build, Record, ServerInfo
from ..client.formatting import format_duration, format_size
from .html import artifacts_table, badge


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


class BuildTable:
    """Builds, newest first: ``id name status created elapsed exit``."""

    header = ("id", "name", "status", "created", "elapsed", "exit")

    def __init__(self, builds: Sequence[Build]) -> None:
        self.builds = list(builds)

    def _rows(self) -> list[tuple[str, ...]]:
        return [
            (
                b.id,
                str(b.get("name") or ""),
                b.status,
                str(b.get("created_at") or "")[:19].replace("T", " "),
                format_duration(b.elapsed()),
                "" if b.get("exit_code") is None else str(b["exit_code"]),
            )
            for b in self.builds
        ]

    def __repr__(self) -> str:
        if not self.builds:
            return "no builds"
        return _text_table(self.header, self._rows())

    def _repr_html_(self) -> str:
        if not self.builds:
            return "<i>no builds</i>"
        head = "".join(f"<th>{h}</th>" for h in self.header)
        body = []
        for row in self._rows():
            cells = [escape(c) if i != 2 else badge(c) for i, c in enumerate(row)]
            cells[0] = f"<code>{cells[0]}</code>"
            body.append(
                "<tr>" + "".join(f'<td style="text-align:left">{c}</td>' for c in cells) + "</tr>"
            )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def artifact_links(
    server: ServerInfo, build_id: str, artifacts: Sequence[Record]
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Download links (base-url-relative, no token): one per artifact path, and the
    ``zip``/``tar.gz`` archives of all of them."""
    api = ("api", "builds", build_id)
    hrefs = {
        str(a["path"]): server.browser_path(*api, "artifacts", str(a["path"])) for a in artifacts
    }
    archives = [(fmt, server.browser_path(*api, f"artifacts.{fmt}")) for fmt in ("zip", "tar.gz")]
    return hrefs, archives


class ArtifactTable:
    """A build's artifacts with download links (base-url-relative, no token)."""

    def __init__(self, build_id: str, artifacts: Sequence[Record], server: ServerInfo) -> None:
        self.build_id = build_id
        self.artifacts = list(artifacts)
        self.server = server

    def __repr__(self) -> str:
        if not self.artifacts:
            return f"build {self.build_id} has no artifacts"
        rows = [
            (str(a.get("path")), format_size(a.get("size")), str(a.get("sha256") or "")[:12])
            for a in self.artifacts
        ]
        return _text_table(("path", "size", "sha256"), rows)

    def _repr_html_(self) -> str:
        total = sum(int(a.get("size") or 0) for a in self.artifacts)
        hrefs, archives = artifact_links(self.server, self.build_id, self.artifacts)
        return artifacts_table(self.artifacts, total, hrefs, archives) or "<i>no artifacts</i>"
