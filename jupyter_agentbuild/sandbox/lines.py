"""Turn a byte stream into the line batches an :data:`~.base.OutputSink` wants.

This is on the hot path of every build (a million-line build goes through here), so
whole chunks are decoded and split with C-level ``str`` operations; Python only loops
over lines in the rare case where one of them may be longer than ``max_line_bytes``.
"""

from __future__ import annotations

import codecs

#: ``(lines, continued)``: complete lines without their newline; ``continued`` is true
#: when the last line is a piece of a longer line whose rest follows in the next batch.
Batch = tuple[list[str], bool]


def utf8_len(text: str) -> int:
    """The size of ``text`` encoded as UTF-8 (ASCII fast path)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class LineSplitter:
    """Incrementally decode UTF-8 (with replacement) and split it into lines.

    - ``"\\n"`` ends a line; ``"\\r"``, NUL and ANSI escapes are kept as they are.
    - A multi-byte character split across two :meth:`feed` calls decodes correctly.
    - A line longer than ``max_line_bytes`` (UTF-8 bytes) is cut into pieces of at most
      ``max_line_bytes``, never inside a character; every piece but the last is the last
      line of a batch whose ``continued`` flag is true.
    - At most about ``max_line_bytes`` of an unfinished line is held in memory: beyond
      that, its pieces are emitted as soon as they are full.
    - :meth:`finish` flushes a last line that has no trailing newline.
    """

    __slots__ = ("_max", "_quick", "_decoder", "_pending", "_pending_size")

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 4:
            raise ValueError("max_line_bytes must be at least 4 (one UTF-8 character)")
        self._max = max_line_bytes
        # A line of at most this many characters cannot exceed the limit (<= 4 bytes/char).
        self._quick = max_line_bytes // 4
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending: list[str] = []  # the unfinished last line, in parts
        self._pending_size = 0  # its size in UTF-8 bytes

    @property
    def pending_bytes(self) -> int:
        """UTF-8 size of the unfinished line held in memory (never above ``max_line_bytes``)."""
        return self._pending_size

    def feed(self, data: bytes) -> list[Batch]:
        """Add bytes; return the batches of lines they complete (possibly none)."""
        if not data:
            return []
        text = self._decoder.decode(data)
        # Decoded UTF-8 is at most 3 bytes per input byte (U+FFFD for an invalid byte),
        # plus what the decoder kept back from the previous chunk.
        return self._split(text, 3 * len(data) + 12)

    def finish(self) -> list[Batch]:
        """End of stream: flush what is left, including a last line without a newline."""
        text = self._decoder.decode(b"", final=True)
        out = self._split(text, utf8_len(text)) if text else []
        if self._pending:
            last = "".join(self._pending)
            self._pending = []
            self._pending_size = 0
            _emit(out, [last], False)
        self._decoder.reset()
        return out

    def _split(self, text: str, bound: int) -> list[Batch]:
        out: list[Batch] = []
        parts = text.split("\n")
        tail = parts.pop()
        if parts:
            if self._pending:
                self._pending.append(parts[0])
                parts[0] = "".join(self._pending)
                bound += self._pending_size
                self._pending = []
                self._pending_size = 0
            if bound <= self._max:
                out.append((parts, False))  # the common case: no line can be too long
            else:
                self._split_long(parts, out)
        if tail:
            self._pending.append(tail)
            self._pending_size += utf8_len(tail)
            if self._pending_size > self._max:
                self._flush_pieces(out)
        return out

    def _split_long(self, lines: list[str], out: list[Batch]) -> None:
        limit = self._max
        current: list[str] = []
        for line in lines:
            if len(line) <= self._quick:
                current.append(line)
                continue
            raw = line.encode("utf-8", "surrogatepass")
            if len(raw) <= limit:
                current.append(line)
                continue
            pieces = _cut(raw, limit)
            current.append(pieces[0])
            out.append((current, True))
            for piece in pieces[1:-1]:
                out.append(([piece], True))
            current = [pieces[-1]]
        if current:
            out.append((current, False))

    def _flush_pieces(self, out: list[Batch]) -> None:
        """The unfinished line grew past the limit: emit its full pieces, keep the rest."""
        raw = "".join(self._pending).encode("utf-8", "surrogatepass")
        pieces = _cut(raw, self._max)
        for piece in pieces[:-1]:
            _emit(out, [piece], True)
        rest = pieces[-1]
        self._pending = [rest]
        self._pending_size = utf8_len(rest)


def _emit(out: list[Batch], lines: list[str], continued: bool) -> None:
    """Append ``lines`` to the last batch unless it ends with a continued piece."""
    if out and not out[-1][1]:
        out[-1][0].extend(lines)
        out[-1] = (out[-1][0], continued)
    else:
        out.append((lines, continued))


def _cut(raw: bytes, limit: int) -> list[str]:
    """Cut UTF-8 ``raw`` into decoded pieces of at most ``limit`` bytes, between characters."""
    pieces: list[str] = []
    start = 0
    size = len(raw)
    while size - start > limit:
        end = start + limit
        while raw[end] & 0xC0 == 0x80:  # never start a piece with a continuation byte
            end -= 1
        pieces.append(raw[start:end].decode("utf-8", "surrogatepass"))
        start = end
    pieces.append(raw[start:].decode("utf-8", "surrogatepass"))
    return pieces
