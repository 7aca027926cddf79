"""HTTP details of serving artifacts: types, ranges, validators, names, CSP.

Pure functions, no I/O: the handlers apply them.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from urllib.parse import quote

#: Every artifact file response: the page, if it is one, runs in a unique opaque origin
#: with nothing allowed (no script, no form, no plugin), so it can never act as the
#: Jupyter origin; together with ``X-Content-Type-Options: nosniff``.
DOWNLOAD_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: The static preview: a built site may run its scripts and load its own assets, but
#: still in an opaque origin (no ``allow-same-origin``): no Jupyter cookie, no API call.
PREVIEW_CSP = (
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads; "
    "frame-ancestors 'self'"
)

_EXTRA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".log": "text/plain",
    ".ts": "text/plain",
    ".tsx": "text/plain",
    ".py": "text/plain",
    ".yaml": "text/plain",
    ".yml": "text/plain",
    ".toml": "text/plain",
    ".xml": "application/xml",
    ".webmanifest": "application/manifest+json",
}
_TEXTUAL = re.compile(r"^(text/|application/(json|xml|javascript|manifest\+json)|image/svg\+xml)")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def content_type(path: str) -> str:
    """A ``Content-Type`` for the artifact at ``path`` (with charset for text)."""
    name = path.rsplit("/", 1)[-1].lower()
    suffix = name[name.rfind(".") :] if "." in name else ""
    kind = _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(name, strict=False)[0]
    if kind is None:
        return "application/octet-stream"
    if _TEXTUAL.match(kind):
        return f"{kind}; charset=utf-8"
    return kind


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def header(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class Unsatisfiable(Exception):
    """The Range header asks for nothing inside the file (416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range a ``Range`` header asks for; None means "send everything" (no
    header, a syntax we ignore, or several ranges, which RFC 9110 lets us answer
    with the whole file). Raises :class:`Unsatisfiable`."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - count), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored, the whole file is sent
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(end, size - 1))


def etag(sha256: str | None) -> str:
    return f'"{sha256}"' if sha256 else '""'


def etag_matches(header: str | None, tag: str) -> bool:
    """Does an ``If-None-Match`` / ``If-Range`` header name ``tag`` (or ``*``)?"""
    if not header:
        return False
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or tag in candidates or f"W/{tag}" in candidates


def slug(name: str | None, fallback: str = "build") -> str:
    """An ASCII file-name piece made from a build name."""
    text = _SLUG.sub("-", name or "").strip("-._")[:60]
    return text or fallback


def attachment(filename: str) -> str:
    """``Content-Disposition`` for a download named ``filename``."""
    # the plain name for old clients: printable ASCII only (a newline or a control character
    # in a header is refused by the server), no quote or backslash (it is a quoted-string)
    ascii_name = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, errors='replace')}"
