"""ANSI (SGR) escapes to escaped HTML.

Build output is untrusted: every character of text goes through ``html.escape``; only
spans with inline ``style`` attributes that this module writes itself are emitted. Escape
sequences other than colours and text attributes (cursor moves, OSC titles and links, ...)
are dropped, as are other control characters. A carriage return keeps what a terminal
would show last (progress bars). Colour state carries from one line to the next, as in a
terminal; keep one :class:`AnsiRenderer` per stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from html import escape
from typing import Any

# JupyterLab's own ANSI palette (normal, then bright).
PALETTE = (
    "#3e424d", "#e75c58", "#00a250", "#ddb62b", "#208ffb", "#d160c4", "#60c6c8", "#c5c1b4",
    "#282c36", "#b22b31", "#007427", "#b27d12", "#0065ca", "#a03196", "#258f8f", "#a1a6b2",
)  # fmt: skip
_CUBE = (0, 95, 135, 175, 215, 255)

# CSI ... final byte | OSC ... (BEL | ST) | any other two-byte escape | lone ESC.
_ESCAPE = re.compile(
    r"\x1b\[([0-?]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x1b"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def color_256(n: int) -> str | None:
    if 0 <= n < 16:
        return PALETTE[n]
    if 16 <= n < 232:
        n -= 16
        r, g, b = _CUBE[n // 36], _CUBE[(n // 6) % 6], _CUBE[n % 6]
        return f"#{r:02x}{g:02x}{b:02x}"
    if 232 <= n < 256:
        level = 8 + 10 * (n - 232)
        return f"#{level:02x}{level:02x}{level:02x}"
    return None


@dataclass(frozen=True)
class Style:
    fg: str | None = None
    bg: str | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    inverse: bool = False
    strike: bool = False

    def css(self) -> str:
        fg, bg = (self.bg, self.fg) if self.inverse else (self.fg, self.bg)
        if self.inverse:
            fg = fg or "var(--jp-layout-color0, #fff)"
            bg = bg or "var(--jp-content-font-color0, #000)"
        parts = []
        if fg:
            parts.append(f"color:{fg}")
        if bg:
            parts.append(f"background-color:{bg}")
        if self.bold:
            parts.append("font-weight:bold")
        if self.dim:
            parts.append("opacity:0.7")
        if self.italic:
            parts.append("font-style:italic")
        decorations = [
            n for n, on in (("underline", self.underline), ("line-through", self.strike)) if on
        ]
        if decorations:
            parts.append("text-decoration:" + " ".join(decorations))
        return ";".join(parts)


PLAIN = Style()


def _extended(params: list[list[int]], i: int) -> tuple[str | None, int]:
    """Parse ``38;5;n`` / ``38;2;r;g;b`` (or their colon forms) at ``params[i]``.

    Returns the colour and how many parameters were used.
    """
    head = params[i]
    if len(head) > 1:  # colon form: 38:5:n or 38:2[:cs]:r:g:b
        sub = head[1:]
        if sub[0] == 5 and len(sub) >= 2:
            return color_256(sub[1]), 1
        if sub[0] == 2 and len(sub) >= 4:
            r, g, b = sub[-3:]
            return _rgb(r, g, b), 1
        return None, 1
    rest = [p[0] for p in params[i + 1 : i + 5]]
    if rest[:1] == [5] and len(rest) >= 2:
        return color_256(rest[1]), 3
    if rest[:1] == [2] and len(rest) >= 4:
        return _rgb(*rest[1:4]), 5
    return None, 1


def _rgb(r: int, g: int, b: int) -> str | None:
    if all(0 <= c <= 255 for c in (r, g, b)):
        return f"#{r:02x}{g:02x}{b:02x}"
    return None


#: SGR codes that set or clear attributes: the fields of :class:`Style` each one changes.
SGR_ATTRIBUTES: dict[int, dict[str, Any]] = {
    0: {f.name: getattr(PLAIN, f.name) for f in fields(PLAIN)},
    1: {"bold": True},
    2: {"dim": True},
    3: {"italic": True},
    4: {"underline": True},
    7: {"inverse": True},
    9: {"strike": True},
    22: {"bold": False, "dim": False},
    23: {"italic": False},
    24: {"underline": False},
    27: {"inverse": False},
    29: {"strike": False},
    39: {"fg": None},
    49: {"bg": None},
}


def sgr_color(code: int) -> dict[str, str] | None:
    """The 16-colour codes: 30-37/90-97 foreground, 40-47/100-107 background."""
    for first, field, offset in ((30, "fg", 0), (90, "fg", 8), (40, "bg", 0), (100, "bg", 8)):
        if first <= code <= first + 7:
            return {field: PALETTE[code - first + offset]}
    return None


def apply_sgr(style: Style, raw: str) -> Style:
    """The style after one ``ESC [ raw m`` sequence."""
    params: list[list[int]] = []
    for part in raw.split(";") if raw else ["0"]:
        try:
            params.append([int(x) if x else 0 for x in part.split(":")] if part else [0])
        except ValueError:
            return style
    i = 0
    while i < len(params):
        code = params[i][0]
        used = 1
        change = SGR_ATTRIBUTES.get(code) or sgr_color(code)
        if change is not None:
            style = replace(style, **change)
        elif code in (38, 48):
            color, used = _extended(params, i)
            if color is not None:
                style = replace(style, fg=color) if code == 38 else replace(style, bg=color)
        i += used
    return style


def _visible(text: str) -> str:
    """What a terminal leaves on the line: the part after the last carriage return."""
    if "\r" in text:
        parts = [p for p in text.split("\r") if p]
        text = parts[-1] if parts else ""
    if "\b" in text:
        out: list[str] = []
        for ch in text:
            if ch == "\b":
                if out:
                    out.pop()
            else:
                out.append(ch)
        text = "".join(out)
    return text


class AnsiRenderer:
    """Render lines one by one, carrying the colour state between them."""

    def __init__(self) -> None:
        self.style = PLAIN

    def render(self, line: str) -> str:
        """One line of output as escaped HTML (no newline)."""
        if "\x1b" not in line:
            text = _CONTROL.sub("", _visible(line)) if _CONTROL.search(line) else line
            return self._span(text, self.style)
        chunks: list[str] = []
        # Process escapes in order, keeping text runs with their style; \r handling applies
        # to the whole line first. Colours set in an overwritten part still apply (as in a
        # terminal, and as in advance()): only their text is gone.
        if "\r" in line:
            self.advance(line[: line.rfind("\r")])
        line = _visible(line)
        pos = 0
        for match in _ESCAPE.finditer(line):
            if match.start() > pos:
                chunks.append(self._span(_CONTROL.sub("", line[pos : match.start()]), self.style))
            if match.group(2) == "m":
                self.style = apply_sgr(self.style, match.group(1))
            pos = match.end()
        if pos < len(line):
            chunks.append(self._span(_CONTROL.sub("", line[pos:]), self.style))
        return "".join(chunks)

    def advance(self, line: str) -> None:
        """Update the colour state for a line that will not be shown."""
        last = line.rfind("\x1b[")
        if last < 0:
            return
        # Fast path: a line that ends its colours with a reset leaves the plain style.
        tail = _ESCAPE.match(line, last)
        if tail is not None and tail.group(2) == "m" and tail.group(1) in ("", "0"):
            self.style = PLAIN
            return
        for match in _ESCAPE.finditer(line):
            if match.group(2) == "m":
                self.style = apply_sgr(self.style, match.group(1))

    @staticmethod
    def _span(text: str, style: Style) -> str:
        if not text:
            return ""
        css = style.css() if style is not PLAIN else ""
        return f'<span style="{css}">{escape(text)}</span>' if css else escape(text)


def ansi_to_html(text: str) -> str:
    """Render a block of text (newlines kept) with a fresh state."""
    renderer = AnsiRenderer()
    return "\n".join(renderer.render(line) for line in text.split("\n"))


def strip_ansi(text: str) -> str:
    return _CONTROL.sub("", _ESCAPE.sub("", text))
