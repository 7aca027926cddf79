"""Which workspace paths are artifacts: include globs, exclude globs, default excludes.

Patterns are POSIX paths relative to the workspace root:

- ``*`` matches within one path segment (dot-files included), ``?`` one character,
  ``[abc]`` / ``[!abc]`` a character class, and a ``**`` segment any number of segments
  (zero included).
- A pattern that matches a directory matches everything under it (``dist`` is
  ``dist/**``); a trailing ``/`` makes a pattern match directories only.
- Include patterns are anchored at the workspace root. Exclude patterns are too when
  they contain a ``/`` before their end; without one (``node_modules``, ``*.map``) they
  match at any depth, as in ``.gitignore``.
- An exclude wins over an include. The default excludes (``.git/``, ``node_modules/``,
  ``__pycache__/``, ``.cache/``) apply when the spec gives no ``exclude`` list; any list
  (``[]`` too) replaces them. Build outputs (``dist``, ``build``, ``.next``, ``out``) are
  never excluded by default: a default that dropped them would silently lose exactly
  what a build was run to produce.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

DEFAULT_EXCLUDES: tuple[str, ...] = (".git/", "node_modules/", "__pycache__/", ".cache/")


@dataclass(frozen=True)
class _Pattern:
    segments: tuple[str, ...]
    dir_only: bool
    itself: re.Pattern[str]  # matches the path the pattern names
    under: re.Pattern[str]  # matches anything below such a path


def _split(pattern: str) -> tuple[tuple[str, ...], bool]:
    dir_only = pattern.endswith("/")
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    # collapse runs of "**" (they mean the same as one)
    segments: list[str] = []
    for part in parts:
        if part == "**" and segments and segments[-1] == "**":
            continue
        segments.append(part)
    return tuple(segments), dir_only


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = segment[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^/' if negate else ''}{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _compile(pattern: str, *, floating: bool) -> _Pattern:
    segments, dir_only = _split(pattern)
    if floating and segments and segments[0] != "**":
        segments = ("**", *segments)
    if not segments:  # "." or "./": the whole workspace
        everything = re.compile(r"(?s).+")
        return _Pattern(segments=("**",), dir_only=False, itself=everything, under=everything)
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".+" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    body = "".join(parts)
    return _Pattern(
        segments=segments,
        dir_only=dir_only,
        itself=re.compile(f"(?s){body}"),
        under=re.compile(f"(?s){body}/.+"),
    )


@lru_cache(maxsize=4096)
def _segment_matches(pattern: str, name: str) -> bool:
    return re.fullmatch(f"(?s){_segment_regex(pattern)}", name) is not None


def _could_contain(pattern: tuple[str, ...], directory: tuple[str, ...]) -> bool:
    """Can ``pattern`` match ``directory`` itself, something under it, or an ancestor?"""

    @cache
    def walk(i: int, j: int) -> bool:
        if j == len(directory) or i == len(pattern):
            return True
        if pattern[i] == "**":
            return walk(i + 1, j) or walk(i, j + 1)
        return _segment_matches(pattern[i], directory[j]) and walk(i + 1, j + 1)

    return walk(0, 0)


class Selection:
    """Decides, for each path of a workspace walk, whether it is an artifact."""

    def __init__(self, paths: Sequence[str], exclude: Sequence[str] | None = None) -> None:
        self.include = [_compile(p, floating=False) for p in paths]
        excludes = DEFAULT_EXCLUDES if exclude is None else tuple(exclude)
        self.exclude = [_compile(p, floating="/" not in p.rstrip("/")) for p in excludes]

    @staticmethod
    def _hits(pattern: _Pattern, path: str, is_dir: bool) -> bool:
        if pattern.under.fullmatch(path) is not None:
            return True
        return (is_dir or not pattern.dir_only) and pattern.itself.fullmatch(path) is not None

    def excluded(self, path: str, *, is_dir: bool) -> bool:
        return any(self._hits(p, path, is_dir) for p in self.exclude)

    def prune(self, directory: str) -> bool:
        """True when the walk need not enter ``directory`` (excluded, or no include can
        match anything in it)."""
        if self.excluded(directory, is_dir=True):
            return True
        segments = tuple(directory.split("/"))
        return not any(_could_contain(p.segments, segments) for p in self.include)

    def selects(self, path: str) -> bool:
        """Is the file (or link, or special file) at ``path`` an artifact?"""
        if self.excluded(path, is_dir=False):
            return False
        return any(self._hits(p, path, False) for p in self.include)
