"""Secret masking of build output, before anything is stored or shown.

Output reaches the build log as lines, and a line longer than ``max_line_bytes`` as
several pieces (``continued``). A secret may straddle two pieces, so masking each
piece alone would let both halves through, and ``logs?format=text`` would glue them
back together. :class:`SecretMasker` therefore holds back the end of a continued piece
while it could be the start of a secret, and masks it together with the next piece:
the text is masked as if it had never been split. A multi-line secret (a PEM key)
never appears whole in one line, so each of its lines is masked on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: What a secret is replaced with (the same mask the stored spec shows).
MASK = "***"
#: Lines of a multi-line secret shorter than this are not masked on their own: a PEM
#: key's last line can be as short as "==", and masking that everywhere would garble
#: unrelated output for no protection.
MIN_PART = 4


def mask_targets(secrets: Sequence[str]) -> list[str]:
    """The strings to replace: each single-line secret, and each line (of at least
    :data:`MIN_PART` characters, surrounding blanks removed) of a multi-line one;
    longest first, so a secret containing another is masked whole."""
    targets: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        lines = secret.splitlines()
        if len(lines) <= 1 and "\n" not in secret and "\r" not in secret:
            targets.add(secret)
            continue
        for line in lines:
            part = line.strip()
            if len(part) >= MIN_PART:
                targets.add(part)
    return sorted(targets, key=lambda s: (-len(s), s))


class SecretMasker:
    """Masks secrets in the line batches of each output stream, across piece boundaries."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._targets = mask_targets(secrets)
        #: Per output stream (``(stream, step)``): the held-back end of a continued piece.
        self._carry: dict[tuple[str, int], str] = {}

    def __bool__(self) -> bool:
        return bool(self._targets)

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by :data:`MASK`."""
        for target in self._targets:
            if target in text:
                text = text.replace(target, MASK)
        return text

    def mask_value(self, value: Any) -> Any:
        """A JSON-like value (an event's data) with every string masked."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.mask_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_value(v) for v in value]
        return value

    def lines(
        self, key: tuple[str, int], lines: list[str], continued: bool
    ) -> tuple[list[str], bool]:
        """Mask one batch of ``key``'s output; returns the lines to emit and whether the
        last of them is still continued. The held-back end of a continued piece (at most
        the longest secret's length) is emitted with the next batch of the same key, so a
        piece can grow by that much."""
        carry = self._carry.pop(key, "")
        if carry:
            lines = [carry + lines[0], *lines[1:]] if lines else [carry]
        out = [self.mask(text) for text in lines]
        if continued and out:
            last = out[-1]
            cut = self._held_from(last)
            if cut < len(last):
                self._carry[key] = last[cut:]
                if cut:
                    out[-1] = last[:cut]
                else:
                    out.pop()
                    # What was before the held-back piece is a complete line.
                    continued = False if out else continued
        return out, continued

    def drain(self) -> list[tuple[tuple[str, int], str]]:
        """Every held-back end (a stream stopped in the middle of a line): ``(key, text)``."""
        held = list(self._carry.items())
        self._carry.clear()
        return held

    def _held_from(self, text: str) -> int:
        """The start of the longest end of ``text`` that is the beginning of a secret
        (``len(text)`` when there is none): what must wait for the next piece."""
        best = len(text)
        for target in self._targets:
            start = max(0, len(text) - len(target) + 1)
            i = text.find(target[0], start)
            while i != -1 and i < best:
                if target.startswith(text[i:]):
                    best = i
                    break
                i = text.find(target[0], i + 1)
        return best


__all__ = ["MASK", "SecretMasker", "mask_targets"]
