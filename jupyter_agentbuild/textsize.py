"""The UTF-8 size of a text, what every byte budget (pages, frames, buffers) counts."""

from __future__ import annotations


def size_of(text: str) -> int:
    """The size of ``text`` in UTF-8 bytes, with an ASCII fast path (entries mostly are)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


__all__ = ["size_of"]
