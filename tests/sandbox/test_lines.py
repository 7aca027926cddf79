"""LineSplitter: bytes in, OutputSink batches out."""

from __future__ import annotations

import random

import pytest

from jupyter_agentbuild.sandbox.lines import Batch, LineSplitter


def run(chunks: list[bytes], max_line_bytes: int) -> list[Batch]:
    splitter = LineSplitter(max_line_bytes)
    out: list[Batch] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
        assert splitter.pending_bytes <= max_line_bytes
    out.extend(splitter.finish())
    return out


def check(batches: list[Batch], max_line_bytes: int) -> list[str]:
    """Check the OutputSink invariants; return the whole lines (pieces joined)."""
    whole: list[str] = []
    partial: list[str] = []
    for lines, continued in batches:
        assert lines, "no empty batch"
        for index, line in enumerate(lines):
            assert len(line.encode("utf-8", "surrogatepass")) <= max_line_bytes
            partial.append(line)
            if continued and index == len(lines) - 1:
                assert line, "a continued piece is never empty"
                continue
            whole.append("".join(partial))
            partial.clear()
    assert not partial, "the stream ended on a continued piece"
    return whole


def expected(data: bytes) -> list[str]:
    lines = data.decode("utf-8", "replace").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    out, start, i = [], 0, 0
    while start < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[start : start + size])
        start += size
        i += 1
    return out


SAMPLE = (
    b"plain\n"
    b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 multi-byte\n"
    b"bad \xff\xfe utf8 \xc3( \xe2\x82 end\n"
    b"nul\x00inside\n"
    b"\x1b[31mred\x1b[0m\r progress\r\n"
    b"\n"
    b"\n"
    b"last without newline \xf0\x9f\x98"
)


def test_basic_and_last_line_kept() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"a\nb\nc") == [(["a", "b"], False)]
    assert splitter.feed(b"d") == []
    assert splitter.finish() == [(["cd"], False)]
    assert splitter.finish() == []


def test_trailing_newline_adds_no_empty_line() -> None:
    assert check(run([b"a\n\n"], 100), 100) == ["a", ""]
    assert run([b""], 100) == []


@pytest.mark.parametrize("sizes", [[1], [2], [3], [5, 1, 7], [64 * 1024]])
def test_any_chunking_decodes_the_same(sizes: list[int]) -> None:
    batches = run(chunked(SAMPLE, sizes), 1000)
    assert check(batches, 1000) == expected(SAMPLE)


def test_random_chunking_with_small_limit() -> None:
    rng = random.Random(7)
    data = SAMPLE * 20 + "é€😀x".encode() * 50 + b"\n"
    for _ in range(50):
        sizes = [rng.randint(1, 40) for _ in range(10)]
        batches = run(chunked(data, sizes), 13)
        lines = check(batches, 13)
        assert lines == expected(data)


def test_replacement_nul_cr_and_ansi_are_kept() -> None:
    lines = check(run([b"a\xff\x00b\r\n\x1b[1mX\x1b[0m\n"], 100), 100)
    assert lines == ["a\ufffd\x00b\r", "\x1b[1mX\x1b[0m"]


def test_incomplete_character_at_end_is_replaced() -> None:
    assert check(run([b"ab\xc3"], 100), 100) == ["ab\ufffd"]


def test_multibyte_split_across_feeds() -> None:
    euro = "€".encode()
    splitter = LineSplitter(100)
    assert splitter.feed(b"x" + euro[:1]) == []
    assert splitter.feed(euro[1:2]) == []
    assert splitter.feed(euro[2:] + b"\n") == [(["x€"], False)]


def test_long_line_pieces_and_flags() -> None:
    line = "x" * 35
    batches = run([b"start\n" + line.encode() + b"\nafter\n"], 10)
    assert batches[0] == (["start", "x" * 10], True)
    assert batches[1] == (["x" * 10], True)
    assert batches[2] == (["x" * 10], True)
    assert batches[3] == (["x" * 5, "after"], False)
    assert check(batches, 10) == ["start", line, "after"]


def test_long_multibyte_line_never_cut_inside_a_character() -> None:
    line = "é€😀a" * 100
    for limit in (4, 5, 6, 7, 11):
        batches = run(chunked(line.encode() + b"\n", [3, 17]), limit)
        for lines, _ in batches:
            assert all("\ufffd" not in piece for piece in lines)
        assert check(batches, limit) == [line]


def test_partial_line_memory_is_bounded() -> None:
    limit = 1_048_576
    splitter = LineSplitter(limit)
    pieces: list[str] = []
    flags: list[bool] = []
    chunk = b"y" * 65536
    for _ in range(160):  # 10 MiB without a newline
        for lines, continued in splitter.feed(chunk):
            pieces.extend(lines)
            flags.append(continued)
        assert splitter.pending_bytes <= limit
    for lines, continued in splitter.finish():
        pieces.extend(lines)
        flags.append(continued)
    assert "".join(pieces) == "y" * (160 * 65536)
    assert all(len(p) <= limit for p in pieces)
    assert flags[:-1] == [True] * (len(flags) - 1) and flags[-1] is False


def test_limit_must_hold_one_character() -> None:
    with pytest.raises(ValueError):
        LineSplitter(3)
