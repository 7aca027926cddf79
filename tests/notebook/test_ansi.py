"""ANSI escapes become escaped HTML; build output can never inject markup."""

from __future__ import annotations

import re

from jupyter_agentbuild.ansi import AnsiRenderer, ansi_to_html, color_256, strip_ansi


def render(line: str) -> str:
    return AnsiRenderer().render(line)


def test_plain_text_is_escaped() -> None:
    assert render('<script>alert("x")</script> & co') == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"
    )


def test_basic_colours_and_attributes() -> None:
    out = render("\x1b[1;31merror\x1b[0m ok")
    assert out == '<span style="color:#e75c58;font-weight:bold">error</span> ok'
    assert "background-color:#00a250" in render("\x1b[42mx")
    assert "color:#b22b31" in render("\x1b[91mbright")  # bright red
    assert "text-decoration:underline" in render("\x1b[4mu")
    assert "font-style:italic" in render("\x1b[3mi")


def test_reset_codes() -> None:
    out = render("\x1b[1;32ma\x1b[22mb\x1b[39mc")
    assert out == (
        '<span style="color:#00a250;font-weight:bold">a</span><span style="color:#00a250">b</span>c'
    )


def test_256_and_truecolor_both_syntaxes() -> None:
    assert "color:#ff5f00" in render("\x1b[38;5;202mx")
    assert "color:#ff5f00" in render("\x1b[38:5:202mx")
    assert "background-color:#010203" in render("\x1b[48;2;1;2;3mx")
    assert "color:#0a0b0c" in render("\x1b[38:2::10:11:12mx")
    assert color_256(232) == "#080808"
    assert color_256(1) == "#e75c58"
    assert color_256(300) is None


def test_escapes_in_text_cannot_produce_markup() -> None:
    # Even a colour code followed by markup-looking text stays text.
    out = render('\x1b[31m<img src=x onerror=alert(1)>"')
    assert "<img" not in out
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;" in out


def test_non_colour_sequences_and_controls_are_dropped() -> None:
    out = render("a\x1b]0;title\x07b\x1b]8;;http://evil\x1b\\c\x1b[2Kd\x1b[?25le\x07\x00f\x1b")
    assert out == "abcdef"


def test_carriage_return_keeps_last_redraw_and_backspace_erases() -> None:
    assert render("10%\r50%\r100%") == "100%"
    assert render("done\r") == "done"
    assert render("ab\bc") == "ac"


def test_state_carries_to_the_next_line() -> None:
    r = AnsiRenderer()
    r.render("\x1b[32mgreen starts")
    assert r.render("still green") == '<span style="color:#00a250">still green</span>'
    r.advance("\x1b[0m hidden line resets")
    assert r.render("plain") == "plain"


def test_inverse_swaps_colours() -> None:
    out = render("\x1b[7;31mx")
    assert re.search(r"background-color:#e75c58", out)


def test_helpers() -> None:
    assert ansi_to_html("\x1b[31ma\nb") == (
        '<span style="color:#e75c58">a</span>\n<span style="color:#e75c58">b</span>'
    )
    assert strip_ansi("\x1b[31mred\x1b[0m\x07") == "red"


def test_colours_set_before_a_carriage_return_apply_shown_or_not() -> None:
    """``\\x1b[31mfoo\\rbar``: the terminal shows ``bar`` in red. Rendering the line or
    skipping it (advance) leaves the same colour state for the lines after it."""
    from jupyter_agentbuild.ansi import AnsiRenderer

    shown, skipped = AnsiRenderer(), AnsiRenderer()
    html = shown.render("\x1b[31mfoo\rbar")
    skipped.advance("\x1b[31mfoo\rbar")
    assert "bar" in html and "foo" not in html and "color" in html
    assert shown.style == skipped.style
    assert shown.render("next") == skipped.render("next")
