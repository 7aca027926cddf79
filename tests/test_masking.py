"""Secret masking over split lines: the result is the unsplit text, masked."""

from __future__ import annotations

import random

from jupyter_agentbuild.masking import MASK, SecretMasker, mask_targets
from jupyter_agentbuild.sandbox.lines import LineSplitter

SECRETS = ["S3CRET-alpha-42", "TOKEN99", "Q"]


def masked_lines(text: str, max_line_bytes: int, feed: int, masker: SecretMasker) -> list[str]:
    """Split ``text`` as a sandbox does, mask each batch, and glue the pieces again."""
    splitter = LineSplitter(max_line_bytes)
    data = text.encode()
    batches = []
    for i in range(0, len(data), feed):
        batches.extend(splitter.feed(data[i : i + feed]))
    batches.extend(splitter.finish())
    lines: list[str] = []
    open_piece = False
    for batch, continued in batches:
        out, still = masker.lines(("stdout", 0), batch, continued)
        for j, piece in enumerate(out):
            if open_piece:
                lines[-1] += piece
            else:
                lines.append(piece)
            open_piece = still if j == len(out) - 1 else False
    assert masker.drain() == []
    return lines


def test_masking_is_the_same_whatever_the_piece_boundaries() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(1, 40)):
            parts.append(rng.choice(["x" * rng.randint(0, 30), " ", "\n", *SECRETS]))
        text = "".join(parts)
        masker = SecretMasker(SECRETS)
        got = masked_lines(text, rng.randint(4, 24), rng.randint(1, 50), masker)
        expected = text
        for secret in sorted(SECRETS, key=len, reverse=True):
            expected = expected.replace(secret, MASK)
        want = expected.split("\n")
        if want and want[-1] == "":
            want.pop()
        assert got == want, text


def test_each_line_of_a_multi_line_secret_is_a_target() -> None:
    pem = "-----BEGIN KEY-----\r\nAAAABBBBCCCC\nDD==\n==\n-----END KEY-----\n"
    assert mask_targets([pem, "", "one"]) == [
        "-----BEGIN KEY-----",
        "-----END KEY-----",
        "AAAABBBBCCCC",
        "DD==",
        "one",
    ]
    masker = SecretMasker([pem])
    assert masker.mask("key=AAAABBBBCCCC tail DD==") == "key=*** tail ***"
    assert masker.mask_value({"error": ["DD==", 3]}) == {"error": ["***", 3]}
